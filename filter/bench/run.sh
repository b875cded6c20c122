#!/usr/bin/env bash
# Throughput of the cohort filter inside Envoy, against two references:
# no Wasm filter at all, and a Wasm filter that only sets one header (the
# floor of any Wasm filter). One Envoy (--concurrency 1), three listeners with
# the same direct_response route, wrk alternating between them for ROUNDS
# rounds so that drift on a shared machine hits all three alike.
#
# Usage: run.sh FILTER_WASM ONE_HEADER_WASM   (make bench-filter passes both)
set -euo pipefail

FILTER_WASM=$1
ONE_HEADER_WASM=$2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ENVOY=${ENVOY_BIN:-$ROOT/.tools/bin/envoy}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-16}
OUT=${OUT:-$ROOT/target/bench-filter}

for tool in "$ENVOY" wrk python3 cargo; do
  command -v "$tool" >/dev/null || { echo "missing $tool (run make tools)" >&2; exit 1; }
done
for f in "$FILTER_WASM" "$ONE_HEADER_WASM"; do
  [[ -f $f ]] || { echo "missing $f" >&2; exit 1; }
done
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ADMIN=$(free_port); NONE=$(free_port); ONE=$(free_port); COHORT=$(free_port)

# The bootstrap comes from the tests' builder (tests/src/envoy.rs), which
# also prints the cohort filter's cookie name and cohort response header.
names=$(cargo run --quiet --locked --manifest-path "$ROOT/Cargo.toml" \
  -p sms-checker-tests --bin filter-bench-envoy -- \
  "$OUT/envoy.json" "$ADMIN" "$NONE" "$ONE" "$COHORT" "$ONE_HEADER_WASM" "$FILTER_WASM")
read -r COOKIE_NAME COHORT_HEADER <<<"$names"

"$ENVOY" --mode validate -c "$OUT/envoy.json" >"$OUT/validate.log" 2>&1 || { cat "$OUT/validate.log"; exit 1; }
"$ENVOY" -c "$OUT/envoy.json" --concurrency 1 --disable-hot-restart --log-level warn \
  >"$OUT/envoy.log" 2>&1 &
ENVOY_PID=$!
trap 'kill $ENVOY_PID 2>/dev/null; wait $ENVOY_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$ADMIN/ready" >/dev/null 2>&1 && break
  kill -0 $ENVOY_PID || { cat "$OUT/envoy.log"; exit 1; }
  sleep 0.1
done

# A returning user (the common case: the cookie is set after the first visit).
COOKIE="Cookie: $COOKIE_NAME=0123456789abcdef0123456789abcdef"
check() { curl -sf -D - -o /dev/null -H "$COOKIE" "http://127.0.0.1:$1/" | tr -d '\r'; }
check "$COHORT" | grep -qi "^$COHORT_HEADER: " || { echo "cohort filter not active"; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$ENVOY_PID/stat"; }
TICKS_PER_SECOND=$(getconf CLK_TCK)

# Prints "requests/s<TAB>Envoy CPU microseconds per request". The second is
# what the filter costs the worker thread, and barely moves when other work
# shares the machine; the first is what wrk sees.
run() { # port [header]
  local args=(-t1 -c"$CONNECTIONS" -d"$DURATION")
  [[ $# -gt 1 ]] && args+=(-H "$2")
  local before after out
  before=$(cpu_ticks)
  out=$(wrk "${args[@]}" "http://127.0.0.1:$1/")
  after=$(cpu_ticks)
  awk -v ticks=$((after - before)) -v hz="$TICKS_PER_SECOND" '
    / requests in / {n = $1}
    /Requests\/sec/ {rps = $2}
    END {printf "%s\t%.2f\n", rps, ticks / hz * 1e6 / n}' <<<"$out"
}

: > "$OUT/samples.tsv"
# Warm up every listener (V8 tiers up the hot functions).
for port in $NONE $ONE $COHORT; do wrk -t1 -c4 -d2s "http://127.0.0.1:$port/" >/dev/null; done
for round in $(seq "$ROUNDS"); do
  printf '%s\tnone\t%s\n' "$round" "$(run "$NONE" "$COOKIE")" >> "$OUT/samples.tsv"
  printf '%s\tone-header\t%s\n' "$round" "$(run "$ONE" "$COOKIE")" >> "$OUT/samples.tsv"
  printf '%s\tcohort\t%s\n' "$round" "$(run "$COHORT" "$COOKIE")" >> "$OUT/samples.tsv"
  printf '%s\tcohort-new-user\t%s\n' "$round" "$(run "$COHORT")" >> "$OUT/samples.tsv"
done

python3 - "$OUT/samples.tsv" "$FILTER_WASM" <<'PY' | tee "$OUT/results.txt"
import os, statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
rps, cpu = {}, {}
for _, name, r, c in rows:
    rps.setdefault(name, []).append(float(r))
    cpu.setdefault(name, []).append(float(c))
m = {k: statistics.median(v) for k, v in rps.items()}
c = {k: statistics.median(v) for k, v in cpu.items()}
size = os.path.getsize(sys.argv[2])
print(f"{'listener':<17}{'median req/s':>13}{'CPU us/req':>12}   req/s samples")
for k in ['none', 'one-header', 'cohort', 'cohort-new-user']:
    print(f"{k:<17}{m[k]:>13.0f}{c[k]:>12.1f}   {' '.join(f'{x:.0f}' for x in rps[k])}")
def ratio(a, b):
    return m[a] / m[b], c[b] / c[a]
for a, b, target in [('cohort', 'one-header', 0.90), ('cohort', 'none', 0.70),
                     ('cohort-new-user', 'one-header', None), ('cohort-new-user', 'none', None)]:
    t, e = ratio(a, b)
    goal = f" (target >= {target:.2f})" if target else ""
    print(f"{a} / {b}: throughput {t:.3f}, by CPU per request {e:.3f}{goal}")
print(f".wasm size: {size} bytes (target <= 204800)")
t1, e1 = ratio('cohort', 'one-header')
t0, e0 = ratio('cohort', 'none')
ok = t1 >= 0.90 and t0 >= 0.70 and size <= 204800
print("targets met" if ok else "TARGETS MISSED (throughput)")
sys.exit(0 if ok else 1)
PY
