#!/usr/bin/env bash
# Counts the server's instructions (valgrind --tool=callgrind) over one fixed fanout load, so that two builds
# can be compared repeatably on a noisy machine: instructions do not depend on what else runs.
#
#   perf/callgrind.sh SERVER_BINARY OUT_FILE
#
# Load: 500 connections, 50 symbols, 2 subscriptions each, 500 events/s for 20 s (200,000 deliveries),
# from target/release/tickwire-load. Prints the deliveries, the loss and the program's total instructions.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1
out=$2
port=${PORT:-18081}
log=$(mktemp)
valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --listen "127.0.0.1:$port" --shards 1 \
  --no-simulator --jwt-secret callgrind >"$log" 2>&1 &
for _ in $(seq 1 100); do grep -q 'listening on' "$log" && break; sleep 0.2; done
token=$(target/release/tickwire token --sub load --role publisher --jwt-secret callgrind)
target/release/tickwire-load fanout --target "127.0.0.1:$port" --connections 500 --symbols 50 --subs-per-conn 2 \
  --rate 500 --duration-s 20 --publish-token "$token" --json "$out.json" 2>&1 | grep -E 'delivered|lost'
pkill -INT -f "valgrind.*127.0.0.1:$port" || true
for _ in $(seq 1 50); do pgrep -f "valgrind.*127.0.0.1:$port" >/dev/null || break; sleep 0.2; done
callgrind_annotate "$out" 2>/dev/null | grep 'PROGRAM TOTALS'
