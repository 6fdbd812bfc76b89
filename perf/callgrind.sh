#!/usr/bin/env bash
# Counts instructions (valgrind --tool=callgrind) over one fixed load, so that two builds can be compared
# repeatably on a noisy machine: instructions do not depend on what else runs.
#
#   perf/callgrind.sh SERVER_BINARY OUT_FILE                the server under callgrind, the generator native
#   perf/callgrind.sh --generator GENERATOR_BINARY OUT_FILE the generator under callgrind, the server native
#                                                           (this checkout's target/release/tickwire)
#   IDLE=N perf/callgrind.sh SERVER_BINARY OUT_FILE         the server under callgrind while N connections
#                                                           open, subscribe, stay 2 s and close
#
# Load: 500 connections, SYMBOLS symbols (50), 2 subscriptions each, RATE events/s (500) for 20 s (200,000
# deliveries with the defaults), from target/release/tickwire-load unless measured. perf/gate.sh runs
# SYMBOLS=10 RATE=100: the same 200,000 deliveries, 100 per event, with the server under valgrind left time
# to spare between events, so that the count does not depend on how many events one loop pass happens to take. Prints the deliveries, the loss and the measured program's
# total instructions; the generator's report is OUT_FILE.json.
set -euo pipefail
cd "$(dirname "$0")/.."
server=target/release/tickwire load=target/release/tickwire-load under_server=(valgrind --tool=callgrind) under_load=()
if [ "$1" = --generator ]; then
  shift
  load=$1 under_server=() under_load=(valgrind --tool=callgrind --callgrind-out-file="$2")
else
  server=$1 under_server+=(--callgrind-out-file="$2")
fi
out=$2
port=${PORT:-18081}
log=$(mktemp)
# The server's defaults (the in-memory store) whatever the environment: CI exports DATABASE_URL for its
# tests, and a server writing its connections to PostgreSQL counts other instructions.
env -u DATABASE_URL "${under_server[@]}" "$server" --listen "127.0.0.1:$port" --shards 1 --no-simulator \
  --jwt-secret callgrind >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q 'listening on' "$log" && break; sleep 0.2; done
if [ -n "${IDLE:-}" ]; then
  "${under_load[@]}" "$load" idle --target "127.0.0.1:$port" --connections "$IDLE" --symbols 50 --subs-per-conn 2 \
    --settle-s 2 --server-pid "$pid" --json "$out.json" 2>&1 | grep -E 'connections|RSS per'
else
  token=$(target/release/tickwire token --sub load --role publisher --jwt-secret callgrind)
  "${under_load[@]}" "$load" fanout --target "127.0.0.1:$port" --connections 500 --symbols "${SYMBOLS:-50}" --subs-per-conn 2 \
    --rate "${RATE:-500}" --duration-s 20 --publish-token "$token" --json "$out.json" 2>&1 | grep -E 'delivered|lost'
fi
kill -INT "$pid" 2>/dev/null || true
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
rm -f "$log"
callgrind_annotate "$out" 2>/dev/null | grep 'PROGRAM TOTALS'
