# The model-service: its release binary (run by the local mesh and packed
# into images), its dataset, its trained models and its benchmarks.

MODEL_SERVICE_BIN := $(ROOT)/target/release/model-service
MODEL_DATASET := $(SMS_SHARED_DIR)/data/sms-spam-collection/SMSSpamCollection
# One source of truth for the pinned checksum: the service's own code.
MODEL_DATASET_SHA256 := $(shell sed -n 's/^pub const SHA256: &str = "\([0-9a-f]*\)";/\1/p' $(ROOT)/model-service/src/dataset.rs)
MODEL_BENCH_SECONDS ?= 10

.PHONY: model-service model-service-force dataset models evaluate-models bench-model

model-service-force:
$(MODEL_SERVICE_BIN): model-service-force
	cargo build --locked --release -p model-service

model-service: $(MODEL_SERVICE_BIN) ## Build the model-service release binary (target/release/model-service)

dataset: ## Fetch the SMS Spam Collection from UCI if missing, checked against its pinned SHA-256
	$(ROOT)/scripts/fetch-dataset.sh $(MODEL_DATASET) $(MODEL_DATASET_SHA256)

models: dataset $(MODEL_SERVICE_BIN) ## Retrain v1, v2, v3 into model-service/models (byte-for-byte reproducible)
	$(MODEL_SERVICE_BIN) train --dataset $(MODEL_DATASET) --models-dir $(ROOT)/model-service/models

evaluate-models: dataset $(MODEL_SERVICE_BIN) ## Score the committed models on the test split
	$(MODEL_SERVICE_BIN) evaluate --dataset $(MODEL_DATASET) --models-dir $(ROOT)/model-service/models

bench-model: tools-apt $(MODEL_SERVICE_BIN) ## model-service: wrk 16/64 connections, peak RSS, criterion single prediction
	$(ROOT)/model-service/bench/wrk.sh $(MODEL_SERVICE_BIN) $(MODEL_BENCH_SECONDS)
	cargo bench --locked -p model-service --bench predict

TEST_PREREQS += dataset $(MODEL_SERVICE_BIN)
BENCH_TARGETS += bench-model
