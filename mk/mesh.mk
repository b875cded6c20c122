# The local mesh (meshctl/): `make run` renders the chart with SET values and
# brings up gateway, sidecars, model versions and Prometheus on 127.0.0.1.

MESHCTL := $(ROOT)/target/debug/meshctl
MODEL_SERVICE_BIN ?= $(ROOT)/target/release/model-service
# `make run SET="istio.trafficSplit.stable=95,istio.trafficSplit.canary=5"`
SET ?=
# Extra meshctl flags, e.g. RUN_FLAGS="--gateway-port 18080 --base-port 0"
RUN_FLAGS ?=

# The model-service binary is in TEST_PREREQS from mk/model.mk.
TEST_PREREQS += meshctl

.PHONY: run meshctl run-check
# $(MODEL_SERVICE_BIN)'s rule is in mk/model.mk, read after this file.
.SECONDEXPANSION:

meshctl: ## Build the meshctl CLI
	cargo build --locked -p meshctl

run: tools wasm $$(MODEL_SERVICE_BIN) meshctl ## Start the local mesh from the chart (SET="a=b,c=d" as helm --set); Ctrl-C stops it
	$(MESHCTL) run $(if $(strip $(SET)),--set '$(SET)') --wasm $(FILTER_WASM) \
	  --model-service $(MODEL_SERVICE_BIN) $(RUN_FLAGS)

run-check: tools meshctl ## Render and translate the chart, validate the Envoy configs, list what is not reproduced
	$(MESHCTL) run --check $(if $(strip $(SET)),--set '$(SET)') $(RUN_FLAGS)

BENCH_TARGETS += bench-mesh
.PHONY: bench-mesh
bench-mesh: tools wasm $$(MODEL_SERVICE_BIN) meshctl ## Benchmark the local mesh: start-up time; /predict via gateway+sidecar vs direct (wrk)
	meshctl/bench/mesh.sh $(MESHCTL) $(FILTER_WASM) $(MODEL_SERVICE_BIN) 10
