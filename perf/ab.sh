#!/usr/bin/env bash
# A/B: the product scenario against two server builds, alternating, in one run (server pinned to CPU 0,
# generator to CPU 1). Usage: perf/ab.sh OUT_DIR, with the builds at /tmp/tickwire-before and /tmp/tickwire-after.
set -u
cd "$(dirname "$0")/.."
out=$1
mkdir -p "$out"
tok=$(/tmp/tickwire-after token --sub p --role publisher --jwt-secret s)
for round in 1 2; do
for name in before after; do
  taskset -c 0 /tmp/tickwire-$name --listen 127.0.0.1:18090 --shards 1 --no-simulator --jwt-secret s 2>/tmp/ab-srv.log &
  pid=$!
  for i in $(seq 1 50); do grep -q "listening on" /tmp/ab-srv.log && break; sleep 0.1; done
  taskset -c 1 target/release/tickwire-load fanout --target 127.0.0.1:18090 --connections 10000 --symbols 100 --subs-per-conn 1 --rate 1000 --duration-s 20 --publish-token $tok --server-pid $pid --json $out/$name-$round.json > /dev/null 2>&1
  kill $pid; wait $pid 2>/dev/null
  python3 -c "import json;r=json.load(open('$out/$name-$round.json'));print('$name',$round,'cpu',r['server_cpu_pct'],'p50',r['p50_us'],'p99',r['p99_us'],'p999',r['p999_us'],'lost',r['lost'],'deliv/s',r['delivered_per_s'])"
  sleep 2
done; done
