#!/bin/bash
# usage: RATE=.. fan.sh OUTDIR bin...   (bun as a name)
cd /tmp/ci
OUT=$1; shift; mkdir -p $OUT
RATE=${RATE:-1000}; L=/tmp/bins/load-e378cf3
SECRET=compare-secret; token=$(target/release/tickwire token --sub compare --role publisher --jwt-secret "$SECRET")
for B in "$@"; do
  name=$(basename $B)
  if [ "$B" = bun ]; then taskset -c 0 perf/peers/node_modules/.bin/bun perf/peers/bun/server.js 9001 >/dev/null 2>&1 &
  else taskset -c 0 $B --listen 127.0.0.1:9001 --shards 1 --no-simulator --jwt-secret "$SECRET" 2>/dev/null & fi
  pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/9001") 2>/dev/null && break; sleep 0.1; done
  taskset -c 1 $L fanout --rate $RATE --duration-s 20 --target 127.0.0.1:9001 --name $name --protocol tickwire \
    --connections 10000 --symbols 100 --subs-per-conn 1 --publish-token "$token" --server-pid $pid --json $OUT/$name.json > $OUT/$name.txt 2>&1
  echo "$name: $(grep -E "delivered|p99 /|lost|server CPU|server RSS" $OUT/$name.txt | tr -s ' ' | tr '\n' ';')"
  kill $pid; wait $pid 2>/dev/null; sleep 1
done
