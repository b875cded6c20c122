package cluster

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The plan is what a kubelet needs to run each pod: every value already
// resolved (downward API, $(VAR) references, named ports, security contexts),
// so the process runner (meshctl) only creates files and starts commands.

// Plan is the JSON handed to the process runner.
type Plan struct {
	// The pod network, and the node's address on it.
	PodCIDR string    `json:"podCIDR"`
	NodeIP  string    `json:"nodeIP"`
	Pods    []PodPlan `json:"pods"`
	// Istio's warnings about the resources, and the objects of kinds no
	// controller here reads (filled in by the caller).
	Warnings []string `json:"warnings,omitempty"`
	Skipped  []string `json:"skipped,omitempty"`
}

type PodPlan struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	IP          string            `json:"ip"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	// Namespaced sysctls from the pod's security context.
	Sysctls        []Sysctl        `json:"sysctls,omitempty"`
	InitContainers []ContainerPlan `json:"initContainers,omitempty"`
	Containers     []ContainerPlan `json:"containers"`
}

type Sysctl struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type ContainerPlan struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// Command and args after $(VAR) expansion; empty: the image's entrypoint.
	Command []string `json:"command,omitempty"`
	Args    []string `json:"args,omitempty"`
	Env     []EnvVar `json:"env,omitempty"`
	// User and group the process runs as (container over pod security context).
	UID *int64 `json:"uid"`
	GID *int64 `json:"gid"`
	// The readiness probe, when it is an HTTP GET.
	Ready *HTTPProbe `json:"ready"`
	// Volume mounts: directories to create, and files with their contents.
	Dirs  []Mount `json:"dirs,omitempty"`
	Files []File  `json:"files,omitempty"`
	Ports []Port  `json:"ports,omitempty"`
}

type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type HTTPProbe struct {
	Port int32  `json:"port"`
	Path string `json:"path"`
}

type Mount struct {
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly"`
}

type File struct {
	Path    string `json:"path"`
	Content string `json:"content"`
}

type Port struct {
	Name string `json:"name"`
	Port int32  `json:"port"`
}

// PlanFor resolves every pod of the cluster; service account tokens are
// issued at `issued` (the control plane's start: a new plan for the same pods
// is the same plan).
func (c *Cluster) PlanFor(podCIDR string, issued time.Time) (*Plan, error) {
	plan := &Plan{PodCIDR: podCIDR, NodeIP: c.NodeIP.String()}
	for _, pod := range c.Pods {
		p := PodPlan{
			Name:        pod.Name,
			Namespace:   pod.Namespace,
			IP:          pod.Status.PodIP,
			Labels:      pod.Labels,
			Annotations: pod.Annotations,
		}
		if sc := pod.Spec.SecurityContext; sc != nil {
			for _, s := range sc.Sysctls {
				p.Sysctls = append(p.Sysctls, Sysctl{Name: s.Name, Value: s.Value})
			}
		}
		for _, container := range pod.Spec.InitContainers {
			cp, err := c.planContainer(pod, container, issued)
			if err != nil {
				return nil, err
			}
			p.InitContainers = append(p.InitContainers, cp)
		}
		for _, container := range pod.Spec.Containers {
			cp, err := c.planContainer(pod, container, issued)
			if err != nil {
				return nil, err
			}
			p.Containers = append(p.Containers, cp)
		}
		plan.Pods = append(plan.Pods, p)
	}
	return plan, nil
}

