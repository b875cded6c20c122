#!/usr/bin/env bash
# Benchmark of the local mesh: start-up time, the time a live value change
# takes to reach every proxy, then POST /predict throughput and latency
# through gateway + sidecar versus the model-service from inside its pod.
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
  --wasm "$wasm" --model-service "$model_service" > "$run_dir/meshctl.out" 2>&1 &
pid=$!
for _ in $(seq 1 1200); do
  grep -q '"ready": true' "$run_dir/state.json" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$run_dir/meshctl.out"; exit 1; }
  sleep 0.1
done
grep -q '"ready": true' "$run_dir/state.json" || { echo "mesh not ready after 120 s"; exit 1; }
ready=$(date +%s.%N)
state() { python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print($1)" "$run_dir/state.json"; }
host=$(state 's["hosts"][0]')
model_pid=$(state 'next(c["pid"] for c in s["components"] if c["name"]=="model-v1")')
python3 -c "import sys; print(f\"start-up (render, Istio's control plane, 4 pods: iptables, agents, Envoys, services; all ready): {float(sys.argv[2]) - float(sys.argv[1]):.1f} s\")" "$start" "$ready"

# A live change: from `meshctl set` to every proxy acknowledging the push.
times=()
for split in "80 20" "90 10" "80 20" "90 10" "80 20"; do
  set -- $split
  t0=$(date +%s.%N)
  "$meshctl" set --run-dir "$run_dir" "istio.trafficSplit.stable=$1,istio.trafficSplit.canary=$2" > /dev/null
  times+=("$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)")")
done
echo "meshctl set to every proxy acknowledging (5 changes): ${times[*]} s"

cat > "$run_dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"sms":"WINNER!! You have won a free prize, call now to claim"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Cookie"] = "sms-checker-uid=bench-user"
wrk.headers["Host"] = "$host"
LUA
echo "== gateway (filter, route, mirror to v3) -> sidecar (filter) -> model-service: wrk -t2 -c8 -d${seconds}s POST /predict"
wrk -t2 -c8 -d"${seconds}s" --latency -s "$run_dir/post.lua" "http://127.0.0.1:$gateway_port/predict" \
  | grep -E 'Requests/sec|^ +(50|90|99)%|Non-2xx'
# Inside v1's pod, to 127.0.0.1: Istio's redirect rules leave loopback alone.
echo "== model-service v1 from inside its pod: wrk -t2 -c8 -d${seconds}s POST /predict"
nsenter --net="/proc/$model_pid/ns/net" wrk -t2 -c8 -d"${seconds}s" --latency -s "$run_dir/post.lua" \
  "http://127.0.0.1:8081/predict" | grep -E 'Requests/sec|^ +(50|90|99)%|Non-2xx'
