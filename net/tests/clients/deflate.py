"""permessage-deflate with Python's `websockets` (run by .ci/run).

Every endpoint (/v1/stream, /ws, /ws/portfolio, /api/v1/ws) negotiates it with this client; on /v1/stream a
compressing connection sees exactly the messages of a plain one, byte for byte; on /ws both get their
price_update batches; and the server counts the frames it deflated.

Usage: python deflate.py HOST:PORT TOKEN SYMBOL...
The server must run its simulated feed quoting those symbols; TOKEN is a user token.
"""

import asyncio
import json
import sys
import urllib.request

from websockets.asyncio.client import connect

WANT = 300  # updates per connection after its snapshots


def fail(msg):
    sys.exit(f"websockets (Python): {msg}")


async def stream(addr, symbols, compress):
    compression = "deflate" if compress else None
    async with connect(f"ws://{addr}/v1/stream", compression=compression, max_size=2**20) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        await ws.send(json.dumps({"action": "subscribe", "channel": "quotes", "symbols": symbols}))
        snapshots, updates = {}, {}
        while len(updates) < WANT:
            text = await ws.recv()
            if not isinstance(text, str):
                fail("a binary message")
            m = json.loads(text)
            if m["type"] == "snapshot":
                snapshots[m["data"]["symbol"]] = m["sequence"]
            elif m["type"] == "quote":
                updates[(m["data"]["symbol"], m["sequence"])] = text
        return extensions, snapshots, updates


async def negotiated(addr, path, token):
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"ws://{addr}{path}", compression="deflate", additional_headers=headers) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        if not extensions.startswith("permessage-deflate"):
            fail(f"{path}: not negotiated ({extensions!r})")
        if path == "/ws":
            # Auto-subscribed: the next price_update batch (the interval's close) arrives deflated or not.
            while True:
                m = json.loads(await ws.recv())
                if m.get("type") == "price_update":
                    if not m["symbols"]:
                        fail("/ws: an empty price_update")
                    return len(m["symbols"])
        return 0


def deflated_frames(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics") as r:
        lines = [l for l in r.read().decode().splitlines() if l.startswith("tickwire_deflated_frames_total")]
    if not lines:
        fail("no tickwire_deflated_frames_total in /metrics")
    return sum(float(l.split()[-1]) for l in lines)  # one line per shard


async def main():
    addr, token, *symbols = sys.argv[1:]
    before = deflated_frames(addr)
    (ext, snaps_z, z), (ext_plain, snaps_p, p) = await asyncio.gather(
        stream(addr, symbols, True), stream(addr, symbols, False)
    )
    if not ext.startswith("permessage-deflate") or "server_no_context_takeover" not in ext:
        fail(f"/v1/stream: not negotiated ({ext!r})")
    if ext_plain:
        fail(f"/v1/stream: negotiated without an offer ({ext_plain!r})")
    common = 0
    for (symbol, seq), text in z.items():
        if seq <= max(snaps_z.get(symbol, 0), snaps_p.get(symbol, 0)) or (symbol, seq) not in p:
            continue
        if p[(symbol, seq)] != text:
            fail(f"{symbol}/{seq} differs:\n{text}\n{p[(symbol, seq)]}")
        common += 1
    if common < WANT // 3:
        fail(f"only {common} updates in common")
    if deflated_frames(addr) <= before:
        fail("the server deflated no frame")
    batch = 0
    for path in ["/ws", "/ws/portfolio", "/api/v1/ws"]:
        batch = max(batch, await negotiated(addr, path, token))
    print(
        f"websockets (Python): permessage-deflate negotiated ({ext!r}) on every endpoint, {common} updates "
        f"identical, a /ws batch of {batch} symbols"
    )


asyncio.run(main())
