#!/usr/bin/env bash
# A/B: one scenario against two or more server variants, alternating, in one run (the machine's speed
# drifts, so variants are only compared side by side). Writes OUT/README.md (every run, then the medians)
# and each run's JSON report.
#
# Usage: perf/ab.sh OUT_DIR VARIANT VARIANT...
#   VARIANT: the path of a tickwire binary named tickwire-<commit>, optionally followed by settings for the
#   server's environment: /tmp/tickwire-0b6c436:TICKWIRE_PREEMPT_US=250. The report labels each variant by
#   its commit and settings.
# Settings (environment):
#   SHARDS (1)        server shards
#   PIN (1)           1: server on CPU 0, generator on CPU 1 (PERFORMANCE.md); 0: nothing pinned by taskset,
#                     the generator shares the server's cores (the shards still pin themselves)
#   CONNS (10000) SYMBOLS (100) SUBS (1) RATE (1000 events/s) DURATION_S (20) ROUNDS (2)
# The generator is this checkout's target/release/tickwire-load (cargo build --release -p tickwire-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1
shift
variants=("$@")
shards=${SHARDS:-1} pin=${PIN:-1} conns=${CONNS:-10000} symbols=${SYMBOLS:-100} subs=${SUBS:-1}
rate=${RATE:-1000} duration=${DURATION_S:-20} rounds=${ROUNDS:-2}
load=target/release/tickwire-load
mkdir -p "$out"
port=18090
if [ "$pin" = 1 ]; then srv_pin=(taskset -c 0); gen_pin=(taskset -c 1); else srv_pin=(); gen_pin=(); fi
ulimit -n 65536 2>/dev/null || true
first=${variants[0]%%:*}
tok=$("$first" token --sub ab --role publisher --jwt-secret ab)
for round in $(seq 1 "$rounds"); do
  for variant in "${variants[@]}"; do
    bin=${variant%%:*}
    settings=()
    [ "$variant" != "$bin" ] && IFS=: read -r -a settings <<<"${variant#*:}"
    name=$(basename "$bin"); name=${name#tickwire-}
    for kv in "${settings[@]}"; do name="$name+${kv#TICKWIRE_}"; done
    log=$(mktemp)
    env "${settings[@]}" "${srv_pin[@]}" "$bin" --listen 127.0.0.1:$port --shards "$shards" --no-simulator \
      --jwt-secret ab 2>"$log" &
    pid=$!
    for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
    "${gen_pin[@]}" "$load" fanout --target 127.0.0.1:$port --connections "$conns" --symbols "$symbols" \
      --subs-per-conn "$subs" --rate "$rate" --duration-s "$duration" --publish-token "$tok" --server-pid "$pid" \
      --json "$out/$name-$round.json" >/dev/null 2>&1 || echo "run $name $round failed"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    grep -E 'WARN|ERROR' "$log" | sed "s/^/[$name $round] /" >>"$out/server-warnings.log" || true
    rm -f "$log"
    port=$((port + 1))
    sleep 2
  done
done
cmd="SHARDS=$shards PIN=$pin CONNS=$conns SYMBOLS=$symbols SUBS=$subs RATE=$rate DURATION_S=$duration ROUNDS=$rounds perf/ab.sh $out ${variants[*]}"
python3 - "$out" "$cmd" "${variants[@]}" <<'EOF'
import json, os, statistics, sys
out, cmd, variants = sys.argv[1], sys.argv[2], sys.argv[3:]
def label(v):
    b, *kv = v.split(":")
    return "+".join([os.path.basename(b).removeprefix("tickwire-")] + [x.removeprefix("TICKWIRE_") for x in kv])
names = [label(v) for v in variants]
runs = {n: [] for n in names}
for f in sorted(os.listdir(out)):
    if f.endswith(".json"):
        name, _, rnd = f[:-5].rpartition("-")
        if name in runs:
            runs[name].append((int(rnd), json.load(open(os.path.join(out, f)))))
ms = lambda us: "-" if us is None else ("> 2500" if us >= 2**63 else f"{us / 1000:.2f}")
def lag(r, k):
    l = r.get("server_view")
    return None if not l or not l["samples"] else l[k]
def gen_lag(r):
    l = r.get("client_loop_lag_us")
    return "-" if not l else f"{ms(l[1])} / {ms(l[2])}"
def flush(r):
    v = r.get("server_view")
    return "-" if not v or not v.get("flush_samples") else f"{ms(v['flush_p99_us'])} / {ms(v['flush_p999_us'])}"
def stalls(r):
    l = r.get("server_view")
    if not l:
        return "-"
    if l.get("watchdog_wakeups") is not None:
        return f"watchdog signals (> 50 ms late): {l['watchdog_wakeups']}"
    return ", ".join(f"{c} {n}" for c, n in l["stalls"].items() if n) or "none"
any_run = next(r for v in runs.values() for _, r in v)
lines = [f"# A/B: {any_run['connections']} connections, {any_run['symbols']} symbols x {any_run['subs_per_conn']} subscriptions, {any_run['offered_rate']:.0f} events/s\n",
         f"- command: `{cmd}`",
         f"- variants: " + ", ".join(f"commit {n}" for n in names) + " (the server binary of each commit, release profile, with the settings after `+`)",
         f"- generator: tickwire-load of commit {any_run['commit']}",
         f"- machine: {any_run['machine']}",
         f"- date: {any_run['date']}\n",
         "Latency is from source (publish stamp) to client receive, over all deliveries. Ingest to flush is the server's",
         "own share of it (`tickwire_ingest_to_flush_seconds`: from sequencing to the socket, per write batch); the generator's",
         "loop lag is how late a 5 ms timer of the load generator's own thread fired (a late generator receives late). Loop lag is",
         "the server's `tickwire_shard_loop_lag_seconds` over the run (all figures from the server are bucket bounds;",
         "`-` where the build has no such figure);",
         "stalls are its ticks over 20 ms late, by cause; a build with the old watchdog shows how many times it",
         "signalled a shard whose timers were over 50 ms late (`tickwire_shard_wakeups_total`).\n",
         "| build | round | delivered/s | lost | p50 ms | p99 ms | p99.9 ms | max ms | server CPU | client CPU | generator loop lag p99.9 / max ms | ingest to flush p99 / p99.9 ms | loop lag p99 / p99.9 / max ms | stalls |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for n in names:
    for rnd, r in sorted(runs[n]):
        lines.append(f"| {n} | {rnd} | {r['delivered_per_s']:.0f} | {r['lost']} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | {ms(r['p999_us'])} | {ms(r['max_us'])} | {r['server_cpu_pct'] or 0:.1f}% | {r['client_cpu_pct'] or 0:.1f}% | {gen_lag(r)} | {flush(r)} | {ms(lag(r,'p99_us'))} / {ms(lag(r,'p999_us'))} / {ms(lag(r,'max_us'))} | {stalls(r)} |")
lines += ["", "Medians:", "", "| build | p50 ms | p99 ms | p99.9 ms | server CPU | lost (all runs) |", "|---|---|---|---|---|---|"]
for n in names:
    rs = [r for _, r in runs[n]]
    med = lambda k: statistics.median(r[k] for r in rs)
    lines.append(f"| {n} | {ms(med('p50_us'))} | {ms(med('p99_us'))} | {ms(med('p999_us'))} | {statistics.median(r['server_cpu_pct'] or 0 for r in rs):.1f}% | {sum(r['lost'] for r in rs)} |")
open(os.path.join(out, "README.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
