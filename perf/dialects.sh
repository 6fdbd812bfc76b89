#!/usr/bin/env bash
# The dialects under load (issue 13's acceptance), against one tickwire with the in-memory store:
#
#   perf/dialects.sh mixed   /v1/stream and /ws clients on the same quotes topics at once, one publisher:
#                            each dialect's deliveries, losses and latency, and the renders per update and
#                            dialect that /metrics counts (at most one per update for each dialect with
#                            subscribers, whatever their number)
#   perf/dialects.sh ws      10,000 auto-subscribed /ws clients, a 1 s price interval over 100 symbols:
#                            latency from each interval's close to receipt, and intervals lost
#   perf/dialects.sh private /ws/portfolio and /api/v1/ws clients of one user on its orders at once, one
#                            publisher of that user's orders: deliveries, losses, latency (/ws/portfolio's
#                            includes its batching window, portfolio_batch_ms 1000) and renders per update
#   perf/dialects.sh all     the four at once on one server: mixed's quotes and private's orders together
#
#   CANONICAL (mixed: /v1/stream clients, 1000), LEGACY (the /ws clients: mixed 1000, ws 10000),
#   PRIVATE (private: clients per dialect, 1000), SYMBOLS (100), RATE (events/s: 1000; private: 100 orders/s),
#   DURATION_S (20), SHARDS (2), OUT (perf/reports/dialects), COMPRESS (1: every client offers permessage-deflate
#   and inflates what comes deflated: give it an OUT of its own), BIN (the server binary: target/release/tickwire,
#   built first; another one, e.g. an older commit's, to compare builds)
#
# The server has both cores here (SHARDS=2), the generators share them: on this 2-core box the figures are
# those of a crowded machine. Writes the generators' JSON and Markdown reports and $OUT/<mode>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-mixed}
SYMBOLS=${SYMBOLS:-100}
RATE=${RATE:-1000}
DURATION_S=${DURATION_S:-20}
SHARDS=${SHARDS:-2}
OUT=${OUT:-perf/reports/dialects}
PORT=${PORT:-9011}
SECRET=dialects-secret
case "$mode" in
  mixed) CANONICAL=${CANONICAL:-1000}; LEGACY=${LEGACY:-1000} ;;
  ws) CANONICAL=0; LEGACY=${LEGACY:-10000} ;;
  private) CANONICAL=0; LEGACY=0; PRIVATE=${PRIVATE:-1000}; RATE=${RATE_PRIVATE:-100}; SYMBOLS=1 ;;
  all) CANONICAL=${CANONICAL:-1000}; LEGACY=${LEGACY:-1000}; PRIVATE=${PRIVATE:-1000}
       RATE_PRIVATE=${RATE_PRIVATE:-100} ;;
  *) echo "usage: perf/dialects.sh mixed|ws|private|all" >&2; exit 2 ;;
esac

cargo build --release --quiet -p tickwire-net -p tickwire-perf
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" || true
load=target/release/tickwire-load
BIN=${BIN:-target/release/tickwire}
token=$(target/release/tickwire token --sub dialects --role publisher --jwt-secret "$SECRET")
addr="127.0.0.1:$PORT"
logs=$(mktemp -d)

env -u DATABASE_URL "$BIN" --listen "$addr" --shards "$SHARDS" --no-simulator \
  --jwt-secret "$SECRET" --legacy-price-update-interval-s 1 --max-connections 100000 \
  --max-connections-per-user 0 2>"$logs/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$logs"' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

metrics() { curl -s "http://$addr/metrics"; }
sum() { awk -v m="$1" -v l="$2" 'index($0, m "{") == 1 && index($0, l) { s += $NF } END { printf "%d\n", s }'; }
commit=$(git rev-parse --short HEAD)
[ "$BIN" = target/release/tickwire ] || commit="$commit (server: $BIN)"
before=$(metrics)

# The publisher's token goes by the environment, not the command line the reports quote.
export TICKWIRE_PUBLISH_TOKEN=$token
common=(--target "$addr" --symbols "$SYMBOLS" --server-pid "$pid" --connect-concurrency 256)
if [ "${COMPRESS:-0}" = 1 ]; then
  common+=(--compress)
