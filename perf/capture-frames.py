"""Records real frames of every dialect from a running tickwire (its simulated feed), for the deflate
benchmark (benches/benches/deflate.rs) and the compression ratios of perf/reports/compression.

Usage: python perf/capture-frames.py HOST:PORT TOKEN SECONDS OUT.jsonl
TOKEN: a token of the simulator's user (`tickwire token --sub demo-user`). The server should run with
--legacy-price-update-interval-s 1 so that /ws batches come every second. Needs Python's `websockets`
(net/tests/clients/requirements.txt). Writes one JSON object per line: {"dialect", "text"}.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect

SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "META", "JPM", "V", "XOM"]

REQUESTS = {
    "canonical": (
        "/v1/stream",
        [{"action": "subscribe", "channel": c, "symbols": SYMBOLS} for c in ("quotes", "trades")]
        + [{"action": "subscribe", "channel": c} for c in ("news", "signals", "orders", "executions", "portfolio")],
    ),
    "legacy": ("/ws", []),  # auto-subscribed: prices, signals, the user's trades and portfolio
    "portfolio": ("/ws/portfolio", [{"type": "subscribe", "channels": ["positions", "orders", "account", "trades"]}]),
    "fastws": (
        "/api/v1/ws",
        [
            {"type": f"{route}.subscribe", "payload": {"accountId": "demo-user"}}
            for route in ("orders", "executions", "positions", "equity")
        ],
    ),
}


async def record(addr, token, dialect, seconds, out):
    path, requests = REQUESTS[dialect]
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"ws://{addr}{path}", additional_headers=headers, max_size=2**24) as ws:
        for r in requests:
            await ws.send(json.dumps(r))
        try:
            async with asyncio.timeout(seconds):
                while True:
                    out.append({"dialect": dialect, "text": await ws.recv()})
        except TimeoutError:
            pass


async def main():
    addr, token, seconds, path = sys.argv[1:]
    out = []
    await asyncio.gather(*(record(addr, token, d, float(seconds), out) for d in REQUESTS))
    with open(path, "w") as f:
        for line in out:
            f.write(json.dumps(line) + "\n")
    counts = {d: sum(1 for o in out if o["dialect"] == d) for d in REQUESTS}
    print(f"recorded {len(out)} frames: {counts}")


asyncio.run(main())
