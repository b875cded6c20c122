{{/*
The experiment's alerting rules, as the `groups` of a Prometheus rule file:
the one source of the PrometheusRule (prometheusrule.yaml), the ConfigMap
holding a plain rule file (configmap-alert-rules.yaml), and the rules the
local mesh's Prometheus loads. Thresholds are `alerts.*` values; the
README's "Alerts" section explains each rule.
*/}}

{{/* A selector with the extra matchers of alerts.selector. Argument: (list $ "matchers"). */}}
{{- define "sms-checker.alertSelector" -}}
{{- $root := index . 0 -}}
{{- $matchers := index . 1 -}}
{{- with $root.Values.alerts.selector -}}
{{- $matchers = printf "%s,%s" $matchers . -}}
{{- end -}}
{{- printf "{%s}" $matchers -}}
{{- end }}

{{/* Fails on alert values no schema can check. */}}
{{- define "sms-checker.validateAlerts" -}}
{{- if and .Values.alerts.enabled (not .Values.filter.enabled) -}}
{{- fail "alerts.enabled=true needs filter.enabled=true: every rule reads the cohort filter's metrics" -}}
{{- end -}}
{{- range $key := list "severity" "release" "experiment" -}}
{{- if hasKey $.Values.alerts.labels $key -}}
{{- fail (printf "alerts.labels.%s is set by the chart: %s" $key (ternary "each alert has its own (alerts.<alert>.severity)" "it names this release's experiment" (eq $key "severity"))) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "sms-checker.alertGroups" -}}
{{- $a := .Values.alerts -}}
{{- $w := $a.window -}}
{{- $canary := include "sms-checker.role" "v2" -}}
{{- $stable := include "sms-checker.role" "v1" -}}
{{- $share := divf (float64 .Values.istio.trafficSplit.canary) 100.0 -}}
{{- $sel := list . -}}
{{- $users := include "sms-checker.alertSelector" (append $sel (printf "user=\"new\",cohort=~\"%s|%s\"" $stable $canary)) -}}
{{- $canaryUsers := include "sms-checker.alertSelector" (append $sel (printf "user=\"new\",cohort=\"%s\"" $canary)) -}}
{{- $weight := printf "sms_checker:canary_weight:ratio{release=\"%s\",namespace=\"%s\"}" .Release.Name .Release.Namespace -}}
{{- $live := include "sms-checker.alertSelector" (append $sel "mirrored=\"false\"") -}}
{{- $mirrored := include "sms-checker.alertSelector" (append $sel "mirrored=\"true\"") -}}
{{- $runbook := $a.runbookUrl -}}
- name: sms-checker-experiment
  rules:
    # The canary cohort's configured share of new users, recorded so the
    # sample ratio alert can leave out a window in which it changed (a
    # rollout's step), as meshctl rollout leaves out that interval.
    - record: sms_checker:canary_weight:ratio
      expr: vector({{ $share }})
      labels:
        release: {{ .Release.Name | quote }}
        namespace: {{ .Release.Namespace | quote }}
{{- with $a.sampleRatioMismatch }}
{{- if and .enabled $.Values.versions.v2.enabled (gt $share 0.0) (lt $share 1.0) }}
    - alert: SmsCheckerSampleRatioMismatch
      expr: |-
        (
          ((sum(increase(sms_cohort_users_total{{ $canaryUsers }}[{{ $w }}])) or vector(0))
            - {{ $share }} * sum(increase(sms_cohort_users_total{{ $users }}[{{ $w }}]))) ^ 2
          / ({{ mulf $share (subf 1.0 $share) }} * sum(increase(sms_cohort_users_total{{ $users }}[{{ $w }}])))
        ) > {{ .chiSquare }}
        and on() sum(increase(sms_cohort_users_total{{ $users }}[{{ $w }}])) >= {{ .minUsers }}
        unless on() changes({{ $weight }}[{{ $w }}]) > 0
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- include "sms-checker.alertLabels" $ | nindent 8 }}
      annotations:
        summary: >-
          {{`New users do not split between the cohorts as configured (chi-square {{ $value | printf "%.1f" }})`}}
        description: >-
          Over the last {{ $w }} the gateway assigned new users to the canary cohort at a share
          that differs from the configured {{ $.Values.istio.trafficSplit.canary }}% by more than
          chance allows (Pearson's chi-square above {{ .chiSquare }}, at least {{ .minUsers }} new users).
        runbook: >-
          A broken assignment biases every comparison between the versions, so stop judging
          them: hold or pause the rollout. Compare sms_cohort_users_total{user="new"} per cohort
          with the split; look for a path that loses the user cookie (a redirect, another host),
          clients that ignore cookies, a second gateway without the filter, or a weight change the
          rules did not see (the alert leaves out windows in which the chart's weight changed).
        {{- with include "sms-checker.runbookUrl" (list $runbook "SmsCheckerSampleRatioMismatch") }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end }}
{{- end }}
{{- with $a.canaryErrorRate }}
{{- if and .enabled $.Values.versions.v2.enabled }}
{{- $c := include "sms-checker.alertSelector" (append $sel (printf "cohort=\"%s\"" $canary)) }}
{{- $cErr := include "sms-checker.alertSelector" (append $sel (printf "cohort=\"%s\",response_class=~\"5xx|none\"" $canary)) }}
{{- $s := include "sms-checker.alertSelector" (append $sel (printf "cohort=\"%s\"" $stable)) }}
{{- $sErr := include "sms-checker.alertSelector" (append $sel (printf "cohort=\"%s\",response_class=~\"5xx|none\"" $stable)) }}
    - alert: SmsCheckerCanaryErrorRateAboveStable
      expr: |-
        (
          (sum(increase(sms_cohort_requests_total{{ $cErr }}[{{ $w }}])) or vector(0))
            / sum(increase(sms_cohort_requests_total{{ $c }}[{{ $w }}]))
        )
        - (
          (sum(increase(sms_cohort_requests_total{{ $sErr }}[{{ $w }}])) or vector(0))
            / sum(increase(sms_cohort_requests_total{{ $s }}[{{ $w }}]))
        ) > {{ .margin }}
        and on() sum(increase(sms_cohort_requests_total{{ $c }}[{{ $w }}])) >= {{ .minRequests }}
        and on() sum(increase(sms_cohort_requests_total{{ $s }}[{{ $w }}])) >= {{ .minRequests }}
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- include "sms-checker.alertLabels" $ | nindent 8 }}
      annotations:
        summary: >-
          {{`The canary's error rate is {{ $value | humanizePercentage }} above stable's`}}
        description: >-
          Over the last {{ $w }}, requests of the canary cohort (v2) failed (a 5xx, or no
          response) more often than stable's (v1) by more than {{ .margin }}, as users saw them
          at the ingress gateway.
        runbook: >-
          Roll the canary back: set istio.trafficSplit.canary=0 (a running meshctl rollout does
          it on its own once its checks show it), then read meshctl report --gate canary over the
          window for the evidence. Check v2's logs and sidecar for the failing requests, and
          whether a fault (versions.v2.fault) is configured.
        {{- with include "sms-checker.runbookUrl" (list $runbook "SmsCheckerCanaryErrorRateAboveStable") }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end }}
{{- end }}
{{- with $a.mirrorCoverage }}
{{- if and .enabled $.Values.versions.v3.enabled (gt (float64 $.Values.istio.mirror.percentage) 0.0) }}
    - alert: SmsCheckerMirrorCoverageLow
      expr: |-
        (sum(increase(sms_model_requests_total{{ $mirrored }}[{{ $w }}])) or vector(0))
          / sum(increase(sms_model_requests_total{{ $live }}[{{ $w }}]))
        < {{ mulf .floor (divf (float64 $.Values.istio.mirror.percentage) 100.0) }}
        and on() sum(increase(sms_model_requests_total{{ $live }}[{{ $w }}])) >= {{ .minRequests }}
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- include "sms-checker.alertLabels" $ | nindent 8 }}
      annotations:
        summary: >-
          {{`The shadow (v3) receives {{ $value | humanizePercentage }} of live requests`}}
        description: >-
          Over the last {{ $w }}, v3's sidecar saw fewer mirrored requests than
          {{ .floor }} x the configured {{ $.Values.istio.mirror.percentage }}% of the live
          versions' requests: the shadow is judged on less traffic than intended.
        runbook: >-
          Check that v3's pods are ready and their sidecar runs the cohort filter
          (sms_model_requests_total{mirrored="true"}); that the VirtualService still mirrors to
          subset v3 (istio.mirror.percentage); and the mirror's upstream errors in the gateway's
          Envoy stats. The live users are not affected.
        {{- with include "sms-checker.runbookUrl" (list $runbook "SmsCheckerMirrorCoverageLow") }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end }}
{{- end }}
{{- with $a.unassignedRequests }}
{{- if .enabled }}
{{- $none := include "sms-checker.alertSelector" (append $sel "mirrored=\"false\",cohort=~\"none|unknown\"") }}
    - alert: SmsCheckerRequestsWithoutCohort
      expr: |-
        (sum(increase(sms_model_requests_total{{ $none }}[{{ $w }}])) or vector(0))
          / sum(increase(sms_model_requests_total{{ $live }}[{{ $w }}]))
        > {{ .maxShare }}
        and on() sum(increase(sms_model_requests_total{{ $live }}[{{ $w }}])) >= {{ .minRequests }}
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- include "sms-checker.alertLabels" $ | nindent 8 }}
      annotations:
        summary: >-
          {{`{{ $value | humanizePercentage }} of live requests reach the versions without a valid cohort`}}
        description: >-
          Over the last {{ $w }}, more than {{ .maxShare }} of the live requests reaching the model
          versions carried no cohort header (cohort="none") or one the filter does not know
          (cohort="unknown"): users are not sticky, and the experiment's counts miss them.
        runbook: >-
          The gateway filter is failing open (filter.failStrategy FAIL_OPEN: the module did not
          load, look for a Wasm or ECDS error in the gateway's log), or callers reach the Service
          without the gateway (in-mesh callers with istio.meshRouting get no cohort), or the
          gateway and sidecar filters disagree on the cohorts (a partial upgrade).
        {{- with include "sms-checker.runbookUrl" (list $runbook "SmsCheckerRequestsWithoutCohort") }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end }}
{{- end }}
{{- with $a.shadowLatency }}
{{- if and .enabled $.Values.versions.v3.enabled }}
{{- $q := float64 .quantile }}
    - alert: SmsCheckerShadowSlowerThanLive
      expr: |-
        histogram_quantile({{ $q }}, sum by (le) (rate(sms_model_request_duration_milliseconds_bucket{{ $mirrored }}[{{ $w }}])))
        - histogram_quantile({{ $q }}, sum by (le) (rate(sms_model_request_duration_milliseconds_bucket{{ $live }}[{{ $w }}])))
        > {{ .marginMs }}
        and on() sum(increase(sms_model_request_duration_milliseconds_count{{ $mirrored }}[{{ $w }}])) >= {{ .minRequests }}
        and on() sum(increase(sms_model_request_duration_milliseconds_count{{ $live }}[{{ $w }}])) >= {{ .minRequests }}
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- include "sms-checker.alertLabels" $ | nindent 8 }}
      annotations:
        summary: >-
          {{`The shadow's latency quantile is {{ $value | printf "%.1f" }} ms above the live versions'`}}
        description: >-
          Over the last {{ $w }}, v3's p{{ mulf $q 100.0 }} latency at its sidecar exceeded the live
          versions' by more than {{ .marginMs }} ms.
        runbook: >-
          The shadow would be slower than what users get today: do not promote it. Compare
          model_prediction_latency_seconds per version (the service's own time) with the sidecar's
          to tell the model from the pod; check v3's CPU limits and throttling. Mirrored answers
          are dropped, so users are not affected.
        {{- with include "sms-checker.runbookUrl" (list $runbook "SmsCheckerShadowSlowerThanLive") }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels every alert carries. */}}
{{- define "sms-checker.alertLabels" -}}
release: {{ .Release.Name | quote }}
experiment: {{ .Values.experiment.name | quote }}
{{- with .Values.alerts.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* runbook_url when alerts.runbookUrl is set. Argument: (list url "AlertName"). */}}
{{- define "sms-checker.runbookUrl" -}}
{{- with index . 0 -}}
runbook_url: {{ printf "%s#%s" . (lower (index $ 1)) | quote }}
{{- end -}}
{{- end }}

{{/* The rule file's name in the ConfigMap (and in a Prometheus's rule_files). */}}
{{- define "sms-checker.alertRuleFile" -}}
sms-checker-rules.yaml
{{- end }}