func (cl *Cluster) planContainer(pod *corev1.Pod, c corev1.Container, issued time.Time) (ContainerPlan, error) {
	where := fmt.Sprintf("pod %s.%s container %s", pod.Name, pod.Namespace, c.Name)
	out := ContainerPlan{Name: c.Name, Image: c.Image}
	vars := map[string]string{}
	for _, e := range c.Env {
		value, err := envValue(pod, c, e)
		if err != nil {
			return out, fmt.Errorf("%s: env %s: %w", where, e.Name, err)
		}
		// Only a literal value is expanded: what a source resolves to (a
		// label, an annotation) is taken as it is.
		if e.ValueFrom == nil {
			value = expand(value, vars)
		}
		vars[e.Name] = value
		out.Env = append(out.Env, EnvVar{Name: e.Name, Value: value})
	}
	for _, s := range c.Command {
		out.Command = append(out.Command, expand(s, vars))
	}
	for _, s := range c.Args {
		out.Args = append(out.Args, expand(s, vars))
	}
	out.UID, out.GID = identity(pod, c)
	if probe := c.ReadinessProbe; probe != nil && probe.HTTPGet != nil {
		port, err := containerPort(c, probe.HTTPGet.Port)
		if err != nil {
			return out, fmt.Errorf("%s: readiness probe: %w", where, err)
		}
		out.Ready = &HTTPProbe{Port: port, Path: probe.HTTPGet.Path}
	}
	for _, p := range c.Ports {
		out.Ports = append(out.Ports, Port{Name: p.Name, Port: p.ContainerPort})
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			return out, fmt.Errorf("%s: volume mount %s names no volume", where, m.Name)
		}
		out.Dirs = append(out.Dirs, Mount{Path: m.MountPath, ReadOnly: m.ReadOnly})
		files, err := cl.volumeFiles(pod, c, v, issued)
		if err != nil {
			return out, fmt.Errorf("%s: volume %s: %w", where, v.Name, err)
		}
		for _, f := range files {
			out.Files = append(out.Files, File{Path: m.MountPath + "/" + f.Path, Content: f.Content})
		}
	}
	return out, nil
}

