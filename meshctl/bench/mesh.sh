#!/usr/bin/env bash
# Benchmark of the local mesh: start-up time, then POST /predict throughput
# and latency through gateway + sidecar versus the model-service directly.
# Usage: mesh.sh MESHCTL WASM MODEL_SERVICE [SECONDS]
set -euo pipefail
meshctl=$1 wasm=$2 model_service=$3 seconds=${4:-10}
run_dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gateway_port=$(free_port) prometheus_port=$(free_port)
pid=
cleanup() { [[ -n $pid ]] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$run_dir"; }
trap cleanup EXIT

start=$(date +%s.%N)
"$meshctl" run --run-dir "$run_dir" --gateway-port "$gateway_port" --prometheus-port "$prometheus_port" \
  --base-port 0 --wasm "$wasm" --model-service "$model_service" > "$run_dir/meshctl.out" 2>&1 &
pid=$!
for _ in $(seq 1 1200); do
  grep -q '"ready": true' "$run_dir/state.json" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$run_dir/meshctl.out"; exit 1; }
  sleep 0.1
done
grep -q '"ready": true' "$run_dir/state.json" || { echo "mesh not ready after 120 s"; exit 1; }
ready=$(date +%s.%N)
model_port=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(next(c["ports"]["http"] for c in s["components"] if c["name"]=="model-v1"))' "$run_dir/state.json")

cat > "$run_dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"sms":"WINNER!! You have won a free prize, call now to claim"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Cookie"] = "sms-checker-uid=bench-user"
LUA
python3 -c "import sys; print(f\"start-up (render, translate, validate, 8 processes ready): {float(sys.argv[2]) - float(sys.argv[1]):.1f} s\")" "$start" "$ready"
for target in "gateway (filter, route, mirror to v3) -> sidecar -> model-service|$gateway_port" "model-service v1 directly|$model_port"; do
  name=${target%|*} port=${target##*|}
  echo "== $name: wrk -t2 -c8 -d${seconds}s POST /predict"
  wrk -t2 -c8 -d"${seconds}s" --latency -s "$run_dir/post.lua" "http://127.0.0.1:$port/predict" \
    | grep -E 'Requests/sec|^ +(50|90|99)%|Non-2xx'
done
