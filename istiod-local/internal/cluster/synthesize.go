package cluster

import (
	"fmt"
	"net/netip"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"istio.io/istio/pkg/kube/inject"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/install"
)

// NodeName is the one node every synthesized pod runs on.
const NodeName = "local"

// Cluster is the state a Kubernetes API server would hold once the manifests
// are applied and the controllers have run: the objects Istio's service
// registry reads, and the pods the local mesh runs.
type Cluster struct {
	// Objects for Istio's Kubernetes registry: namespaces, services, pods,
	// EndpointSlices (and everything else the manifests hold).
	Objects []runtime.Object
	// Pods in start order, injected by Istio's sidecar injector.
	Pods []*corev1.Pod
	// The node's address on the pod network (the pods' gateway).
	NodeIP netip.Addr
}

// serviceCIDR is where ClusterIPs come from, as the API server allocates them.
// Nothing routes to them locally: proxies reach pods through EDS.
var serviceCIDR = netip.MustParsePrefix("10.96.0.0/16")

// Synthesize does the work of the Deployment, ReplicaSet, EndpointSlice and
// service IP controllers, the kubelet's status updates, Istio's sidecar
// injection webhook and istiod's namespace controller (which publishes the
// mesh's root certificate, `rootPEM`, in every namespace). Pods get addresses
// from `podCIDR` (the first host address is the node's), in the order of
// their Deployments' namespace and name.
func Synthesize(objects []runtime.Object, istio *install.Install, podCIDR netip.Prefix, rootPEM string) (*Cluster, error) {
	c := &Cluster{NodeIP: podCIDR.Masked().Addr().Next()}
	nextPodIP := c.NodeIP.Next()
	nextServiceIP := serviceCIDR.Addr().Next()
	namespaces := map[string]bool{istio.Namespace: true}
	given := map[string]bool{} // the manifests' own Namespace objects

	var deployments []*appsv1.Deployment
	var services []*corev1.Service
	for _, obj := range objects {
		switch o := obj.(type) {
		case *appsv1.Deployment:
			deployments = append(deployments, o)
		case *corev1.Service:
			svc := o.DeepCopy()
			if svc.Spec.ClusterIP == "" && svc.Spec.Type != corev1.ServiceTypeExternalName {
				svc.Spec.ClusterIP = nextServiceIP.String()
				svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
				nextServiceIP = nextServiceIP.Next()
			}
			services = append(services, svc)
			namespaces[svc.Namespace] = true
			c.Objects = append(c.Objects, svc)
		case *corev1.Namespace:
			// Kept as given, Istio's labels too: not created again below.
			namespaces[o.Name] = true
			given[o.Name] = true
			c.Objects = append(c.Objects, o)
			continue
		default:
			c.Objects = append(c.Objects, obj)
		}
	}
	sort.Slice(deployments, func(i, j int) bool {
		a, b := deployments[i], deployments[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	for _, d := range deployments {
		namespaces[d.Namespace] = true
		injected, err := injectDeployment(d, istio)
		if err != nil {
			return nil, fmt.Errorf("Deployment/%s.%s: sidecar injection: %w", d.Name, d.Namespace, err)
		}
		c.Objects = append(c.Objects, injected)
		replicas := int32(1)
		if d.Spec.Replicas != nil {
			replicas = *d.Spec.Replicas
		}
		for i := range replicas {
			if !podCIDR.Contains(nextPodIP) {
				return nil, fmt.Errorf("pod network %s is full", podCIDR)
			}
			pod := podFor(injected, int(i), nextPodIP, c.NodeIP)
			nextPodIP = nextPodIP.Next()
			c.Pods = append(c.Pods, pod)
			c.Objects = append(c.Objects, pod)
		}
	}
	names := make([]string, 0, len(namespaces))
	for name := range namespaces {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !given[name] {
			c.Objects = append(c.Objects, &corev1.Namespace{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
				ObjectMeta: metav1.ObjectMeta{Name: name},
			})
		}
		c.Objects = append(c.Objects, &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: "istio-ca-root-cert", Namespace: name},
			Data:       map[string]string{"root-cert.pem": rootPEM},
		})
	}
	c.Objects = append(c.Objects, &corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: NodeName},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: c.NodeIP.String()}},
		},
	})
	for _, svc := range services {
		if slice := endpointSlice(svc, c.Pods); slice != nil {
			c.Objects = append(c.Objects, slice)
		}
	}
	return c, nil
}

