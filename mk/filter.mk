# The cohort filter (filter/): the .wasm, its fuzz target and its benchmark.

FILTER_WASM := $(ROOT)/target/wasm32-wasip1/wasm-release/sms_checker_filter.wasm
BINARYEN_VERSION := 132.0.0
WASM_OPT := $(TOOLS)/binaryen/node_modules/.bin/wasm-opt
# The features rustc's wasm32-wasip1 target emits by default.
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
	--enable-nontrapping-float-to-int
# Callbacks the SDK exports but the filter does not implement. Envoy calls
# every proxy_on_* a module exports (body chunks, trailers, done, log: about
# 0.7 us of worker CPU each); without the export it skips the call and
# applies the ABI default (continue; done). Metrics are counted on
# proxy_on_delete instead of proxy_on_log (src/glue.rs). Keep in step with the
# HttpContext/RootContext methods glue.rs implements; tests/tests/envoy_filter.rs
# checks the exports that remain.
WASM_UNUSED_EXPORTS := proxy_on_request_body,proxy_on_request_trailers,proxy_on_response_body,\
proxy_on_response_trailers,proxy_on_done,proxy_on_log,proxy_on_foreign_function,\
proxy_on_queue_ready,proxy_on_http_call_response,proxy_on_grpc_*,proxy_on_new_connection,\
proxy_on_downstream_*,proxy_on_upstream_*
SPACE := $(subst ,, )
FILTER_WASM_MAX_BYTES := 204800
ONE_HEADER_WASM := $(ROOT)/target/one-header/wasm32-wasip1/release/one_header_filter.wasm

TEST_PREREQS += wasm
BENCH_TARGETS += bench-filter

.PHONY: wasm tools-binaryen fuzz bench-filter

# Binaryen from the npm registry: its wasm-opt shrinks the module by a fifth,
# which keeps the filter under the 200 KB budget.
tools-binaryen: $(WASM_OPT)
$(WASM_OPT):
	@command -v npm >/dev/null || scripts/ensure-apt.sh nodejs npm
	mkdir -p $(TOOLS)/binaryen
	npm install --silent --no-audit --no-fund --prefix $(TOOLS)/binaryen binaryen@$(BINARYEN_VERSION)
	touch $@

# opt-level "z" on top of the wasm-release profile, then wasm-opt: the
# request path is dominated by host calls, so size costs nothing measurable.
wasm: tools-wasm tools-binaryen ## Build the cohort filter .wasm (wasm32-wasip1, size-optimised)
	CARGO_PROFILE_WASM_RELEASE_OPT_LEVEL=z cargo build --locked -p sms-checker-filter \
	  --target wasm32-wasip1 --profile wasm-release
	$(WASM_OPT) --remove-exports --pass-arg=remove-exports@$(subst $(SPACE),,$(WASM_UNUSED_EXPORTS)) \
	  $(WASM_OPT_FLAGS) $(FILTER_WASM) -o $(FILTER_WASM).opt
	mv $(FILTER_WASM).opt $(FILTER_WASM)
	@size=$$(stat -c %s $(FILTER_WASM)); echo "$(FILTER_WASM): $$size bytes"; \
	  test $$size -le $(FILTER_WASM_MAX_BYTES) || { echo "filter .wasm over $(FILTER_WASM_MAX_BYTES) bytes"; exit 1; }

$(ONE_HEADER_WASM): filter/bench/one-header/src/lib.rs filter/bench/one-header/Cargo.toml
	cd filter/bench/one-header && CARGO_TARGET_DIR=$(ROOT)/target/one-header \
	  cargo build --locked --release --target wasm32-wasip1

FUZZ_SECONDS ?= 60
fuzz: ## Fuzz config and cookie parsing (cargo-fuzz, nightly; FUZZ_SECONDS per target)
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	cd filter/fuzz && for target in config cookie; do \
	  cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

bench-filter: wasm $(ONE_HEADER_WASM) tools-apt ## Benchmark the filter in Envoy: no filter vs one-header vs cohort filter
	ENVOY_BIN=$(ENVOY) filter/bench/run.sh $(FILTER_WASM) $(ONE_HEADER_WASM)
