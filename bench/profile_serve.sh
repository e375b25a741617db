#!/usr/bin/env bash
# Starts the whole system locally (`lmrec serve`, temp state dir, free ports), measures the end-to-end
# load curve (bench/e2e_load_curve.py), then profiles the ranking worker and the gateway with py-spy
# under an open-loop load, and stops what it started, by PID.
#
#   bench/profile_serve.sh                      # curve at 5..60 req/s, then py-spy at 30 req/s for 20 s
#   RATES=5,10,20,30 PROFILE_RATE=30 PROFILE_S=20 CURVE_S=15 bench/profile_serve.sh
#   CURVE=0 bench/profile_serve.sh              # profile only
#   STATE=/tmp/lmrec-bench bench/profile_serve.sh   # keep (and reuse) the state dir: the first start
#                                                   # loads ML-100K (minutes on 2 busy cores), later ones not
#
# Outputs: docs/benchmarks/load_curve.{png,json}, docs/benchmarks/profile_{ranking,gateway}.svg
# (flame graphs) and .speedscope.json, docs/benchmarks/profile_load.json (the load during profiling).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
PYSPY="${PYSPY:-$(dirname "$PY")/py-spy}"
OUT="${OUT:-$REPO/docs/benchmarks}"
RATES="${RATES:-5,10,20,30,40,60}"
CURVE_S="${CURVE_S:-15}"
CURVE="${CURVE:-1}"
PROFILE_RATE="${PROFILE_RATE:-30}"
PROFILE_S="${PROFILE_S:-20}"
SAMPLE_HZ="${SAMPLE_HZ:-100}"
LABEL="${LABEL:-zero-shot MiniLM INT8, 1 shard, k=10 over 200 candidates}"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GATEWAY_PORT="$(free_port)"; RANKING_PORT="$(free_port)"; RETRIEVAL_PORT="$(free_port)"
STARTUP_S="${STARTUP_S:-900}"
KEEP_STATE=1
if [ -z "${STATE:-}" ]; then STATE="$(mktemp -d /tmp/lmrec-profile.XXXXXX)"; KEEP_STATE=0; fi
mkdir -p "$STATE"
SERVE_LOG="$STATE/serve.log"

cd "$REPO"
"$PY" -m lmrec_tools.cli serve --state-dir "$STATE/var" --port "$GATEWAY_PORT" --ranking-port "$RANKING_PORT" \
    --retrieval-port "$RETRIEVAL_PORT" --no-sample ${BUNDLE:+--bundle "$BUNDLE"} >"$SERVE_LOG" 2>&1 &
SERVE_PID=$!
stop() {
    if kill -0 "$SERVE_PID" 2>/dev/null; then
        kill -INT "$SERVE_PID"   # lmrec serve stops its children in order on Ctrl-C
        wait "$SERVE_PID" || true
    fi
    if [ "$KEEP_STATE" = 0 ]; then rm -rf "$STATE"; fi
}
trap stop EXIT

for _ in $(seq 1 $((STARTUP_S * 2))); do
    grep -q "lmrec is serving on" "$SERVE_LOG" && break
    kill -0 "$SERVE_PID" 2>/dev/null || { cat "$SERVE_LOG"; echo "lmrec serve exited" >&2; exit 1; }
    sleep 0.5
done
grep -q "lmrec is serving on" "$SERVE_LOG" || { cat "$SERVE_LOG"; echo "lmrec serve did not start" >&2; exit 1; }
pid_of() { awk -v name="$1" '$1 == name { for (i = 1; i <= NF; i++) if ($i == "(pid") { sub(",", "", $(i + 1)); print $(i + 1) } }' "$SERVE_LOG"; }
RANKING_PID="$(pid_of ranking)"; GATEWAY_PID="$(pid_of gateway)"
echo "serving: gateway 127.0.0.1:$GATEWAY_PORT (pid $GATEWAY_PID), ranking pid $RANKING_PID, state $STATE" >&2

if [ "$CURVE" = 1 ]; then
    "$PY" bench/e2e_load_curve.py --target "127.0.0.1:$GATEWAY_PORT" --rates "$RATES" --duration "$CURVE_S" \
        --label "$LABEL" --png "$OUT/load_curve.png" --json "$OUT/load_curve.json"
    sleep 2
fi

# py-spy attaches by PID (needs ptrace permission on the target). --nonblocking samples without
# pausing the process, so the profile does not add to the latencies it explains.
PROFILE_TOTAL_S=$((PROFILE_S + 4))
"$PY" -m lmrec_tools.cli loadtest --target "127.0.0.1:$GATEWAY_PORT" --rate "$PROFILE_RATE" --duration "$PROFILE_TOTAL_S" \
    --json >"$OUT/profile_load.json" &
LOAD_PID=$!
sleep 2
SPY_PIDS=()
for svc in ranking gateway; do
    pid="$RANKING_PID"; [ "$svc" = gateway ] && pid="$GATEWAY_PID"
    "$PYSPY" record --nonblocking --threads --rate "$SAMPLE_HZ" --duration "$PROFILE_S" --pid "$pid" \
        --format flamegraph --output "$OUT/profile_$svc.svg" >"$STATE/pyspy_$svc.log" 2>&1 &
    SPY_PIDS+=($!)
    "$PYSPY" record --nonblocking --rate "$SAMPLE_HZ" --duration "$PROFILE_S" --pid "$pid" \
        --format speedscope --output "$OUT/profile_$svc.speedscope.json" >"$STATE/pyspy_${svc}_speedscope.log" 2>&1 &
    SPY_PIDS+=($!)
done
status=0
for p in "${SPY_PIDS[@]}"; do wait "$p" || status=1; done
wait "$LOAD_PID"
if [ "$status" != 0 ]; then
    cat "$STATE"/pyspy_*.log >&2
    echo "py-spy failed (see above)" >&2
    exit 1
fi
"$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print("load during profiling:", d["count"], "calls,", d["errors"], "errors, latencyMs", d["latencyMs"])' \
    "$OUT/profile_load.json" >&2
