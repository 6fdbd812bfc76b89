#!/usr/bin/env bash
# Scale-out on the bus, measured in one run (issue 15; docs/scale-out.md): the same fanout scenario
# against one node without a bus, one node with the bus (the hop's added latency), and two nodes with the
# bus, the subscribers spread over both and the publisher on the first (the same total load).
#
#   perf/cluster.sh                                  # 2,000 connections, 1,000 updates/s: 20,000 deliveries/s
#   CONNS=10000 RATE=1000 DURATION_S=20 perf/cluster.sh    # the product scenario (100,000 deliveries/s)
#
# Starts a nats-server of its own (JetStream, a temporary store). The nodes are pinned to CPU 0, the
# generator and nats-server to CPU 1 (SERVER_CPUS, LOAD_CPUS, NATS_CPUS): on two cores, nats-server beside
# two nodes saturated their core and queued updates for half a second. Writes one JSON report per configuration, the
# table with ratios, each node's bus figures (updates stored and applied per second, topics followed) and
# the CPU of nats-server into $OUT/README.md, then `tickwire-load plan` with the bus report.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-1000}
DURATION_S=${DURATION_S:-20}
WARMUP_S=${WARMUP_S:-3}
CONNS=${CONNS:-2000}
SYMBOLS=${SYMBOLS:-100}
SUBS=${SUBS:-1}
OUT=${OUT:-perf/reports/cluster}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
NATS_CPUS=${NATS_CPUS:-$LOAD_CPUS}
ONLY=${ONLY:-}
NATS_PORT=${NATS_PORT:-4333}
SECRET=cluster-secret

command -v nats-server >/dev/null || { echo "nats-server is needed (Debian: apt-get install nats-server)" >&2; exit 2; }
cargo build --release --quiet -p tickwire-net -p tickwire-perf
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" || true
load=target/release/tickwire-load
TICKWIRE_PUBLISH_TOKEN=$(target/release/tickwire token --sub cluster --role publisher --jwt-secret "$SECRET")
export TICKWIRE_PUBLISH_TOKEN
store=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$store"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2
  return 1
}

# CPU seconds a process has used (user + system), from /proc.
cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

taskset -c "$NATS_CPUS" nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$store" >/dev/null 2>&1 &
nats=$!
pids+=("$nats")
wait_port "$NATS_PORT"

# start_node PORT [--bus URL]: a node of one shard; prints its PID.
start_node() {
  local port=$1
  shift
  env -u TICKWIRE_PUBLISH_TOKEN taskset -c "$SERVER_CPUS" target/release/tickwire --listen "127.0.0.1:$port" \
    --shards 1 --no-simulator --jwt-secret "$SECRET" "$@" >/dev/null 2>&1 &
  echo $!
}

bus_status() {
  curl -s "http://127.0.0.1:$1/api/ws/status" | python3 -c 'import json,sys; b=json.load(sys.stdin)["bus"]; print(b.get("stored",0), b.get("applied",0), b.get("followed",0))'
}

