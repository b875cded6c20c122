{{/* The gate's labels; `app` differs from the model-service's so no Service, route or policy of the experiment selects it. */}}
{{- define "sms-checker.gateSelectorLabels" -}}
app: {{ include "sms-checker.app" . }}-gate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sms-checker.gateLabels" -}}
{{ include "sms-checker.labels" . }}
app: {{ include "sms-checker.app" . }}-gate
app.kubernetes.io/component: gate
{{- end }}

{{- define "sms-checker.gateImage" -}}
{{- $image := .Values.gate.image -}}
{{- if $image.digest -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ $image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/*
`meshctl gate serve`'s flags from the values: the thresholds under their
meshctl names, and the canary cohort's weight for the sample ratio check.
*/}}
{{- define "sms-checker.gateArgs" -}}
{{- $g := .Values.gate -}}
- gate
- serve
- --listen=0.0.0.0:{{ $g.port }}
- --prometheus={{ $g.prometheusUrl }}
{{- if .Values.versions.v2.enabled }}
- --canary-weight={{ .Values.istio.trafficSplit.canary }}
{{- end }}
- --confidence={{ $g.confidence }}
- --min-requests={{ $g.minRequests }}
- --min-users={{ $g.minUsers }}
- --max-error-increase={{ $g.maxErrorIncrease }}
- --max-spam-shift={{ $g.maxSpamShift }}
- --max-p95-increase-ms={{ $g.maxP95IncreaseMs }}
- --icc={{ $g.icc }}
- --srm-p={{ $g.srmP }}
- --min-interval={{ $g.minInterval }}
- --preflight-window={{ $g.preflightWindow }}
{{- end }}
