#!/usr/bin/env bash
# Counts the load generator's instructions (valgrind --tool=callgrind) over the fixed fanout load of
# perf/callgrind.sh, the server running natively: the generator's cost per received delivery, repeatable on a
# noisy machine.
#
#   perf/callgrind-load.sh GENERATOR_BINARY OUT_FILE
#
# Server: this checkout's target/release/tickwire, one shard. Load: 500 connections, 50 symbols, 2
# subscriptions each, 500 events/s for 20 s (200,000 deliveries). Prints the deliveries, the loss and the
# generator's total instructions.
set -euo pipefail
cd "$(dirname "$0")/.."
gen=$1
out=$2
port=${PORT:-18281}
log=$(mktemp)
target/release/tickwire --listen "127.0.0.1:$port" --shards 1 --no-simulator --jwt-secret callgrind >"$log" 2>&1 &
server=$!
for _ in $(seq 1 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
token=$(target/release/tickwire token --sub load --role publisher --jwt-secret callgrind)
valgrind --tool=callgrind --callgrind-out-file="$out" "$gen" fanout --target "127.0.0.1:$port" --connections 500 \
  --symbols 50 --subs-per-conn 2 --rate 500 --duration-s 20 --publish-token "$token" --json "$out.json" 2>&1 |
  grep -E 'delivered|lost'
kill -TERM "$server"
wait "$server" 2>/dev/null || true
rm -f "$log"
callgrind_annotate "$out" 2>/dev/null | grep 'PROGRAM TOTALS'