// identity is the user and group the kubelet runs the container as.
func identity(pod *corev1.Pod, c corev1.Container) (uid, gid *int64) {
	if sc := pod.Spec.SecurityContext; sc != nil {
		uid, gid = sc.RunAsUser, sc.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	if gid == nil && uid != nil {
		gid = uid
	}
	return uid, gid
}

func containerPort(c corev1.Container, port intstr.IntOrString) (int32, error) {
	if port.Type == intstr.Int {
		return port.IntVal, nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return p.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("no container port named %q", port.StrVal)
}

// envValue resolves one variable the way the kubelet does, for the sources a
// pod spec of this chart or Istio's templates uses.
func envValue(pod *corev1.Pod, c corev1.Container, e corev1.EnvVar) (string, error) {
	if e.ValueFrom == nil {
		return e.Value, nil
	}
	switch {
	case e.ValueFrom.FieldRef != nil:
		return fieldValue(pod, e.ValueFrom.FieldRef.FieldPath)
	case e.ValueFrom.ResourceFieldRef != nil:
		return resourceValue(c, e.ValueFrom.ResourceFieldRef)
	default:
		return "", fmt.Errorf("only fieldRef and resourceFieldRef sources are supported")
	}
}

var labelPath = regexp.MustCompile(`^metadata\.(labels|annotations)\['(.+)'\]$`)

func fieldValue(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return pod.Status.PodIP, nil
	case "status.hostIP", "status.hostIPs":
		return pod.Status.HostIP, nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	}
	if m := labelPath.FindStringSubmatch(path); m != nil {
		if m[1] == "labels" {
			return pod.Labels[m[2]], nil
		}
		return pod.Annotations[m[2]], nil
	}
	return "", fmt.Errorf("unsupported field path %s", path)
}

// resourceValue follows the kubelet: limits fall back to the node's
// capacity (here: unbounded, shown as the request or 0), and the value is
// divided by the divisor and rounded up.
func resourceValue(c corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("bad resource %s", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	quantity, found := list[corev1.ResourceName(name)]
	if !found {
		quantity = c.Resources.Requests[corev1.ResourceName(name)]
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if name == "cpu" {
		value := (quantity.MilliValue() + divisor.MilliValue() - 1) / divisor.MilliValue()
		return strconv.FormatInt(value, 10), nil
	}
	value := (quantity.Value() + divisor.Value() - 1) / divisor.Value()
	return strconv.FormatInt(value, 10), nil
}

// expand replaces $(VAR) with earlier variables, as Kubernetes does for env,
// command and args: unknown references stay as they are, and `$$` is an
// escaped `$`, so `$$(VAR)` stays `$(VAR)` whether VAR exists or not.
func expand(s string, vars map[string]string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			out.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			out.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				// Not a reference: kept as written, the rest still read.
				out.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				out.WriteString(v)
			} else {
				out.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			out.WriteByte('$')
		}
	}
	return out.String()
}

type volumeFile struct {
	Path    string
	Content string
}

// volumeFiles are the files a volume projects: downward API values, the keys
// of a ConfigMap, and a service account token issued at `issued` (what the
// kubelet writes).
func (cl *Cluster) volumeFiles(pod *corev1.Pod, c corev1.Container, v corev1.Volume, issued time.Time) ([]volumeFile, error) {
	var items []corev1.DownwardAPIVolumeFile
	var configMaps []*corev1.ConfigMapProjection
	var tokens []*corev1.ServiceAccountTokenProjection
	if v.DownwardAPI != nil {
		items = v.DownwardAPI.Items
	}
	if v.ConfigMap != nil {
		configMaps = append(configMaps, &corev1.ConfigMapProjection{
			LocalObjectReference: v.ConfigMap.LocalObjectReference,
			Items:                v.ConfigMap.Items,
			Optional:             v.ConfigMap.Optional,
		})
	}
	if v.Projected != nil {
		for _, source := range v.Projected.Sources {
			if source.DownwardAPI != nil {
				items = append(items, source.DownwardAPI.Items...)
			}
			if source.ConfigMap != nil {
				configMaps = append(configMaps, source.ConfigMap)
			}
			if source.ServiceAccountToken != nil {
				tokens = append(tokens, source.ServiceAccountToken)
			}
		}
	}
	var out []volumeFile
	for _, item := range items {
		var value string
		var err error
		switch {
		case item.FieldRef != nil:
			value, err = fieldValue(pod, item.FieldRef.FieldPath)
		case item.ResourceFieldRef != nil:
			value, err = resourceValue(c, item.ResourceFieldRef)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, volumeFile{Path: item.Path, Content: value})
	}
	for _, ref := range configMaps {
		data, found := cl.configMapData(pod.Namespace, ref.Name)
		if !found {
			if ref.Optional != nil && *ref.Optional {
				continue
			}
			return nil, fmt.Errorf("ConfigMap %s.%s does not exist", ref.Name, pod.Namespace)
		}
		if len(ref.Items) == 0 {
			// Every key, in a fixed order: the control plane compares a new
			// plan with the running one to tell workload changes apart.
			for _, key := range slices.Sorted(maps.Keys(data)) {
				out = append(out, volumeFile{Path: key, Content: data[key]})
			}
		}
		for _, item := range ref.Items {
			out = append(out, volumeFile{Path: item.Path, Content: data[item.Key]})
		}
	}
	for _, token := range tokens {
		audiences := []string{token.Audience}
		if token.Audience == "" {
			audiences = nil
		}
		out = append(out, volumeFile{Path: token.Path, Content: Token(pod, audiences, issued)})
	}
	return out, nil
}

func (cl *Cluster) configMapData(namespace, name string) (map[string]string, bool) {
	for _, obj := range cl.Objects {
		if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Namespace == namespace && cm.Name == name {
			return cm.Data, true
		}
	}
	return nil, false
}

// formatMap writes labels or annotations as the downward API does:
// key="value" lines, sorted, with the value quoted.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	lines := make([]string, 0, len(keys))
	for _, k := range keys {
		lines = append(lines, k+"="+strconv.Quote(m[k]))
	}
	return strings.Join(lines, "\n")
}
