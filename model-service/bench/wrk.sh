#!/usr/bin/env bash
# wrk against POST /predict of each model version: 16 and 64 connections,
# DURATION seconds each, then the process's peak RSS. Prints a Markdown
# table. Usage: wrk.sh MODEL_SERVICE_BIN [DURATION]
set -euo pipefail

bin=${1:?usage: wrk.sh MODEL_SERVICE_BIN [DURATION]}
duration=${2:-10}
# One wrk thread and one service worker: each gets one of the two CPUs, as
# in the mesh where the client runs elsewhere. Oversubscribing the CPUs
# measures the scheduler's time slices in the tail, not the service.
threads=${WRK_THREADS:-1}
server_threads=${SERVER_THREADS:-1}
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || { echo "error: wrk not found (run \`make tools\`)" >&2; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pid=
stop() { if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; fi; }
trap stop EXIT

# CPU time the service spent (user + system), in microseconds: divided by
# the requests served, it measures the service's cost whatever else the
# machine is doing.
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{printf "%d", ($14 + $15) * 1000000 / hz}' "/proc/$1/stat"; }

echo "| version | connections | req/s | p50 | p99 | CPU µs/request | peak RSS |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for version in v1 v2 v3; do
  SERVER_THREADS=$server_threads MODEL_VERSION=$version SERVER_HOST=127.0.0.1 SERVER_PORT=$port RUST_LOG=warn "$bin" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/ready" >/dev/null && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$port/ready" >/dev/null || { echo "error: $version did not become ready" >&2; exit 1; }
  for connections in 16 64; do
    cpu_before=$(cpu_us "$pid")
    out=$(wrk -t"$threads" -c"$connections" -d"${duration}s" --latency \
      -s "$here/predict.lua" "http://127.0.0.1:$port/predict")
    if grep -q "Non-2xx" <<<"$out"; then
      echo "error: non-2xx responses under load:" >&2
      echo "$out" >&2
      exit 1
    fi
    cpu_after=$(cpu_us "$pid")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    per_request=$(awk -v c=$((cpu_after - cpu_before)) -v n="$requests" 'BEGIN {printf "%.1f", c / n}')
    rps=$(awk '/^Requests\/sec/ {printf "%d", $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    rss=$(awk '/^VmHWM/ {printf "%.1f MB", $2 / 1024}' "/proc/$pid/status")
    echo "| $version | $connections | $rps | $p50 | $p99 | $per_request | $rss |"
  done
  stop
done
