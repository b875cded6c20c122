# meshctl gate's controllers (meshctl/src/gate): Flagger's and Argo
# Rollouts' own code around the example manifests and a running gate. Their
# CRDs are pinned in tests/crd-pins.txt and fetched by `make chart-crds`.

# Flagger's and Argo Rollouts' own code (their webhook client, web metric
# provider and types) around the example manifests and a running gate, as
# the tests drive it: controller-check/, its modules pinned in go.mod.
CONTROLLER_CHECK := $(TOOLS)/controller-check/controller-check
CONTROLLER_CHECK_SOURCES := $(wildcard $(ROOT)/controller-check/*.go) \
	$(ROOT)/controller-check/go.mod $(ROOT)/controller-check/go.sum
export CONTROLLER_CHECK_BIN ?= $(CONTROLLER_CHECK)

TEST_PREREQS += controller-check
.PHONY: controller-check lint-controller-check
lint: lint-controller-check

controller-check: tools-go $(CONTROLLER_CHECK) ## Build controller-check (Flagger's and Argo Rollouts' code for the gate's tests)

$(CONTROLLER_CHECK): $(CONTROLLER_CHECK_SOURCES)
	mkdir -p $(dir $@)
	cd controller-check && $(GO) build -trimpath -o $@ .

lint-controller-check: tools-go
	cd controller-check && $(GO) vet ./... && test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