fi
wait_for() { # dialect count: until the server holds that many connections of the dialect
  for _ in $(seq 1 600); do
    n=$(metrics | sum tickwire_dialect_connections "dialect=\"$1\"")
    [ "$n" -ge "$2" ] && return 0
    sleep 0.1
  done
}
if [ "$mode" = private ] || [ "$mode" = all ]; then
  TICKWIRE_LOAD_TOKEN=$(target/release/tickwire token --sub load --role user --jwt-secret "$SECRET")
  export TICKWIRE_LOAD_TOKEN
  private=(--symbols 1 --private-user load --target "$addr" --server-pid "$pid" --connect-concurrency 256)
fi
# Listeners (--rate 0) for the whole run: they connect first, and another generator publishes.
listen=$((DURATION_S + 14))
listen_ws() { # report
  "$load" fanout --protocol legacy --name tickwire-ws "${common[@]}" --connections "$LEGACY" --rate 0 \
    --duration-s "$listen" --json "$OUT/$1" >"$logs/ws.log" 2>&1 &
  ws=$!
  wait_for legacy "$LEGACY"
}
listen_portfolio() { # report
  "$load" fanout --protocol portfolio --name tickwire-portfolio "${private[@]}" --connections "$PRIVATE" --rate 0 \
    --duration-s "$listen" --json "$OUT/$1" >"$logs/portfolio.log" 2>&1 &
  portfolio=$!
  wait_for portfolio "$PRIVATE"
}
publish_stream() { # report
  "$load" fanout --protocol tickwire --name tickwire-stream "${common[@]}" --connections "$CANONICAL" \
    --subs-per-conn 1 --rate "$RATE" --duration-s "$DURATION_S" --json "$OUT/$1"
}
publish_fastws() { # report rate
  "$load" fanout --protocol fastws --name tickwire-fastws "${private[@]}" --connections "$PRIVATE" --rate "$2" \
    --duration-s "$DURATION_S" --json "$OUT/$1"
}
case "$mode" in
  all)
    listen_ws all-ws.json
    listen_portfolio all-portfolio.json
    publish_fastws all-fastws.json "$RATE_PRIVATE" >"$logs/fastws.log" 2>&1 &
    fastws=$!
    publish_stream all-stream.json
    wait "$fastws" "$ws" "$portfolio"
    cat "$logs/fastws.log" "$logs/ws.log" "$logs/portfolio.log" ;;
  private)
    listen_portfolio private-portfolio.json
    publish_fastws private-fastws.json "$RATE"
    wait "$portfolio"
    cat "$logs/portfolio.log" ;;
  ws)
    "$load" fanout --protocol legacy --name tickwire-ws "${common[@]}" --connections "$LEGACY" --rate "$RATE" \
      --duration-s "$DURATION_S" --json "$OUT/ws-$LEGACY.json" --report "$OUT" ;;
  mixed)
    listen_ws mixed-ws.json
    publish_stream mixed-stream.json
    wait "$ws"
    cat "$logs/ws.log" ;;
esac
after=$(metrics)

python3 - "$mode" "$OUT" "$commit" "$SYMBOLS" "$RATE" "$DURATION_S" "$SHARDS" "$CANONICAL" "$LEGACY" "${PRIVATE:-0}" \
  "${RATE_PRIVATE:-0}" \
  <(echo "$before") <(echo "$after") <<'EOF'
import json, os, sys
mode, out, commit, symbols, rate, duration, shards, canonical, legacy, private, rate_private, before, after = sys.argv[1:]

def series(path):
    vals = {}
    for line in open(path):
        if line.startswith('#') or ' ' not in line:
            continue
        key, v = line.rsplit(' ', 1)
        name = key.split('{')[0]
        labels = key[len(name):]
        try:
            vals.setdefault(name, []).append((labels, float(v)))
        except ValueError:
            pass
    return vals

b, a = series(before), series(after)
def total(vals, name, label=''):
    return sum(v for l, v in vals.get(name, []) if label in l)
ingested = total(a, 'tickwire_events_ingested_total') - total(b, 'tickwire_events_ingested_total')
renders = {d: total(a, 'tickwire_renders_total', f'dialect="{d}"') - total(b, 'tickwire_renders_total', f'dialect="{d}"')
           for d in ['canonical', 'fastws', 'legacy', 'portfolio']}
