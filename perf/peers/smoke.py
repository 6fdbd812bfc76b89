#!/usr/bin/env python3
"""Smoke test for the perf peers: each one relays exactly the right frames, byte for byte.

Run (after perf/peers/install.sh):
    perf/peers/.venv/bin/python perf/peers/smoke.py            # every peer
    perf/peers/.venv/bin/python perf/peers/smoke.py bun nats   # some of them

For each peer in turn: start it on a free port, connect two subscribers and one publisher,
publish events for subscribed and unsubscribed symbols (and another channel), then check that
each subscriber got exactly its symbols' frames, in publish order, as text frames holding the
very bytes that were published, and nothing else. nats-server is driven with the NATS text
protocol over its WebSocket port. Exits non-zero if any peer fails.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_PYTHON = HERE / ".venv" / "bin" / "python"

try:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus
except ImportError:  # started with a python that lacks the venv's packages
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    sys.exit("smoke.py: the websockets package is missing; run perf/peers/install.sh first")

TIMEOUT = 10.0  # seconds to wait for any one expected thing
QUIET = 0.5  # seconds of silence that prove no extra frames are coming

SUB1 = ["AAPL"]
SUB2_FIRST = ["MSFT"]  # subscribed without an id
SUB2_SECOND = ["GOOG", "AMZN"]
UNSUBSCRIBED = ["TSLA"]
ALL_SYMBOLS = SUB1 + SUB2_FIRST + SUB2_SECOND + UNSUBSCRIBED


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nats_server_binary():
    return shutil.which("nats-server") or "/usr/sbin/nats-server"


def make_events():
    """(channel, symbol, text) for every event, in publish order."""
    events = []
    seq = 0
    ts = 1763900000123456

    def add(channel, symbol, extra=None):
        nonlocal seq
        seq += 1
        data = {"symbol": symbol, "bid": 185.5 + seq / 100, "ask": 185.52, "last": 185.51,
                "bid_size": 300, "ask_size": 200, "volume": 45000000 + seq}
        if extra:
            data.update(extra)
        event = {"channel": channel, "sequence": seq, "source_ts": ts + seq, "data": data}
        events.append((channel, symbol, json.dumps(event, separators=(",", ":"), ensure_ascii=False)))

    for round_ in range(3):
        for symbol in ALL_SYMBOLS:
            add("quotes", symbol)
        add("trades", "AAPL")  # another channel: quotes:AAPL subscribers must not get it
    # non-ASCII text and insignificant whitespace must survive unchanged
    add("quotes", "AAPL", {"venue": "Zürich €", "note": "ünïcödé ✓"})
    add("quotes", "MSFT", {"venue": "東京"})
    events.append(("quotes", "GOOG",
                   '{ "channel" : "quotes", "sequence": 999, "source_ts": 1, '
                   '"data": {"symbol": "GOOG", "bid": 1.0} }'))
    for i in range(2000):  # a burst: nothing lost, nothing reordered
        add("quotes", ALL_SYMBOLS[i % len(ALL_SYMBOLS)])
    return events


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


async def collect(ws, expected_count, decode):
    """Receive until expected_count items arrived and then QUIET seconds pass without any."""
    got = []
    deadline = time.monotonic() + TIMEOUT
    while True:
        if len(got) >= expected_count:
            timeout = QUIET
        else:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return got
        try:
            frame = await asyncio.wait_for(ws.recv(), timeout)
        except asyncio.TimeoutError:
            return got
        got.extend(decode(frame))


# ---------------------------------------------------------------- tickwire JSON protocol peers

async def subscribe(ws, symbols, req_id=None):
    req = {"action": "subscribe", "channel": "quotes", "symbols": symbols}
    expected = {"type": "subscribed"}
    if req_id is not None:
        req["id"] = req_id
        expected["id"] = req_id
    expected.update(channel="quotes", symbols=symbols)
    await ws.send(json.dumps(req))
    reply = await asyncio.wait_for(ws.recv(), TIMEOUT)
    check(isinstance(reply, str), f"subscribe reply is not a text frame: {reply!r}")
    check(json.loads(reply) == expected, f"subscribe reply {reply!r}, expected {expected}")


async def run_json_peer(port):
    base = f"ws://127.0.0.1:{port}"
    try:
        async with connect(f"{base}/nope", open_timeout=TIMEOUT):
            raise Failure("a WebSocket upgrade on /nope was accepted")
    except InvalidStatus:
        pass

    events = make_events()
    want1 = [t for c, s, t in events if c == "quotes" and s in SUB1]
    want2 = [t for c, s, t in events if c == "quotes" and s in SUB2_FIRST + SUB2_SECOND]

    async with connect(f"{base}/v1/stream", compression=None, max_size=None) as sub1, \
            connect(f"{base}/v1/stream", compression=None, max_size=None) as sub2, \
            connect(f"{base}/v1/publish", compression=None, max_size=None) as pub:
        await subscribe(sub1, SUB1, "r1")
        await subscribe(sub2, SUB2_FIRST)
        await subscribe(sub2, SUB2_SECOND, "r3")

        def frames(frame):
            check(isinstance(frame, str), f"binary frame delivered: {frame[:80]!r}")
            return [frame]

        c1 = asyncio.create_task(collect(sub1, len(want1), frames))
        c2 = asyncio.create_task(collect(sub2, len(want2), frames))
        for _, _, text in events:
            await pub.send(text)
        got1, got2 = await asyncio.gather(c1, c2)
        compare("subscriber 1 (AAPL)", got1, want1)
        compare("subscriber 2 (MSFT, GOOG, AMZN)", got2, want2)
        gotp = await collect(pub, 0, lambda f: [f])  # frames to the publisher are buffered
        check(gotp == [], f"the publisher was sent {len(gotp)} frames, e.g. {gotp[:1]!r}")
    return f"{len(got1)} + {len(got2)} frames of {len(events)} published"


def compare(who, got, want):
    if got == want:
        return
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            raise Failure(f"{who}: frame {i} differs:\n  got  {g!r}\n  want {w!r}")
    raise Failure(f"{who}: got {len(got)} frames, want {len(want)}")


# ---------------------------------------------------------------- nats-server over WebSocket

class NatsWs:
    """Just enough of the NATS client protocol, over a WebSocket byte stream."""

    def __init__(self, ws):
        self.ws = ws
        self.buf = bytearray()
        self.opcodes = set()

    async def _more(self, timeout):
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        self.opcodes.add("text" if isinstance(frame, str) else "binary")
        self.buf += frame.encode() if isinstance(frame, str) else frame

    def _parse_one(self):
        """One complete protocol message from the buffer, or None."""
        end = self.buf.find(b"\r\n")
        if end < 0:
            return None
        line = bytes(self.buf[:end])
        op = line.split(b" ", 1)[0].upper()
        if op == b"MSG":
            parts = line.split()
            size = int(parts[-1])
            if len(self.buf) < end + 2 + size + 2:
                return None
            payload = bytes(self.buf[end + 2:end + 2 + size])
            check(self.buf[end + 2 + size:end + 4 + size] == b"\r\n", "MSG payload not followed by CRLF")
            del self.buf[:end + 4 + size]
            return ("MSG", parts[1].decode(), payload)
        del self.buf[:end + 2]
        return (op.decode(), line, None)

    async def next(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            msg = self._parse_one()
            if msg is not None:
                op = msg[0]
                if op == "PING":
                    await self.ws.send(b"PONG\r\n")
                    continue
                if op == "+OK":
                    continue
                check(op != "-ERR", f"server error: {msg[1]!r}")
                return msg
            await self._more(max(deadline - time.monotonic(), 0.001))

    async def handshake(self, name):
        op, line, _ = await self.next(TIMEOUT)
        check(op == "INFO", f"expected INFO first, got {line!r}")
        connect_opts = {"verbose": False, "pedantic": False, "protocol": 1, "headers": False, "name": name}
        await self.ws.send(f"CONNECT {json.dumps(connect_opts)}\r\n".encode())

    async def flush(self):
        await self.ws.send(b"PING\r\n")
        op, line, _ = await self.next(TIMEOUT)
        check(op == "PONG", f"expected PONG, got {line!r}")


async def run_nats(port):
    base = f"ws://127.0.0.1:{port}"
    events = make_events()
    want1 = [t.encode() for c, s, t in events if c == "quotes" and s in SUB1]
    want2 = [t.encode() for c, s, t in events if c == "quotes" and s in SUB2_FIRST + SUB2_SECOND]

    async with connect(base, compression=None, max_size=None) as ws1, \
            connect(base, compression=None, max_size=None) as ws2, \
            connect(base, compression=None, max_size=None) as wsp:
        sub1, sub2, pub = NatsWs(ws1), NatsWs(ws2), NatsWs(wsp)
        await sub1.handshake("sub-1")
        await sub2.handshake("sub-2")
        await pub.handshake("pub")
        for sid, symbol in enumerate(SUB1, 1):
            await ws1.send(f"SUB quotes.{symbol} {sid}\r\n".encode())
        for sid, symbol in enumerate(SUB2_FIRST + SUB2_SECOND, 1):
            await ws2.send(f"SUB quotes.{symbol} {sid}\r\n".encode())
        await sub1.flush()
        await sub2.flush()

        async def gather_msgs(client, count):
            got = []
            deadline = time.monotonic() + TIMEOUT
            while True:
                timeout = QUIET if len(got) >= count else deadline - time.monotonic()
                if timeout <= 0:
                    return got
                try:
                    op, subject, payload = await client.next(timeout)
                except asyncio.TimeoutError:
                    return got
                check(op == "MSG", f"unexpected {op} {subject!r}")
                got.append(payload)

        c1 = asyncio.create_task(gather_msgs(sub1, len(want1)))
        c2 = asyncio.create_task(gather_msgs(sub2, len(want2)))
        batch = []
        for channel, symbol, text in events:
            payload = text.encode()
            batch.append(b"PUB %s.%s %d\r\n%s\r\n" % (channel.encode(), symbol.encode(), len(payload), payload))
            if len(batch) == 50:  # many PUBs per frame, as a real NATS client writes them
                await wsp.send(b"".join(batch))
                batch.clear()
        if batch:
            await wsp.send(b"".join(batch))
        await pub.flush()
        got1, got2 = await asyncio.gather(c1, c2)
        compare("subscriber 1 (quotes.AAPL)", got1, want1)
        compare("subscriber 2 (quotes.MSFT, GOOG, AMZN)", got2, want2)
    return (f"{len(got1)} + {len(got2)} messages of {len(events)} published; "
            f"server frames: {', '.join(sorted(sub1.opcodes | sub2.opcodes))}")


# ---------------------------------------------------------------- running the peers

def peer_command(name, port, tmpdir):
    node_bin = HERE / "node_modules" / ".bin"
    if name == "bun":
        return [str(node_bin / "bun"), str(HERE / "bun" / "server.js"), str(port)]
    if name == "socketify":
        return [str(VENV_PYTHON), str(HERE / "socketify" / "server.py"), str(port)]
    if name == "node-ws":
        return ["node", str(HERE / "node-ws" / "server.js"), str(port)]
    if name == "python-websockets":
        return [str(VENV_PYTHON), str(HERE / "python-websockets" / "server.py"), str(port)]
    if name == "nats":
        conf = (HERE / "nats" / "nats.conf").read_text()
        check("port: 9001" in conf, "nats.conf has no 'port: 9001' line to replace")
        conf_path = Path(tmpdir) / "nats.conf"
        conf_path.write_text(conf.replace("port: 9001", f"port: {port}"))
        return [nats_server_binary(), "-c", str(conf_path), "-p", str(free_port())]
    raise ValueError(name)


PEERS = ["bun", "socketify", "node-ws", "python-websockets", "nats"]


def wait_listening(proc, port, log_path):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failure(f"exited with {proc.returncode} before listening:\n{log_path.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise Failure("not listening after 30 s")


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_peer(name):
    with tempfile.TemporaryDirectory(prefix=f"smoke-{name}-") as tmpdir:
        port = free_port()
        cmd = peer_command(name, port, tmpdir)
        log_path = Path(tmpdir) / "peer.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        try:
            wait_listening(proc, port, log_path)
            runner = run_nats if name == "nats" else run_json_peer
            detail = asyncio.run(runner(port))
            check(proc.poll() is None, f"exited with {proc.returncode} during the test")
            return detail
        except Failure as e:
            raise Failure(f"{e}\n  command: {' '.join(cmd)}\n  peer log:\n{log_path.read_text()[-2000:]}")
        finally:
            stop(proc)


def main(argv):
    names = argv or PEERS
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        sys.exit(f"unknown peer(s) {unknown}; known: {PEERS}")
    failed = []
    for name in names:
        t0 = time.monotonic()
        try:
            detail = run_peer(name)
            print(f"PASS {name:18} {detail} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            failed.append(name)
            print(f"FAIL {name:18} {type(e).__name__}: {e}", flush=True)
    if failed:
        print(f"{len(failed)} of {len(names)} peers failed: {' '.join(failed)}")
        return 1
    print(f"all {len(names)} peers passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
