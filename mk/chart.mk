# The Helm chart (manifests/sms-checker): lint, render, validate, deploy.

CHART         := $(ROOT)/manifests/sms-checker
RELEASE       ?= sms-checker
NAMESPACE     ?= default
# Extra helm flags, e.g. HELM_ARGS='--set istio.trafficSplit.stable=95 --set istio.trafficSplit.canary=5'
HELM_ARGS     ?=
# The Istio release whose CRDs the chart is validated against, and the file's
# SHA-256: one source of truth, the chart tests' constants.
CHART_PIN_RS  := $(ROOT)/tests/src/schemas.rs
ISTIO_API_TAG := $(shell sed -n 's/^pub const ISTIO_VERSION: &str = "\([0-9.]*\)";/\1/p' $(CHART_PIN_RS))
ISTIO_CRDS_SHA256 := $(shell sed -n '/^pub const ISTIO_CRDS_SHA256/,/;/s/.*"\([0-9a-f]\{64\}\)".*/\1/p' $(CHART_PIN_RS))
$(if $(and $(ISTIO_API_TAG),$(ISTIO_CRDS_SHA256)),,$(error ISTIO_VERSION or ISTIO_CRDS_SHA256 not found in $(CHART_PIN_RS)))
ISTIO_CRDS    := istio-$(ISTIO_API_TAG)-customresourcedefinitions.gen.yaml
ISTIO_CRDS_URL    := https://raw.githubusercontent.com/istio/api/$(ISTIO_API_TAG)/kubernetes/customresourcedefinitions.gen.yaml

# PodMonitor/ServiceMonitor validators generated from the Prometheus
# Operator's API types (npm), for the kinds whose CRDs are not pinned here.
MONITOR_MODELS_PIN := @kubernetes-models/prometheus-operator@6.0.0
CHART_NODE         := $(TOOLS)/chart-node
MONITOR_MODELS     := $(CHART_NODE)/node_modules/@kubernetes-models/prometheus-operator/package.json
export CHART_NODE_MODULES ?= $(CHART_NODE)/node_modules

# The chart tests validate Istio objects against these CRDs, and the
# Prometheus Operator kinds with those models.
TEST_PREREQS += chart-crds chart-monitor-models

.PHONY: chart-lint chart-template chart-test chart-scan chart-crds chart-monitor-models deploy undeploy

chart-lint: $(HELM) ## helm lint --strict the chart (defaults and the seed's --set knobs)
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set istio.trafficSplit.stable=95 --set istio.trafficSplit.canary=5
	$(HELM) lint --strict $(CHART) --set versions.v2.enabled=false
	$(HELM) lint --strict $(CHART) --set security.authorizationPolicy.enabled=true \
	  --set security.peerAuthentication.enabled=true --set security.networkPolicy.enabled=true

chart-template: $(HELM) ## Render the chart to stdout (HELM_ARGS=... to pass --set flags)
	@$(HELM) template $(RELEASE) $(CHART) --namespace $(NAMESPACE) $(HELM_ARGS)

chart-test: tools chart-crds chart-monitor-models ## Chart tests: helm, kubernetes-validate, Istio CRD schemas, semantics, checkov
	cargo test -p sms-checker-tests --test chart --test chart_workloads --test chart_values --test chart_security --test chart_checkov

# BC_SKIP_MAPPING: checkov would otherwise fetch guideline links from its
# vendor's platform; the checks themselves ship in the package.
chart-scan: tools-python $(HELM) ## checkov's Kubernetes checks on the rendered chart (NAMESPACE, HELM_ARGS)
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
	  $(HELM) template $(RELEASE) $(CHART) --namespace $(NAMESPACE) $(HELM_ARGS) > "$$out/$(RELEASE).yaml" && \
	  BC_SKIP_MAPPING=TRUE $(CHECKOV_BIN) --framework kubernetes --skip-download --compact --file "$$out/$(RELEASE).yaml"

# ../shared holds the pinned CRDs; a checkout without it fetches the same
# file from the istio/api tag and checks its SHA-256 before using it.
chart-crds:
	@if [ -f "$(SMS_SHARED_DIR)/schemas/$(ISTIO_CRDS)" ]; then \
	  echo "$(ISTIO_CRDS_SHA256)  $(SMS_SHARED_DIR)/schemas/$(ISTIO_CRDS)" | sha256sum --check --quiet; \
	elif [ -f "$(TOOLS)/schemas/$(ISTIO_CRDS)" ]; then \
	  echo "$(ISTIO_CRDS_SHA256)  $(TOOLS)/schemas/$(ISTIO_CRDS)" | sha256sum --check --quiet; \
	else \
	  mkdir -p "$(TOOLS)/schemas"; \
	  curl -fsSL --retry 3 -o "$(TOOLS)/schemas/$(ISTIO_CRDS).part" "$(ISTIO_CRDS_URL)"; \
	  echo "$(ISTIO_CRDS_SHA256)  $(TOOLS)/schemas/$(ISTIO_CRDS).part" | sha256sum --check --quiet; \
	  mv "$(TOOLS)/schemas/$(ISTIO_CRDS).part" "$(TOOLS)/schemas/$(ISTIO_CRDS)"; \
	fi

chart-monitor-models: $(MONITOR_MODELS)
$(MONITOR_MODELS):
	@command -v npm >/dev/null || scripts/ensure-apt.sh nodejs npm
	mkdir -p $(CHART_NODE)
	npm install --prefix $(CHART_NODE) --no-audit --no-fund --silent --save-exact '$(MONITOR_MODELS_PIN)'
	@test -f $@

deploy: $(HELM) ## helm upgrade --install the chart (RELEASE, NAMESPACE, HELM_ARGS)
	$(HELM) upgrade --install $(RELEASE) $(CHART) --namespace $(NAMESPACE) --create-namespace --wait $(HELM_ARGS)

undeploy: $(HELM) ## helm uninstall the release
	$(HELM) uninstall $(RELEASE) --namespace $(NAMESPACE)
