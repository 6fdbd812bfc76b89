#!/bin/bash
# usage: storm.sh ROUNDS bin1 bin2 ... ; generator L
L=${L:-/tmp/bins/load-44238ba}
R=$1; shift
for r in $(seq 1 $R); do for B in "$@"; do
  taskset -c 0 $B --listen 127.0.0.1:18182 --shards 1 --no-simulator --jwt-secret s > /tmp/srv.log 2>&1 & SP=$!
  for i in $(seq 50); do grep -q "listening on" /tmp/srv.log && break; sleep 0.1; done
  T=$($B token --sub p --role publisher --jwt-secret s)
  a=$(awk '{print $14+$15}' /proc/$SP/stat)
  out=$(taskset -c 1 $L storm --target 127.0.0.1:18182 --connections 10000 --symbols 100 --publish-token "$T" --server-pid $SP 2>&1 | grep -E "subscribed after|resumed")
  b=$(awk '{print $14+$15}' /proc/$SP/stat)
  echo "round $r $(basename $B): $(echo $out | tr -s ' ') server_cpu_s=$(echo "scale=2;($b-$a)/100" | bc)"
  kill $SP; wait $SP 2>/dev/null
done; done
