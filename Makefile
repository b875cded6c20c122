# sms-checker mesh: the front door. `make help` lists the targets.
# Every target installs what it needs first, so a fresh clone works.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
ROOT := $(abspath .)

# The SMS Spam Collection and Istio CRDs live beside the checkout; see README.
export SMS_SHARED_DIR ?= $(abspath $(ROOT)/../shared)
export CARGO_TERM_COLOR ?= never

# Areas append what `make test` must build first (a .wasm, a binary, ...),
# and their benchmarks to `make bench`.
TEST_PREREQS :=
BENCH_TARGETS :=

include mk/tools.mk
include $(sort $(filter-out mk/tools.mk,$(wildcard mk/*.mk)))

.PHONY: help test lint fmt bench

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

lint: lint-go ## cargo fmt --check, clippy with warnings denied, go vet and gofmt
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	cargo fmt --all

test: tools lint $(TEST_PREREQS) ## Run every test: host, real Envoy, Helm, end to end
	cargo test --workspace --locked

bench: $(BENCH_TARGETS) ## Run every benchmark (results in each area's README)
