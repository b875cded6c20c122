# Istio's control plane for the local mesh (istiod-local/): Istio's own Go
# code, at the version istiod-local/go.mod pins, built into .tools/istio with
# what an Istio release would ship beside it (the istiod and gateway charts,
# the proxy's bootstrap template).

GO           ?= go
ISTIO_DIR    := $(TOOLS)/istio
ISTIOD_LOCAL := $(ISTIO_DIR)/istiod-local
PILOT_AGENT  := $(ISTIO_DIR)/pilot-agent
ISTIO_SOURCES := $(shell find $(ROOT)/istiod-local -name '*.go') \
	$(ROOT)/istiod-local/go.mod $(ROOT)/istiod-local/go.sum
# The pinned module (a pseudo-version: v0.0.0-<date>-<commit>) and its folder
# in the module cache, where the charts and the bootstrap template live.
ISTIO_MODULE = $(shell cd $(ROOT)/istiod-local && $(GO) list -m -f '{{.Version}}' istio.io/istio)
ISTIO_MODULE_DIR = $(shell cd $(ROOT)/istiod-local && $(GO) mod download -json istio.io/istio | \
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p')
# Stamped the way Istio's build stamps it: proxies report this version to
# istiod, which gates features on it.
ISTIO_LDFLAGS = -X istio.io/istio/pkg/version.buildVersion=$$(cat $(ISTIO_MODULE_DIR)/VERSION)-dev \
	-X istio.io/istio/pkg/version.buildGitRevision=$$(echo $(ISTIO_MODULE) | sed 's/.*-//') \
	-X istio.io/istio/pkg/version.buildStatus=Clean

export ISTIO_DIR

TEST_PREREQS += istio istio-test

.PHONY: istio istio-test lint-go tools-go

tools-go:
	@command -v $(GO) >/dev/null || { echo "Go 1.26 is needed for istiod-local (https://go.dev/dl)"; exit 1; }

istio: tools-go $(ISTIOD_LOCAL) $(PILOT_AGENT) $(ISTIO_DIR)/.assets ## Build Istio's control plane and agent for the local mesh (.tools/istio)

$(ISTIOD_LOCAL): $(ISTIO_SOURCES)
	mkdir -p $(ISTIO_DIR)
	cd istiod-local && $(GO) build -trimpath -ldflags "$(ISTIO_LDFLAGS)" -o $@ .

# Istio's own agent (the proxy container's pilot-agent, also the init
# container's istio-iptables), unchanged: a tool of istiod-local's module.
$(PILOT_AGENT): $(ROOT)/istiod-local/go.mod $(ROOT)/istiod-local/go.sum
	mkdir -p $(ISTIO_DIR)
	cd istiod-local && $(GO) build -trimpath -ldflags "$(ISTIO_LDFLAGS)" -o $@ istio.io/istio/pilot/cmd/pilot-agent

$(ISTIO_DIR)/.assets: $(ROOT)/istiod-local/go.mod
	rm -rf $(ISTIO_DIR)/charts && mkdir -p $(ISTIO_DIR)/charts
	cp -r $(ISTIO_MODULE_DIR)/manifests/charts/istio-control/istio-discovery $(ISTIO_DIR)/charts/istiod
	cp -r $(ISTIO_MODULE_DIR)/manifests/charts/gateway $(ISTIO_DIR)/charts/gateway
	cp $(ISTIO_MODULE_DIR)/tools/packaging/common/envoy_bootstrap.json $(ISTIO_DIR)/envoy_bootstrap_tmpl.json
	chmod -R u+w $(ISTIO_DIR)/charts $(ISTIO_DIR)/envoy_bootstrap_tmpl.json
	touch $@

istio-test: tools-go tools-helm ## Go tests of istiod-local (Istio's pilot on the chart)
	cd istiod-local && HELM_BIN=$(HELM) $(GO) test ./...

lint-go: tools-go
	cd istiod-local && $(GO) vet ./... && test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
