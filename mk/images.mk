# OCI images of the filter and the model-service, built without a Docker
# engine by `meshctl image` and pushed with Debian's skopeo. See docs/images.md.

MUSL_TARGET := x86_64-unknown-linux-musl
MODEL_SERVICE_MUSL := $(ROOT)/target/$(MUSL_TARGET)/release/model-service
MESHCTL_MUSL := $(ROOT)/target/$(MUSL_TARGET)/release/meshctl
MODEL_SERVICE_MODELS := $(ROOT)/model-service/models
IMAGES_DIR := $(ROOT)/target/images
MESHCTL_DEBUG := $(ROOT)/target/debug/meshctl
# FILTER_WASM and `wasm` come from mk/filter.mk, which sorts first.
# `make push REGISTRY=127.0.0.1:5000/sms TLS_VERIFY=false` for a local registry.
REGISTRY ?=
TLS_VERIFY ?= true
# Tag of both images; empty: the workspace version. E.g. IMAGE_TAG=$$(git rev-parse --short HEAD).
IMAGE_TAG ?=
IMAGE_TAG_FLAG := $(if $(IMAGE_TAG),--tag '$(IMAGE_TAG)')

export MESHCTL_BIN ?= $(MESHCTL_DEBUG)
export MODEL_SERVICE_MUSL_BIN ?= $(MODEL_SERVICE_MUSL)

.PHONY: images push model-service-musl meshctl-musl meshctl-debug tools-musl

tools-musl:
	@rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)

model-service-musl: tools-musl ## Build the model-service as a static (musl) binary
	cargo build -p model-service --release --locked --target $(MUSL_TARGET)

# ring (rustls, the notifications' https) compiles C: musl-gcc for musl.
meshctl-musl: tools-musl ## Build meshctl as a static (musl) binary, for the gate's image
	@scripts/ensure-apt.sh musl-tools
	CC_x86_64_unknown_linux_musl=musl-gcc cargo build -p meshctl --release --locked --target $(MUSL_TARGET)

meshctl-debug:
	cargo build -p meshctl --locked

images: wasm model-service-musl meshctl-musl meshctl-debug ## OCI layouts of the filter, model-service and meshctl (the gate) in target/images (no Docker)
	$(MESHCTL_DEBUG) image build --filter-wasm $(FILTER_WASM) \
	  --model-service-bin $(MODEL_SERVICE_MUSL) --models-dir $(MODEL_SERVICE_MODELS) \
	  --meshctl-bin $(MESHCTL_MUSL) \
	  --out $(IMAGES_DIR) $(IMAGE_TAG_FLAG)

push: images ## Push the images with skopeo: make push REGISTRY=host[:port]/ns [TLS_VERIFY=false] [IMAGE_TAG=t]
	@test -n "$(REGISTRY)" || { echo "make push: set REGISTRY=host[:port][/namespace]" >&2; exit 1; }
	@scripts/ensure-apt.sh skopeo
	$(MESHCTL_DEBUG) image push --registry '$(REGISTRY)' --images $(IMAGES_DIR) \
	  --tls-verify=$(TLS_VERIFY) --skopeo /usr/bin/skopeo $(IMAGE_TAG_FLAG)

TEST_PREREQS += model-service-musl meshctl-debug
