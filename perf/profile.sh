#!/usr/bin/env bash
# Where a server's CPU goes at a fanout load: system calls counted (perf stat) and a sampled profile
# (perf record -g), over 4 s each in the middle of the load. The server is pinned to CPU 0, tickwire-load
# to CPU 1, as in perf/compare.sh.
#
#   perf/profile.sh TARGET OUT_DIR     TARGET: tickwire (BIN=path to pick a build; default
#                                      target/release/tickwire) or bun (perf/peers, perf/peers/install.sh)
#   CONNS=10000 RATE=1000 DURATION_S=20 WAIT_S=12   the load (defaults: the product scenario) and when to
#                                      start measuring
#
# Writes OUT_DIR/load.txt (the generator's summary), stat.txt (system calls, context switches, task
# clock), dso.txt and sym.txt (perf report by binary and by symbol, no children), perf.data.
set -euo pipefail
cd "$(dirname "$0")/.."
t=$1 out=$2 port=${PORT:-9101}
conns=${CONNS:-10000} rate=${RATE:-1000} duration=${DURATION_S:-20}
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
case $t in
  tickwire) taskset -c 0 "${BIN:-target/release/tickwire}" --listen "127.0.0.1:$port" --shards 1 --no-simulator \
              --jwt-secret profile 2>/dev/null & ;;
  bun) taskset -c 0 perf/peers/node_modules/.bin/bun perf/peers/bun/server.js "$port" >/dev/null 2>&1 & ;;
  *) echo "unknown target $t" >&2; exit 2 ;;
esac
pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
token=$(target/release/tickwire token --sub profile --role publisher --jwt-secret profile)
taskset -c 1 target/release/tickwire-load fanout --target "127.0.0.1:$port" --connections "$conns" --symbols 100 \
  --subs-per-conn 1 --rate "$rate" --duration-s "$duration" --publish-token "$token" --server-pid "$pid" \
  --json "$out/load.json" >"$out/load.txt" 2>&1 &
load=$!
sleep "${WAIT_S:-12}"
perf stat -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_recvfrom,raw_syscalls:sys_enter,context-switches,task-clock' \
  -p "$pid" -- sleep 4 2>"$out/stat.txt"
perf record -F 999 -g -p "$pid" -o "$out/perf.data" -- sleep 4 >/dev/null 2>&1
wait "$load"
kill "$pid"
wait "$pid" 2>/dev/null || true
perf report -i "$out/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12 >"$out/dso.txt"
perf report -i "$out/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40 >"$out/sym.txt"
grep -E 'delivered|lost|p99 /|server CPU' "$out/load.txt"
