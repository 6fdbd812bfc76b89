#!/bin/bash
# The generator's system calls and CPU over 8 s in the middle of a fanout run, against each target.
cd /tmp/ci
RATE=${RATE:-500}; L=/tmp/bins/load-dfc342c
SECRET=compare-secret; token=$(target/release/tickwire token --sub compare --role publisher --jwt-secret "$SECRET")
for B in "$@"; do
  name=$(basename $B)
  if [ "$B" = bun ]; then taskset -c 0 perf/peers/node_modules/.bin/bun perf/peers/bun/server.js 9001 >/dev/null 2>&1 &
  else taskset -c 0 $B --listen 127.0.0.1:9001 --shards 1 --no-simulator --jwt-secret "$SECRET" 2>/dev/null & fi
  pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/9001") 2>/dev/null && break; sleep 0.1; done
  taskset -c 1 $L fanout --rate $RATE --duration-s 20 --target 127.0.0.1:9001 --name $name --protocol tickwire \
    --connections 10000 --symbols 100 --subs-per-conn 1 --publish-token "$token" --server-pid $pid > /tmp/gensys-$name.txt 2>&1 &
  lp=$!
  sleep 14
  gp=$(pgrep -f "load-dfc342c fanout" | head -1)
  perf stat -e 'syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_sendto,syscalls:sys_enter_write,task-clock' -p $gp -o /tmp/gensys-stat-$name.txt -- sleep 8
  wait $lp
  echo "$name: $(grep -E "delivered|p99 /|server CPU|loop lag" /tmp/gensys-$name.txt | tr -s ' ' | tr '\n' ';')"
  grep -E "sys_enter|task-clock" /tmp/gensys-stat-$name.txt
  kill $pid; wait $pid 2>/dev/null; sleep 1
done