run() { # NAME PUBLISHER_PORT [SUBSCRIBER_PORTS...] -- env: PIDS (server pids, the publisher's first)
  local name=$1 port=$2
  shift 2
  local targets=() others=()
  for p in "$@"; do targets+=("127.0.0.1:$p"); done
  read -r -a ps <<<"$PIDS"
  others=("${ps[@]:1}")
  local extra=()
  [ ${#targets[@]} -gt 1 ] && extra+=(--subscriber-targets "$(IFS=,; echo "${targets[*]}")")
  [ ${#others[@]} -gt 0 ] && extra+=(--cluster-pids "$(IFS=,; echo "${others[*]}")")
  taskset -c "$LOAD_CPUS" "$load" fanout --rate "$RATE" --duration-s "$DURATION_S" --warmup-s "$WARMUP_S" \
    --target "127.0.0.1:$port" \
    --name "$name" --connections "$CONNS" --symbols "$SYMBOLS" --subs-per-conn "$SUBS" \
    --server-pid "${ps[0]}" "${extra[@]}" --json "$OUT/$name.json" --fail-on-loss
}

if [ -z "$ONLY" ]; then
echo "== one node, no bus"
single=$(start_node 9101)
pids+=("$single")
wait_port 9101
PIDS=$single run single 9101
kill -TERM "$single"

echo "== one node, with the bus"
one=$(start_node 9111 --bus "nats://127.0.0.1:$NATS_PORT")
pids+=("$one")
wait_port 9111
PIDS=$one run one-node-bus 9111
kill -TERM "$one"
fi

echo "== two nodes, with the bus: subscribers on both, the publisher on the first"
a=$(start_node 9121 --bus "nats://127.0.0.1:$NATS_PORT")
b=$(start_node 9122 --bus "nats://127.0.0.1:$NATS_PORT")
pids+=("$a" "$b")
wait_port 9121
wait_port 9122
read -r sa aa _ <<<"$(bus_status 9121)"
read -r sb ab _ <<<"$(bus_status 9122)"
nats_before=$(cpu_s "$nats")
started=$(date +%s.%N)
PIDS="$a $b" run two-nodes-bus 9121 9121 9122
elapsed=$(python3 -c "import time; print(time.time() - $started)")
nats_after=$(cpu_s "$nats")
read -r sa2 aa2 fa <<<"$(bus_status 9121)"
read -r sb2 ab2 fb <<<"$(bus_status 9122)"
kill -TERM "$a" "$b"

commit=$(git rev-parse --short HEAD)
{
  echo "# Scale-out on the bus: one node, one node with the bus, two nodes with the bus"
  echo
  echo "Commit $commit on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%Y-%m-%d)."
  echo "Command: \`CONNS=$CONNS RATE=$RATE DURATION_S=$DURATION_S WARMUP_S=$WARMUP_S SYMBOLS=$SYMBOLS SUBS=$SUBS perf/cluster.sh\`"
  echo "(nodes of one shard pinned to CPU $SERVER_CPUS, the generator to CPU $LOAD_CPUS, nats-server to CPU $NATS_CPUS; latency from"
  echo "the publisher's send to each subscriber's receipt, so the bus hop is inside it; the server CPU of the"
  echo "two-node run is both nodes', nats-server's is below)."
  echo
  "$load" compare "$OUT/single.json" "$OUT/one-node-bus.json" "$OUT/two-nodes-bus.json" --baseline single
  echo
  echo "## The bus during the two-node run"
  echo
  echo "| node | updates it sequenced and stored/s | updates and acks it applied/s |"
  echo "|---|---|---|"
  python3 - "$elapsed" "$sa" "$sa2" "$aa" "$aa2" "$fa" "$sb" "$sb2" "$ab" "$ab2" "$fb" <<'EOF'
import sys
t = float(sys.argv[1])
a = [float(x) for x in sys.argv[2:]]
for name, (s0, s1, a0, a1, _) in (("A (publisher's)", a[0:5]), ("B", a[5:10])):
    print(f"| {name} | {(s1 - s0) / t:.0f} | {(a1 - a0) / t:.0f} |")
EOF
  python3 -c "print(f'\nnats-server used {($nats_after - $nats_before) / $elapsed * 100:.1f}% of a core over the two-node run ({$elapsed:.0f} s, connections and subscriptions included).')"
  echo
  echo "## Capacity plan with the bus"
  echo
  echo '```'
  "$load" plan --fanout-report "$OUT/single.json" --idle-report perf/reports/idle-tickwire.json \
    --bus-report "$OUT/two-nodes-bus.json" --updates-per-s 10000 --connections 1000000 --deliveries-per-s 10000000 2>&1 | grep -v '^ *[0-9]*: \|^ *at ' || true
  echo '```'
  echo
  echo "(\`tickwire-load plan --fanout-report $OUT/single.json --idle-report perf/reports/idle-tickwire.json"
  echo "--bus-report $OUT/two-nodes-bus.json --updates-per-s 10000 --connections 1000000 --deliveries-per-s 10000000\`)"
} > "$OUT/README.md"
cat "$OUT/README.md"
