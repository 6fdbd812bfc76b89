#!/usr/bin/env bash
# Install paths (issue 17; docs/deploy/README.md): `cargo install --path net` installs `tickwire`; the Debian
# package cargo-deb builds from net/Cargo.toml installs with dpkg -i, puts each file where the unit and the
# docs say, makes the service's user, and its server starts as that user with the packaged settings and
# answers; `tickwire check-system` runs from it. Needs root (dpkg). Reuses target/release.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "-- cargo install --path net"
root=$(mktemp -d)
cargo install --locked --quiet --path net --root "$root" --target-dir target
"$root/bin/tickwire" --version | grep -q '^tickwire [0-9]'
"$root/bin/tickwire" --help | grep -q 'check-system'
rm -rf "$root"

echo "-- cargo deb"
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked --quiet cargo-deb@3.8.0
rm -rf target/debian
cargo deb --no-build -p tickwire-net --output target/debian/
deb=$(ls target/debian/tickwire_*.deb)
dpkg-deb --info "$deb" | grep -E '^ (Package|Version|Depends):'

echo "-- dpkg -i"
dpkg --purge tickwire >/dev/null 2>&1 || true
dpkg -i "$deb"
server=""
cleanup() {
  [ -z "$server" ] || kill "$server" 2>/dev/null || true
  dpkg --purge tickwire >/dev/null 2>&1 || true
}
trap cleanup EXIT
unit=$(dpkg -L tickwire | grep '/systemd/system/tickwire.service$')
for f in /usr/bin/tickwire /etc/default/tickwire /usr/lib/sysctl.d/99-tickwire.conf \
  /usr/share/doc/tickwire/README.md /usr/share/doc/tickwire/deploy.md "$unit"; do
  [ -f "$f" ] || { echo "the package did not install $f"; exit 1; }
done
cmp "$unit" docs/deploy/tickwire.service
getent passwd tickwire >/dev/null || { echo "the package made no tickwire user"; exit 1; }
[ "$(stat -c '%a %G' /etc/default/tickwire)" = "640 tickwire" ] || { stat /etc/default/tickwire; exit 1; }
systemd-analyze verify "$unit"

echo "-- check-system from the package"
set +e
/usr/bin/tickwire check-system --json --shards 1 --max-connections 1000 > target/debian/check.json
status=$?
set -e
python3 - "$status" target/debian/check.json <<'PY'
import json, sys
status, items = int(sys.argv[1]), json.load(open(sys.argv[2]))
worst = max({"ok": 0, "warn": 1, "fail": 2}[i["level"]] for i in items)
names = {i["item"] for i in items}
assert {"kernel", "io_uring probe", "RLIMIT_MEMLOCK", "RLIMIT_NOFILE", "CPUs"} <= names, names
assert status == worst, (status, worst)
print(f"check-system: {len(items)} items, exit status {status}")
PY

echo "-- the packaged server, as its user with the packaged settings"
log=$(mktemp)
chmod 644 "$log"
( set -a; . /etc/default/tickwire; set +a
  export TICKWIRE_LISTEN=127.0.0.1:0 TICKWIRE_LOG_FORMAT=plain TICKWIRE_JWT_SECRET=ci-package
  exec setpriv --reuid tickwire --regid tickwire --init-groups /usr/bin/tickwire --shards 1 ) 2>"$log" &
server=$!
for _ in $(seq 1 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
addr=$(grep -o 'listening on [0-9.:]*' "$log" | head -n 1 | cut -d' ' -f3)
[ -n "$addr" ] || { cat "$log"; echo "the packaged server did not start"; exit 1; }
curl -sf "http://$addr/healthz" | grep -q '"ok"'
[ "$(ps -o user= -p "$server")" = "tickwire" ] || { ps -o user=,args= -p "$server"; exit 1; }
kill -TERM "$server"
wait "$server"
server=""
echo "package: ok"