// injectDeployment runs Istio's injector on the pod template the way the
// webhook would on each pod: only where the pod asks for it
// (`sidecar.istio.io/inject: "true"`, the webhook's object selector; no
// namespace here carries `istio-injection=enabled`).
func injectDeployment(d *appsv1.Deployment, istio *install.Install) (*appsv1.Deployment, error) {
	if d.Spec.Template.Labels["sidecar.istio.io/inject"] != "true" {
		return d, nil
	}
	// The injector's warnings (a pod skipped for host networking or disabled
	// injection) are not reported; it calls the handler always, so not nil.
	out, err := inject.IntoObject(nil, istio.Injector.Templates, istio.Values, "", istio.Mesh, d, func(string) {})
	if err != nil {
		return nil, err
	}
	injected, ok := out.(*appsv1.Deployment)
	if !ok {
		return nil, fmt.Errorf("injector returned %T", out)
	}
	return injected, nil
}

// podFor is replica `i` of a Deployment as the ReplicaSet controller creates
// it and the kubelet reports it: scheduled, running, ready, with an address.
func podFor(d *appsv1.Deployment, i int, ip, hostIP netip.Addr) *corev1.Pod {
	template := d.Spec.Template.DeepCopy()
	name := fmt.Sprintf("%s-%d", d.Name, i)
	controller := true
	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   d.Namespace,
			UID:         types.UID(fmt.Sprintf("%s-%s", d.Namespace, name)),
			Labels:      template.Labels,
			Annotations: template.Annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1",
				Kind:       "ReplicaSet",
				Name:       d.Name + "-local",
				Controller: &controller,
			}},
		},
		Spec: template.Spec,
	}
	pod.Spec.NodeName = NodeName
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = "default"
	}
	ready := []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue},
	}
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: ready,
		PodIP:      ip.String(),
		PodIPs:     []corev1.PodIP{{IP: ip.String()}},
		HostIP:     hostIP.String(),
		HostIPs:    []corev1.HostIP{{IP: hostIP.String()}},
	}
	return pod
}

// endpointSlice is what the EndpointSlice controller writes for a Service
// with a selector: its ready pods, with each target port resolved against
// the pod's container ports.
func endpointSlice(svc *corev1.Service, pods []*corev1.Pod) *discoveryv1.EndpointSlice {
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	selector := labels.SelectorFromSet(svc.Spec.Selector)
	var selected []*corev1.Pod
	for _, pod := range pods {
		if pod.Namespace == svc.Namespace && selector.Matches(labels.Set(pod.Labels)) {
			selected = append(selected, pod)
		}
	}
	slice := &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      svc.Name + "-local",
			Namespace: svc.Namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc.Name,
				discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, sp := range svc.Spec.Ports {
		port := resolveTargetPort(sp, selected)
		if port == 0 {
			continue
		}
		name, protocol := sp.Name, sp.Protocol
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{
			Name: &name, Port: &port, Protocol: &protocol, AppProtocol: sp.AppProtocol,
		})
	}
	yes := true
	for _, pod := range selected {
		node := pod.Spec.NodeName
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{pod.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes},
			NodeName:   &node,
			TargetRef: &corev1.ObjectReference{
				Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
			},
		})
	}
	return slice
}

// resolveTargetPort turns a named target port into the container port of
// that name (the first selected pod that has it), as the controller does.
func resolveTargetPort(sp corev1.ServicePort, pods []*corev1.Pod) int32 {
	switch sp.TargetPort.Type {
	case intstr.Int:
		if sp.TargetPort.IntVal != 0 {
			return sp.TargetPort.IntVal
		}
		return sp.Port
	default:
		for _, pod := range pods {
			for _, c := range pod.Spec.Containers {
				for _, p := range c.Ports {
					if p.Name == sp.TargetPort.StrVal {
						return p.ContainerPort
					}
				}
			}
		}
		return 0
	}
}
