# The local mesh (meshctl/): `make run` renders the chart with SET values and
# runs it on Istio's own control plane (mk/istio.mk): the ingress gateway,
# a pod per version (sidecar and model-service), Prometheus.

MESHCTL := $(ROOT)/target/debug/meshctl
# `make run SET="istio.trafficSplit.stable=95,istio.trafficSplit.canary=5"`
SET ?=
# Extra meshctl flags, e.g. RUN_FLAGS="--gateway-port 18080 --prometheus-port 19090"
RUN_FLAGS ?=

# The model-service binary is in TEST_PREREQS from mk/model.mk.
TEST_PREREQS += meshctl

.PHONY: run meshctl run-check set
# $(MODEL_SERVICE_BIN)'s rule is in mk/model.mk, read after this file.
.SECONDEXPANSION:

meshctl: ## Build the meshctl CLI
	cargo build --locked -p meshctl

run: tools wasm istio $$(MODEL_SERVICE_BIN) meshctl ## Start the local mesh from the chart on Istio's control plane (SET="a=b,c=d" as helm --set); Ctrl-C stops it
	$(MESHCTL) run $(if $(strip $(SET)),--set '$(SET)') --wasm $(FILTER_WASM) \
	  --model-service $(MODEL_SERVICE_BIN) $(RUN_FLAGS)

run-check: tools istio meshctl ## Istio validates and translates the chart: each proxy's config in .run/istio
	$(MESHCTL) run --check $(if $(strip $(SET)),--set '$(SET)') $(RUN_FLAGS)

set: meshctl ## Change values of the running local mesh: make set SET="istio.trafficSplit.stable=80,istio.trafficSplit.canary=20"
	@test -n "$(strip $(SET))" || { echo 'make set: give SET="key=value,..."' >&2; exit 1; }
	$(MESHCTL) set '$(SET)'

# Users for the running local mesh (a quarter of them new), for the report
# and the rollout to judge: `make load LOAD_SECONDS=600`.
LOAD_SECONDS ?= 300
LOAD_CONNECTIONS ?= 8
LOAD_HOST ?= sms-checker.local
GATEWAY_URL ?= http://127.0.0.1:8080
# `make rollout ROLLOUT_ARGS="--steps 5,25,50,100 --interval 30s --step-time 2m"`
ROLLOUT_ARGS ?=

.PHONY: load rollout
load: tools-apt ## Send users to the running local mesh (wrk; LOAD_SECONDS, LOAD_CONNECTIONS, LOAD_HOST)
	wrk -t2 -c$(LOAD_CONNECTIONS) -d$(LOAD_SECONDS)s -H 'Host: $(LOAD_HOST)' \
	  -s meshctl/load/users.lua $(GATEWAY_URL)/predict

rollout: meshctl ## Ramp the canary on the running local mesh, judged by the statistics (ROLLOUT_ARGS)
	$(MESHCTL) rollout --run-dir .run --metrics-addr $(ROLLOUT_METRICS_ADDR) $(ROLLOUT_ARGS)

BENCH_TARGETS += bench-mesh
.PHONY: bench-mesh
bench-mesh: tools wasm istio $$(MODEL_SERVICE_BIN) meshctl ## Benchmark the local mesh: start-up, live change, /predict via gateway+sidecar vs in-pod (wrk)
	meshctl/bench/mesh.sh $(MESHCTL) $(FILTER_WASM) $(MODEL_SERVICE_BIN) 10
