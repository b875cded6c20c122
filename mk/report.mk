# Experiment evidence (meshctl/src/report): `make report` compares the
# versions of the running local mesh on its Prometheus data.

REPORT_PROMETHEUS ?= http://127.0.0.1:9090
REPORT_WINDOW ?= 1h
REPORT_ARGS ?=

.PHONY: report report-build

report-build:
	cargo build -p meshctl --locked

report: report-build ## Experiment report from the local mesh's Prometheus (REPORT_PROMETHEUS, REPORT_WINDOW, REPORT_ARGS)
	$(ROOT)/target/debug/meshctl report --prometheus $(REPORT_PROMETHEUS) --window $(REPORT_WINDOW) $(REPORT_ARGS)

TEST_PREREQS += report-build
