#!/usr/bin/env bash
# The same scenario against tickwire (one shard) and each peer, side by side, in one run.
#
#   perf/compare.sh                       # saturation search, all targets, 2,000 connections
#   CONNS=10000 perf/compare.sh tickwire bun
#   MODE=fanout CONNS=10000 RATE=1000 DURATION_S=20 OUT=perf/reports/product perf/compare.sh
#                                         # the product scenario: a fixed 100,000 deliveries/s
#   MODE=fanout CONNS=10000 RATE=1000 OUT=perf/reports/compression perf/compare.sh tickwire tickwire-deflate
#                                         # the same server, its clients with and without permessage-deflate
#
# Installs what the peers need (perf/peers/install.sh), builds tickwire and tickwire-load in release,
# then for each target: starts it pinned to CPU 0, runs `tickwire-load saturate` pinned to CPU 1, stops
# it. Writes one JSON and Markdown report per target and the table with ratios to $OUT/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-saturate}
RATE=${RATE:-1000}
DURATION_S=${DURATION_S:-20}
CONNS=${CONNS:-2000}
SYMBOLS=${SYMBOLS:-100}
SUBS=${SUBS:-1}
START_RATE=${START_RATE:-100}
FACTOR=${FACTOR:-1.5}
STEP_S=${STEP_S:-4}
OUT=${OUT:-perf/reports/compare}
PORT=${PORT:-9001}
SECRET=compare-secret
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tickwire bun socketify nats node-ws python-websockets)

perf/peers/install.sh
cargo build --release --quiet -p tickwire-net -p tickwire-perf
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" || true
load=target/release/tickwire-load
py=perf/peers/.venv/bin/python
# The publisher's token goes by the environment, not the command line the reports quote.
TICKWIRE_PUBLISH_TOKEN=$(target/release/tickwire token --sub compare --role publisher --jwt-secret "$SECRET")
export TICKWIRE_PUBLISH_TOKEN

start_target() {
  case "$1" in
    tickwire | tickwire-deflate) env -u TICKWIRE_PUBLISH_TOKEN taskset -c 0 target/release/tickwire --listen "127.0.0.1:$PORT" --shards 1 --no-simulator \
                --jwt-secret "$SECRET" 2>/dev/null & ;;
    bun) taskset -c 0 perf/peers/node_modules/.bin/bun perf/peers/bun/server.js "$PORT" >/dev/null 2>&1 & ;;
    socketify) taskset -c 0 "$py" perf/peers/socketify/server.py "$PORT" >/dev/null 2>&1 & ;;
    node-ws) taskset -c 0 node perf/peers/node-ws/server.js "$PORT" >/dev/null 2>&1 & ;;
    python-websockets) taskset -c 0 "$py" perf/peers/python-websockets/server.py "$PORT" >/dev/null 2>&1 & ;;
    nats) sed "s/port: 9001/port: $PORT/" perf/peers/nats/nats.conf > "$OUT/.nats.conf"
          GOMAXPROCS=1 taskset -c 0 nats-server -c "$OUT/.nats.conf" >/dev/null 2>&1 & ;;
    *) echo "unknown target $1" >&2; exit 2 ;;
  esac
  pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.1; done
  echo "$1 did not start on port $PORT" >&2
  return 1
}

for t in "${targets[@]}"; do
  echo "== $t"
  start_target "$t"
  protocol=tickwire
  [ "$t" = nats ] && protocol=nats
  # tickwire-deflate: the same server; its clients offer permessage-deflate and inflate what they get.
  compress=()
  [ "$t" = tickwire-deflate ] && compress=(--compress)
  if [ "$MODE" = fanout ]; then
    scenario=(fanout --rate "$RATE" --duration-s "$DURATION_S")
  else
    scenario=(saturate --start-rate "$START_RATE" --factor "$FACTOR" --step-s "$STEP_S")
  fi
  taskset -c 1 "$load" "${scenario[@]}" --target "127.0.0.1:$PORT" --name "$t" --protocol "$protocol" \
    --connections "$CONNS" --symbols "$SYMBOLS" --subs-per-conn "$SUBS" \
    --server-pid "$pid" --json "$OUT/$t.json" --report "$OUT" "${compress[@]}" || echo "$t: the run failed (kept going)"
  if [[ "$t" == tickwire* ]]; then
    # Bytes the server handed to its sockets, and frames it deflated, over the whole run.
    curl -s "http://127.0.0.1:$PORT/metrics" \
      | awk '/^tickwire_(written_bytes|deflated_frames|written_frames)_total/ { split($1, n, "{"); s[n[1]] += $NF }
             END { for (k in s) printf "%s %d\n", k, s[k] }' | sort > "$OUT/$t.wire"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 1
done
rm -f "$OUT/.nats.conf"

reports=()
for t in "${targets[@]}"; do [ -f "$OUT/$t.json" ] && reports+=("$OUT/$t.json"); done
if [ ! -f "$OUT/tickwire.json" ] || [[ " ${targets[*]} " != *" tickwire "* ]]; then
  echo "no tickwire run in this comparison: no ratio table (ratios come from one run only)"
  exit 0
fi
{
  echo "# tickwire and its peers, side by side"
  echo
  if [ "$MODE" = fanout ]; then
    echo "Command: \`MODE=fanout CONNS=$CONNS SYMBOLS=$SYMBOLS SUBS=$SUBS RATE=$RATE DURATION_S=$DURATION_S OUT=$OUT perf/compare.sh ${targets[*]}\`"
  else
    echo "Command: \`CONNS=$CONNS SYMBOLS=$SYMBOLS SUBS=$SUBS START_RATE=$START_RATE FACTOR=$FACTOR STEP_S=$STEP_S perf/compare.sh ${targets[*]}\`"
  fi
  echo
  "$load" compare --baseline tickwire "${reports[@]}"
  echo
  echo "Per target: \`$MODE-<target>.md\` (plots) and \`<target>.json\`."
} > "$OUT/README.md"
cat "$OUT/README.md"
