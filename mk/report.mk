# Experiment evidence (meshctl/src/report): `make report` compares the
# versions of the running local mesh on its Prometheus data.

REPORT_PROMETHEUS ?= http://127.0.0.1:9090
REPORT_WINDOW ?= 1h
REPORT_ARGS ?=
# Where `make rollout` serves the rollout's own metrics: the local mesh's
# Prometheus scrapes this address (meshctl::workspace::ROLLOUT_METRICS_ADDR).
ROLLOUT_METRICS_ADDR := 127.0.0.1:9469

.PHONY: report report-build

report-build:
	cargo build -p meshctl --locked

report: report-build ## Experiment report from the local mesh's Prometheus (REPORT_PROMETHEUS, REPORT_WINDOW, REPORT_ARGS)
	$(ROOT)/target/debug/meshctl report --prometheus $(REPORT_PROMETHEUS) --window $(REPORT_WINDOW) $(REPORT_ARGS)

TEST_PREREQS += report-build
