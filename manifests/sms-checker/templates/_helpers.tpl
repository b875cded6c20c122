{{/*
Names and labels shared by every template, and the checks no JSON Schema can
express (sums, cross-field rules).
*/}}

{{/* The app name Istio and the seed's commands use. */}}
{{- define "sms-checker.app" -}}
model-service
{{- end }}

{{- define "sms-checker.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "sms-checker.labels" -}}
helm.sh/chart: {{ include "sms-checker.chart" . }}
app.kubernetes.io/name: {{ include "sms-checker.app" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sms-checker
{{- end }}

{{/* Selector labels of all model-service pods (the Service's selector). */}}
{{- define "sms-checker.selectorLabels" -}}
app: {{ include "sms-checker.app" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of one version's pods. Call with (dict "root" $ "version" "v1").
`app` and `version` are the labels Istio uses for subsets and telemetry.
*/}}
{{- define "sms-checker.versionSelectorLabels" -}}
{{ include "sms-checker.selectorLabels" .root }}
version: {{ .version }}
{{- end }}

{{/* Labels of one version's objects. Same arguments as above. */}}
{{- define "sms-checker.versionLabels" -}}
{{ include "sms-checker.labels" .root }}
app: {{ include "sms-checker.app" .root }}
version: {{ .version }}
app.kubernetes.io/component: {{ include "sms-checker.role" .version }}
{{- end }}

{{/* The part a version plays in the experiment. Argument: "v1" | "v2" | "v3". */}}
{{- define "sms-checker.role" -}}
{{- get (dict "v1" "stable" "v2" "canary" "v3" "shadow") . -}}
{{- end }}

{{- define "sms-checker.deploymentName" -}}
model-deployment-{{ . }}
{{- end }}

{{- define "sms-checker.serviceName" -}}
{{ include "sms-checker.app" . }}
{{- end }}

{{- define "sms-checker.image" -}}
{{- $image := .Values.modelService.image -}}
{{- if $image.digest -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ $image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* Versions turned on, in order: a list of "v1" "v2" "v3". */}}
{{- define "sms-checker.enabledVersions" -}}
{{- $out := list -}}
{{- range $version := list "v1" "v2" "v3" -}}
{{- if (index $.Values.versions $version).enabled -}}
{{- $out = append $out $version -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end }}

{{/*
Checks that need more than JSON Schema: rendered by every template that
depends on them, so `helm template` fails with one clear message.
*/}}
{{- define "sms-checker.validate" -}}
{{- $split := .Values.istio.trafficSplit -}}
{{- if ne (add $split.stable $split.canary | int) 100 -}}
{{- fail (printf "istio.trafficSplit.stable (%v) + istio.trafficSplit.canary (%v) must add up to 100, got %v" $split.stable $split.canary (add $split.stable $split.canary)) -}}
{{- end -}}
{{- $e := .Values.experiment -}}
{{- $headers := dict "experiment.cohortHeader" $e.cohortHeader "experiment.responseHeader" $e.responseHeader "experiment.userIdHeader" $e.userIdHeader "experiment.override.header" $e.override.header "experiment.override.tokenHeader" $e.override.tokenHeader "filter.predictionHeader" .Values.filter.predictionHeader -}}
{{- range $field := keys $headers | sortAlpha -}}
{{- if has (index $headers $field) (list "host" "cookie" "set-cookie" "content-length" "content-type" "transfer-encoding" "connection" "te") -}}
{{- fail (printf "%s=%s is not allowed: the proxy owns the framing, host and cookie headers" $field (index $headers $field)) -}}
{{- end -}}
{{- end -}}
{{- /* The model-service sets these response headers: one name each. */ -}}
{{- $prediction := .Values.filter.predictionHeader -}}
{{- if eq $prediction $e.responseHeader -}}
{{- fail (printf "filter.predictionHeader and experiment.responseHeader are both %s: the model-service sets both on its answers (the verdict and the cohort), so each needs its own name" $prediction) -}}
{{- end -}}
{{- $taken := dict "x-model-version" "the model version" "x-request-id" "the request id" -}}
{{- range $field, $name := dict "filter.predictionHeader" $prediction "experiment.responseHeader" $e.responseHeader -}}
{{- if hasKey $taken $name -}}
{{- fail (printf "%s=%s is not allowed: the model-service already answers with %s in that header" $field $name (index $taken $name)) -}}
{{- end -}}
{{- end -}}
{{- if and $e.override.tokenSha256 (eq $e.override.header $e.override.tokenHeader) -}}
{{- fail (printf "experiment.override.header and experiment.override.tokenHeader must differ, both are %s" $e.override.header) -}}
{{- end -}}
{{- if and .Values.istio.gateway.enabled (contains "/" .Values.istio.gateway.name) -}}
{{- fail (printf "istio.gateway.name=%s: a namespace/name reference needs istio.gateway.enabled=false (the chart creates its Gateway in the release namespace)" .Values.istio.gateway.name) -}}
{{- end -}}
{{- $filter := .Values.filter -}}
{{- if and $filter.sha256 (contains "@sha256:" $filter.url) (ne (splitList "@sha256:" $filter.url | last) $filter.sha256) -}}
{{- fail (printf "filter.sha256=%s does not match the digest in filter.url=%s: Istio would refuse the module" $filter.sha256 $filter.url) -}}
{{- end -}}
{{- $ms := .Values.modelService -}}
{{- if ge (int $ms.shutdownDrainSeconds) (int $ms.terminationGracePeriodSeconds) -}}
{{- fail (printf "modelService.shutdownDrainSeconds (%v) must be less than modelService.terminationGracePeriodSeconds (%v), or Kubernetes kills the pod while it drains" $ms.shutdownDrainSeconds $ms.terminationGracePeriodSeconds) -}}
{{- end -}}
{{- if not .Values.versions.v1.enabled -}}
{{- fail "versions.v1.enabled=false is not supported: v1 serves the stable cohort that every route falls back to" -}}
{{- end -}}
{{- $callers := .Values.security.meshCallers -}}
{{- if and (or $callers.namespaces $callers.principals) (not .Values.istio.meshRouting) -}}
{{- fail "security.meshCallers lists in-mesh callers but istio.meshRouting=false: without the mesh routes they would reach every version directly, outside the experiment; turn istio.meshRouting on or empty the lists" -}}
{{- end -}}
{{- include "sms-checker.validateApis" . -}}
{{- end }}

{{/*
Checks of the routing API and data plane choices.
*/}}
{{- define "sms-checker.validateApis" -}}
{{- $istio := .Values.istio -}}
{{- if and (include "sms-checker.ambient" .) (not (include "sms-checker.gatewayApi" .)) -}}
{{- fail "istio.dataplaneMode=ambient needs istio.routingApi=GatewayAPI: the waypoint routes with HTTPRoute (VirtualService is alpha in ambient)" -}}
{{- end -}}
{{- if include "sms-checker.gatewayApi" . -}}
{{- range $version := list "v1" "v2" -}}
{{- $fault := (index $.Values.versions $version).fault -}}
{{- range $kind := list "abort" "delay" -}}
{{- if gt (float64 (index $fault $kind).percentage) 0.0 -}}
{{- fail (printf "versions.%s.fault.%s.percentage=%v needs istio.routingApi=VirtualService: HTTPRoute has no fault injection" $version $kind (index $fault $kind).percentage) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $gateway := include "sms-checker.gatewayRef" . | fromJson -}}
{{- if and (include "sms-checker.ambient" .) (eq $gateway.name $istio.waypoint.name) (eq $gateway.namespace .Release.Namespace) -}}
{{- fail (printf "istio.waypoint.name=%s is the ingress Gateway's name too: give the waypoint its own" $istio.waypoint.name) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* "true" when the routes are HTTPRoutes (istio.routingApi=GatewayAPI), else empty. */}}
{{- define "sms-checker.gatewayApi" -}}
{{- if eq .Values.istio.routingApi "GatewayAPI" }}true{{ end -}}
{{- end }}

{{/* "true" in ambient mode (istio.dataplaneMode=ambient), else empty. */}}
{{- define "sms-checker.ambient" -}}
{{- if eq .Values.istio.dataplaneMode "ambient" }}true{{ end -}}
{{- end }}

{{/* The Service of one version (GatewayAPI routing). Argument: "v1" | "v2" | "v3". */}}
{{- define "sms-checker.versionServiceName" -}}
{{ include "sms-checker.app" . }}-{{ . }}
{{- end }}

{{/*
The Gateway API Gateway the ingress route attaches to, as JSON {"name",
"namespace"}: the chart's own in the release namespace, or the one
istio.gateway.name names (`namespace/name`, or a name in the release's).
*/}}
{{- define "sms-checker.gatewayRef" -}}
{{- $parts := splitList "/" .Values.istio.gateway.name -}}
{{- if eq (len $parts) 2 -}}
{{- toJson (dict "namespace" (index $parts 0) "name" (index $parts 1)) -}}
{{- else -}}
{{- toJson (dict "namespace" .Release.Namespace "name" .Values.istio.gateway.name) -}}
{{- end -}}
{{- end }}

{{/*
Where the ingress gateway's pods run and who they are, as JSON {"namespace",
"serviceAccount", "podLabels"}: Istio's gateway chart pods (`istio:
<selector>`) for VirtualService routing, the pods Istio deploys for the
Gateway API Gateway (named `<gateway>-istio`) otherwise.
*/}}
{{- define "sms-checker.ingress" -}}
{{- if include "sms-checker.gatewayApi" . -}}
{{- $gateway := include "sms-checker.gatewayRef" . | fromJson -}}
{{- toJson (dict "namespace" $gateway.namespace "serviceAccount" (printf "%s-istio" $gateway.name) "podLabels" (dict "gateway.networking.k8s.io/gateway-name" $gateway.name)) -}}
{{- else -}}
{{- toJson (dict "namespace" .Values.istio.gateway.namespace "serviceAccount" .Values.security.gatewayServiceAccount "podLabels" (dict "istio" .Values.istio.gateway.ingressGatewaySelector)) -}}
{{- end -}}
{{- end }}

{{/*
Istio identity of a service account. Call with
(dict "root" $ "namespace" "istio-system" "serviceAccount" "istio-ingressgateway").
*/}}
{{- define "sms-checker.principal" -}}
{{ .root.Values.security.trustDomain }}/ns/{{ .namespace }}/sa/{{ .serviceAccount }}
{{- end }}

{{/* The AuthorizationPolicy source that is Prometheus: its identity, else its namespace. */}}
{{- define "sms-checker.prometheusSource" -}}
{{- $prometheus := .Values.security.prometheus -}}
{{- if $prometheus.serviceAccount -}}
principals:
  - {{ include "sms-checker.principal" (dict "root" . "namespace" $prometheus.namespace "serviceAccount" $prometheus.serviceAccount) | quote }}
{{- else -}}
namespaces:
  - {{ $prometheus.namespace | quote }}
{{- end -}}
{{- end }}

{{/*
Namespaces of the in-mesh callers: those listed, and those of the listed
principals (a NetworkPolicy cannot tell service accounts apart). JSON list.
*/}}
{{- define "sms-checker.meshCallerNamespaces" -}}
{{- $callers := .Values.security.meshCallers -}}
{{- $out := $callers.namespaces -}}
{{- range $callers.principals -}}
{{- $out = append $out (index (splitList "/" .) 2) -}}
{{- end -}}
{{- toJson ($out | uniq) -}}
{{- end }}

{{/*
checkov (Kubernetes checks) annotations for the checks this chart does not
meet on purpose, each with its reason; the README's "Security" section lists
them. Only those that apply to the values given are rendered. Call with
(dict "root" $ "namespace" <the object's namespace> "checks" (list "namespace" "digest" "networkPolicy")); "gateDigest" for the gate's image.
*/}}
{{- define "sms-checker.checkovSkips" -}}
{{- $values := .root.Values -}}
{{- $skips := list -}}
{{- if and (has "namespace" .checks) (eq .namespace "default") -}}
{{- $skips = append $skips "CKV_K8S_21=the release namespace is helm's --namespace; default stays allowed so the original project's commands (helm and kubectl without -n) still work" -}}
{{- end -}}
{{- if and (has "digest" .checks) (not $values.modelService.image.digest) -}}
{{- $skips = append $skips "CKV_K8S_43=image by tag until one is pushed: set modelService.image.digest (make push prints it) to pin it" -}}
{{- end -}}
{{- if and (has "gateDigest" .checks) (not $values.gate.image.digest) -}}
{{- $skips = append $skips "CKV_K8S_43=image by tag until one is pushed: set gate.image.digest (make push prints it) to pin it" -}}
{{- end -}}
{{- if and (has "networkPolicy" .checks) (not $values.security.networkPolicy.enabled) -}}
{{- $skips = append $skips "CKV2_K8S_6=NetworkPolicy is opt-in (security.networkPolicy.enabled): the namespaces of in-mesh callers and Prometheus are the cluster's to name" -}}
{{- end -}}
{{- range $i, $skip := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end -}}
{{- end }}

{{/*
Cohorts and their weights, as the filter and the VirtualService see them.
With v2 off every user is stable. A cohort of weight 0 stays listed: no user
is assigned to it, but a QA override can still reach it (a dark launch).
*/}}
{{- define "sms-checker.cohorts" -}}
{{- $split := .Values.istio.trafficSplit -}}
{{- $cohorts := list -}}
{{- if .Values.versions.v2.enabled -}}
{{- $cohorts = append $cohorts (dict "name" "stable" "weight" (int $split.stable)) -}}
{{- $cohorts = append $cohorts (dict "name" "canary" "weight" (int $split.canary)) -}}
{{- else -}}
{{- $cohorts = append $cohorts (dict "name" "stable" "weight" 100) -}}
{{- end -}}
{{- toJson $cohorts -}}
{{- end }}

{{/*
The stats the filter defines and the labels Istio must extract from their
names: see filter/README.md. Shared by the pod annotation and NOTES.txt.
*/}}
{{- define "sms-checker.proxyConfig" -}}
extraStatTags:
  - cohort
  - response_class
  - user
  - outcome
  - version
  - prediction
  - mirrored
proxyStatsMatcher:
  inclusionRegexps:
    - ".*sms_cohort_.*"
    - ".*sms_model_.*"
{{- end }}

{{/* Where the Wasm module comes from and how it fails: WasmPlugin's spec, TrafficExtension's spec.wasm. */}}
{{- define "sms-checker.wasmSource" -}}
url: {{ .Values.filter.url | quote }}
{{- with .Values.filter.sha256 }}
sha256: {{ . | quote }}
{{- end }}
imagePullPolicy: {{ .Values.filter.imagePullPolicy }}
{{- with .Values.filter.imagePullSecret }}
imagePullSecret: {{ . | quote }}
{{- end }}
failStrategy: {{ .Values.filter.failStrategy }}
type: HTTP
{{- end }}

{{/*
One instance of the cohort filter, as the API filter.api names: a
WasmPlugin, or a TrafficExtension. Call with (dict "root" $ "name" NAME
"namespace" NS "labels" LABELS "attach" SELECTOR-OR-TARGETREFS "server" BOOL
"config" PLUGIN-CONFIG); `attach` is YAML (`selector:` or `targetRefs:`),
`server` limits it to inbound traffic (a sidecar's).
*/}}
{{- define "sms-checker.filterResource" -}}
{{- $filter := .root.Values.filter -}}
apiVersion: extensions.istio.io/v1alpha1
kind: {{ $filter.api }}
metadata:
  name: {{ .name }}
  namespace: {{ .namespace }}
  labels:
    {{- .labels | nindent 4 }}
spec:
  {{- .attach | nindent 2 }}
  {{- if .server }}
  match:
    - mode: SERVER
  {{- end }}
  phase: {{ $filter.phase }}
  priority: {{ $filter.priority }}
  {{- if eq $filter.api "TrafficExtension" }}
  wasm:
    {{- include "sms-checker.wasmSource" .root | nindent 4 }}
    pluginConfig:
      {{- toYaml .config | nindent 6 }}
  {{- else }}
  {{- include "sms-checker.wasmSource" .root | nindent 2 }}
  pluginConfig:
    {{- toYaml .config | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
Istio HTTPFaultInjection for one version, or nothing when both are off.
Argument: the version's values.
*/}}
{{- define "sms-checker.fault" -}}
{{- $fault := .fault -}}
{{- if or (gt (float64 $fault.abort.percentage) 0.0) (gt (float64 $fault.delay.percentage) 0.0) -}}
fault:
  {{- if gt (float64 $fault.delay.percentage) 0.0 }}
  delay:
    percentage:
      value: {{ float64 $fault.delay.percentage }}
    fixedDelay: {{ $fault.delay.fixedDelay }}
  {{- end }}
  {{- if gt (float64 $fault.abort.percentage) 0.0 }}
  abort:
    percentage:
      value: {{ float64 $fault.abort.percentage }}
    httpStatus: {{ $fault.abort.httpStatus }}
  {{- end }}
{{- end -}}
{{- end }}

{{/* The mirror to v3 on every live VirtualService route, or nothing when v3 is off. */}}
{{- define "sms-checker.mirror" -}}
{{- if .Values.versions.v3.enabled -}}
mirror:
  host: {{ include "sms-checker.serviceName" . }}
  subset: v3
  port:
    number: {{ .Values.modelService.port }}
mirrorPercentage:
  value: {{ float64 .Values.istio.mirror.percentage }}
{{- end -}}
{{- end }}

{{/*
The mirror to v3 on every live HTTPRoute rule (a RequestMirror filter), or
nothing when v3 is off. A whole percentage is `percent`; a fraction keeps
four decimals, as VirtualService's mirrorPercentage does.
*/}}
{{- define "sms-checker.requestMirror" -}}
{{- if .Values.versions.v3.enabled -}}
{{- $percentage := float64 .Values.istio.mirror.percentage -}}
- type: RequestMirror
  requestMirror:
    backendRef:
      name: {{ include "sms-checker.versionServiceName" "v3" }}
      port: {{ .Values.modelService.port }}
    {{- if eq $percentage (floor $percentage) }}
    percent: {{ int $percentage }}
    {{- else }}
    fraction:
      numerator: {{ round (mulf $percentage 10000) 0 | int }}
      denominator: 1000000
    {{- end }}
{{- end -}}
{{- end }}

{{/*
The HTTPRoute rules of the experiment, the VirtualService's in the Gateway
API: the cohort header set by the gateway filter picks the version's
Service; without it, the weights split requests; every live rule mirrors to
v3. Gateway API matching ranks rules with header matches first, whatever
their order. The path match is written out, as the API server's default
for it would store it.
*/}}
{{- define "sms-checker.httpRouteRules" -}}
{{- $v := .Values.versions -}}
{{- $port := .Values.modelService.port -}}
{{- $header := .Values.experiment.cohortHeader -}}
{{- $split := .Values.istio.trafficSplit -}}
{{- $mirror := include "sms-checker.requestMirror" . -}}
{{- $canary := and $v.v2.enabled (gt (int $split.canary) 0) -}}
{{- $stable := or (not $v.v2.enabled) (gt (int $split.stable) 0) -}}
{{- $cohorts := list (list "stable" "v1") -}}
{{- if $v.v2.enabled -}}
{{- $cohorts = prepend $cohorts (list "canary" "v2") -}}
{{- end -}}
{{- range $cohort := $cohorts }}
- name: cohort-{{ index $cohort 0 }}
  matches:
    - path:
        type: PathPrefix
        value: /
      headers:
        - type: Exact
          name: {{ $header }}
          value: {{ index $cohort 0 }}
  backendRefs:
    - name: {{ include "sms-checker.versionServiceName" (index $cohort 1) }}
      port: {{ $port }}
  {{- with $mirror }}
  filters:
    {{- . | nindent 4 }}
  {{- end }}
{{- end }}
- name: split
  matches:
    - path:
        type: PathPrefix
        value: /
  backendRefs:
    {{- if $stable }}
    - name: {{ include "sms-checker.versionServiceName" "v1" }}
      port: {{ $port }}
      weight: {{ ternary 100 (int $split.stable) (not $v.v2.enabled) }}
    {{- end }}
    {{- if $canary }}
    - name: {{ include "sms-checker.versionServiceName" "v2" }}
      port: {{ $port }}
      weight: {{ $split.canary }}
    {{- end }}
  {{- with $mirror }}
  filters:
    {{- . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The proxy config annotation for the proxies the chart's Gateways make Istio deploy. */}}
{{- define "sms-checker.gatewayInfrastructure" -}}
{{- if .Values.monitoring.proxyConfigAnnotation }}
infrastructure:
  annotations:
    proxy.istio.io/config: {{ include "sms-checker.proxyConfig" . | quote }}
{{- end }}
{{- end }}