reports = {'mixed': [('/v1/stream', 'mixed-stream.json'), ('/ws', 'mixed-ws.json')],
           'ws': [('/ws', f'ws-{legacy}.json')],
           'private': [('/ws/portfolio', 'private-portfolio.json'), ('/api/v1/ws', 'private-fastws.json')],
           'all': [('/v1/stream', 'all-stream.json'), ('/ws', 'all-ws.json'), ('/ws/portfolio', 'all-portfolio.json'),
                   ('/api/v1/ws', 'all-fastws.json')]}[mode]
rows = []
for path, f in reports:
    r = json.load(open(os.path.join(out, f)))
    rows.append(f"| `{path}` | {r['connections']:,} | {r['delivered_total']:,} | {r['lost']:,} | {r['failed_connections']} | "
                f"{r['server_errors']} | {r['p50_us']/1e3:.2f} | {r['p99_us']/1e3:.2f} | {r['max_us']/1e3:.2f} |")
cmd = ("COMPRESS=1 " if os.environ.get("COMPRESS") == "1" else "") + f"perf/dialects.sh {mode}"
title = {'mixed': 'Dialects side by side: /v1/stream and /ws on the same topics',
         'ws': '10,000 auto-subscribed /ws clients, a 1 s price interval over 100 symbols',
         'private': "Dialects side by side: /ws/portfolio and /api/v1/ws on one user's orders",
         'all': 'The four dialects at once: /v1/stream and /ws on quotes, /ws/portfolio and /api/v1/ws on orders'}[mode]
md = [f"# {title}", "",
      f"Commit `{commit}`, `{cmd}` (SYMBOLS={symbols} RATE={rate} DURATION_S={duration} SHARDS={shards}"
      + (f" CANONICAL={canonical}" if mode in ('mixed', 'all') else '') + (f" LEGACY={legacy}" if mode != 'private' else '')
      + (f" PRIVATE={private}" if mode in ('private', 'all') else '') + (f" RATE_PRIVATE={rate_private}" if mode == 'all' else '')
      + "), on the 2-core machine of "
      "perf/README.md: the server and the generators share both cores.", "",
      "| endpoint | connections | deliveries | lost | failed connections | error frames | p50 ms | p99 ms | max ms |",
      "|---|---|---|---|---|---|---|---|---|", *rows, "",
      ("A `/v1/stream` delivery is one quote to one subscriber, timed from its `source_ts`; a `/ws` delivery is one "
       "`price_update` frame (every symbol that changed in the interval) to one client, timed from the close of "
       "its interval (the frame's `timestamp`) to its receipt, and an interval with no frame between two that "
       "came counts as lost." + (" An order delivery is one order to one client, timed from its publishing (carried in "
       "its id), whether alone or in a `/ws/portfolio` batch (whose window is 1 s)." if mode == 'all' else '')
       if mode != 'private' else
       "A delivery is one order to one client, timed from its publishing (carried in its id), whether it came "
       "alone or in a `/ws/portfolio` batch; a missing order number is lost. A `/ws/portfolio` client's first "
       "order of a quiet window goes at once and the rest of the window together at its end (1 s)."), "",
      "Renders in `/metrics` (`tickwire_renders_total`) over the run, against the updates sequenced "
      f"(`tickwire_events_ingested_total`: {ingested:,.0f}):", "",
      "| dialect | renders | per update |", "|---|---|---|"]
# In the four-dialect run, each dialect renders the updates of its own topics: /ws the quotes, the account
# dialects the orders (the publishers publish exactly rate x duration).
quotes, orders = float(rate) * float(duration), float(rate_private) * float(duration)
mine = {'canonical': ingested, 'legacy': quotes, 'portfolio': orders, 'fastws': orders} if mode == 'all' else {}
for d, n in renders.items():
    base = mine.get(d, ingested)
    md.append(f"| {d} | {n:,.0f} | {n / base if base else 0:.3f} |")
if mode == 'all':
    md += ["", f"Per update of the dialect's own topics: {quotes:,.0f} quotes for `/ws`, {orders:,.0f} orders for "
           "`/ws/portfolio` and `/api/v1/ws`, all of them for the canonical protocol."]
md += ["", "Each update is rendered once in the canonical protocol (history keeps it) and once for each other "
       "dialect with subscribers of its topic, whatever their number: a `/ws` render is one symbol's piece of "
       "the interval's frame, stored once per shard."]
open(os.path.join(out, f"{mode}.md"), 'w').write('\n'.join(md) + '\n')
print('\n'.join(md))
EOF
