#!/usr/bin/env bash
# The Autobahn|Testsuite's fuzzingclient against tickwire's echo endpoint (--echo-path), so that the suite
# tests the server's own frame reader and writer, limits, permessage-deflate and close handling.
#
#   .ci/autobahn.sh quick   cases 1-7, 9, 10 and a fixed subset of the compression cases 12/13 (.ci/run)
#   .ci/autobahn.sh full    every case, 12.* and 13.* included (about 30 minutes on 2 cores); the summary
#                           is written to docs/conformance/summary.json
#
# Judged from the suite's index.json (wstest always exits 0): every case OK or INFORMATIONAL, its close OK
# or INFORMATIONAL; anything else (NON-STRICT, FAILED, UNIMPLEMENTED, a missing case) fails. (NON-STRICT was
# allowed until the codec checked UTF-8 as it arrives: 6.4.1-6.4.4 are OK since, and stay so.)
# The suite (autobahntestsuite 25.10.1, Python 2 only) is installed into target/autobahn from PyPI, with
# the CPython 2.7 the machine image carries under pyenv. Without one, the Python 3 runner of the same cases
# (kosoku 0.1.0, PyPI) runs cases 1-10 instead and says so: it cannot judge the compression cases.
# Env: TICKWIRE_BIN (default target/release/tickwire, built if missing), AUTOBAHN_WORK (default target/autobahn).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-quick}
case "$mode" in
  quick) cases='"1.*","2.*","3.*","4.*","5.*","6.*","7.*","9.*","10.*","12.1.1","12.1.2","12.1.3","12.1.4","12.1.5","12.2.1","12.2.2","12.3.1","12.4.1","12.5.1","13.1.1","13.1.2","13.1.3","13.2.1","13.3.1","13.4.1","13.5.1","13.6.1","13.7.1"' ;;
  full) cases='"*"' ;;
  *) echo "usage: .ci/autobahn.sh quick|full" >&2; exit 2 ;;
esac
work="${AUTOBAHN_WORK:-$PWD/target/autobahn}"
mkdir -p "$work"

py2="${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python2.7"
runner=wstest
if [ ! -x "$work/py27/bin/wstest" ]; then
  if [ -x "$py2" ]; then
    echo "installing autobahntestsuite 25.10.1 into $work/py27 (about a minute)"
    python3 -m venv "$work/boot"
    "$work/boot/bin/pip" install -q 'virtualenv<20.22'
    "$work/boot/bin/virtualenv" -q --no-download -p "$py2" "$work/py27"
    "$work/py27/bin/pip" install -q autobahntestsuite==25.10.1 2>&1 | grep -v DEPRECATION || true
  else
    runner=kosoku
  fi
fi
if [ "$runner" = kosoku ]; then
  echo "NOTICE: no CPython 2.7 at $py2: running cases 1-10 with kosoku (compression cases not judged)"
  [ -x "$work/py3/bin/kosoku" ] || { python3 -m venv "$work/py3" && "$work/py3/bin/pip" install -q kosoku==0.1.0; }
fi

bin=${TICKWIRE_BIN:-target/release/tickwire}
[ -x "$bin" ] || cargo build --release -p tickwire-net
log=$(mktemp)
# Limits wide enough for the suite's largest messages (16 MiB, echoed whole); the path is kosoku's.
"$bin" --listen 127.0.0.1:0 --shards 1 --no-simulator --echo-path / --max-message-bytes 20000000 \
  --max-queued-bytes 100000000 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
addr=$(grep -o 'listening on [0-9.:]*' "$log" | head -n 1 | cut -d' ' -f3)
[ -n "$addr" ] || { cat "$log"; echo "the server did not start"; exit 1; }

out="$work/reports-$mode"
rm -rf "$out"
start=$(date +%s)
if [ "$runner" = wstest ]; then
  cat >"$work/fuzzingclient.json" <<EOF
{"options": {"failByDrop": false}, "outdir": "$out", "servers": [{"agent": "tickwire", "url": "ws://$addr/"}],
 "cases": [$cases], "exclude-cases": [], "exclude-agent-cases": {}}
EOF
  (cd "$work" && py27/bin/wstest -m fuzzingclient -s fuzzingclient.json >wstest.log 2>&1)
  suite="autobahntestsuite 25.10.1 (wstest, CPython 2.7.18)"
else
  args=()
  for c in 1 2 3 4 5 6 7 9 10; do args+=(-i "$c.*"); done
  "$work/py3/bin/kosoku" "$addr" -p 2 "${args[@]}" -o "$out" >"$work/kosoku.log" 2>&1 || true
  suite="kosoku 0.1.0 (cases 1-10 only)"
fi
seconds=$(( $(date +%s) - start ))
kill -TERM "$server"
wait "$server" || true
trap - EXIT

summary="$work/summary-$mode.json"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- core fanout net 2>/dev/null || echo -dirty)"
python3 - "$out/index.json" "$suite" "$mode" "$seconds" "$summary" "$commit" <<'EOF'
import collections, json, sys
index, suite, mode, seconds, summary, commit = sys.argv[1:]
# One agent: "tickwire" for wstest, the server's address for kosoku.
agents = json.load(open(index))
cases = agents.get("tickwire") or (next(iter(agents.values())) if len(agents) == 1 else {})
behaviors = collections.Counter(c["behavior"] for c in cases.values())
closes = collections.Counter(c["behaviorClose"] for c in cases.values())
by_group = collections.defaultdict(collections.Counter)
for case, c in cases.items():
    by_group[case.split(".")[0]][c["behavior"]] += 1
bad = sorted(
    (k for k, c in cases.items()
     if c["behavior"] not in ("OK", "INFORMATIONAL") or c["behaviorClose"] not in ("OK", "INFORMATIONAL")),
    key=lambda k: [int(p) for p in k.split(".")],
)
report = {
    "suite": suite, "commit": commit, "command": f".ci/autobahn.sh {mode}", "mode": mode,
    "seconds": int(seconds), "cases": len(cases),
    "behavior": dict(behaviors), "behaviorClose": dict(closes),
    "by_group": {g: dict(c) for g, c in sorted(by_group.items(), key=lambda g: int(g[0]))},
    "not_ok": {k: [cases[k]["behavior"], cases[k]["behaviorClose"]] for k in bad},
    "non_strict_or_informational": sorted(
        (k for k, c in cases.items() if c["behavior"] in ("NON-STRICT", "INFORMATIONAL")),
        key=lambda k: [int(p) for p in k.split(".")],
    ),
}
json.dump(report, open(summary, "w"), indent=1)
print(f"autobahn ({suite}, {mode}): {len(cases)} cases in {seconds} s: {dict(behaviors)}; close {dict(closes)}")
minimum = {"quick": 300, "full": 500}[mode] if "wstest" in suite else 290
if len(cases) < minimum:
    sys.exit(f"only {len(cases)} cases ran (expected at least {minimum})")
if bad:
    sys.exit("cases not passed: " + ", ".join(f"{k} {cases[k]['behavior']}/{cases[k]['behaviorClose']}" for k in bad))
EOF
if [ "$mode" = full ]; then
  mkdir -p docs/conformance
  cp "$summary" docs/conformance/summary.json
  echo "wrote docs/conformance/summary.json"
fi
