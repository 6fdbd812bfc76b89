#!/bin/bash
L=${L:-/tmp/bins/load-73edb43}
R=$1; shift
for r in $(seq 1 $R); do for B in "$@"; do
  taskset -c 0 $B --listen 127.0.0.1:18182 --shards 1 --no-simulator --jwt-secret s > /tmp/srv.log 2>&1 & SP=$!
  for i in $(seq 50); do grep -q "listening on" /tmp/srv.log && break; sleep 0.1; done
  out=$(taskset -c 1 $L idle --target 127.0.0.1:18182 --connections 10000 --server-pid $SP 2>&1 | grep -iE "per conn|rss")
  echo "round $r $(basename $B): $(echo $out | tr -s ' ')"
  kill $SP; wait $SP 2>/dev/null
done; done
