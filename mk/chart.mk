# The Helm chart (manifests/sms-checker): lint, render, validate, deploy.

CHART         := $(ROOT)/manifests/sms-checker
RELEASE       ?= sms-checker
NAMESPACE     ?= default
# Extra helm flags, e.g. HELM_ARGS='--set istio.trafficSplit.stable=95 --set istio.trafficSplit.canary=5'
HELM_ARGS     ?=
# The CRDs the chart is validated against (Istio's, the Gateway API's): the
# Go modules that ship them, the files and their SHA-256, one line each in
# the file the chart tests read. crd-check validates objects against them
# with Kubernetes' own API server code (schema, unknown fields, CEL rules).
CRD_PINS      := $(ROOT)/tests/crd-pins.txt
CRD_CHECK_DIR := $(ROOT)/crd-check
CRD_CHECK     := $(TOOLS)/bin/crd-check
export CRD_CHECK_BIN ?= $(CRD_CHECK)

# PodMonitor/ServiceMonitor validators generated from the Prometheus
# Operator's API types (npm), for the kinds whose CRDs are not pinned here.
MONITOR_MODELS_PIN := @kubernetes-models/prometheus-operator@6.0.0
CHART_NODE         := $(TOOLS)/chart-node
MONITOR_MODELS     := $(CHART_NODE)/node_modules/@kubernetes-models/prometheus-operator/package.json
export CHART_NODE_MODULES ?= $(CHART_NODE)/node_modules

# The chart tests validate Istio and Gateway API objects against these CRDs,
# and the Prometheus Operator kinds with those models.
TEST_PREREQS += chart-crds chart-monitor-models crd-check-test

.PHONY: chart-lint chart-template chart-test chart-scan chart-crds chart-monitor-models crd-check-test lint-crd-check deploy undeploy

chart-lint: $(HELM) ## helm lint --strict the chart (defaults, the seed's --set knobs, each routing API and data plane)
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set istio.trafficSplit.stable=95 --set istio.trafficSplit.canary=5
	$(HELM) lint --strict $(CHART) --set versions.v2.enabled=false
	$(HELM) lint --strict $(CHART) --set security.authorizationPolicy.enabled=true \
	  --set security.peerAuthentication.enabled=true --set security.networkPolicy.enabled=true
	$(HELM) lint --strict $(CHART) --set istio.routingApi=GatewayAPI --set filter.api=TrafficExtension
	$(HELM) lint --strict $(CHART) --set istio.routingApi=GatewayAPI --set istio.dataplaneMode=ambient \
	  --set security.authorizationPolicy.enabled=true --set security.networkPolicy.enabled=true

chart-template: $(HELM) ## Render the chart to stdout (HELM_ARGS=... to pass --set flags)
	@$(HELM) template $(RELEASE) $(CHART) --namespace $(NAMESPACE) $(HELM_ARGS)

chart-test: tools chart-crds chart-monitor-models ## Chart tests: helm, kubernetes-validate, Istio and Gateway API CRDs, semantics, checkov
	cargo test -p sms-checker-tests --test chart --test chart_workloads --test chart_values --test chart_security --test chart_gateway_api --test chart_checkov

# BC_SKIP_MAPPING: checkov would otherwise fetch guideline links from its
# vendor's platform; the checks themselves ship in the package.
chart-scan: tools-python $(HELM) ## checkov's Kubernetes checks on the rendered chart (NAMESPACE, HELM_ARGS)
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
	  $(HELM) template $(RELEASE) $(CHART) --namespace $(NAMESPACE) $(HELM_ARGS) > "$$out/$(RELEASE).yaml" && \
	  BC_SKIP_MAPPING=TRUE $(CHECKOV_BIN) --framework kubernetes --skip-download --compact --file "$$out/$(RELEASE).yaml"

# Each pinned module version is fetched into Go's module cache (outside any
# go.mod, so nothing is added to one) and each file checked against its
# SHA-256 before a test reads it.
chart-crds: tools-go $(CRD_CHECK)
	@mkdir -p $(TOOLS) && grep -v '^#' $(CRD_PINS) | while read -r set module version file sha256; do \
	  [ -n "$$module" ] || continue; \
	  dir=$$(cd $(TOOLS) && $(GO) mod download -json "$$module@$$version" | \
	    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	  [ -n "$$dir" ] || { echo "go mod download $$module@$$version failed"; exit 1; }; \
	  echo "$$sha256  $$dir/$$file" | sha256sum --check --quiet; \
	done

$(CRD_CHECK): $(wildcard $(CRD_CHECK_DIR)/*.go) $(CRD_CHECK_DIR)/go.mod $(CRD_CHECK_DIR)/go.sum
	mkdir -p $(dir $@)
	cd $(CRD_CHECK_DIR) && $(GO) build -trimpath -o $@ .

crd-check-test: tools-go ## Go tests of crd-check (Kubernetes' CRD validation)
	cd $(CRD_CHECK_DIR) && $(GO) test ./...

lint: lint-crd-check
lint-crd-check: tools-go
	cd $(CRD_CHECK_DIR) && $(GO) vet ./... && test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }

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
