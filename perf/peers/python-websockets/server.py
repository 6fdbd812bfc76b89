"""tickwire perf peer: Python `websockets` (asyncio implementation) with broadcast().

Run (after perf/peers/install.sh), pinned to one core like one tickwire shard:
    taskset -c 0 perf/peers/.venv/bin/python perf/peers/python-websockets/server.py 9001

Listens on 127.0.0.1:<port> (first argument, default 9001), one asyncio event loop.
  /v1/stream   subscribers send {"action":"subscribe","channel":C,"symbols":[...],"id":...};
               each symbol S adds the connection to the set for topic "C:S", answered with
               one {"type":"subscribed",...} frame. Other actions are ignored.
  /v1/publish  one event per text frame; parsed only to find "<channel>:<data.symbol>",
               then the frame's text goes unchanged to that topic's set with broadcast().
broadcast() never skips a slow connection: frames pile up in its write buffer (there is no
backpressure), so nothing is dropped silently. Compression is off, as for the other peers.
"""

import asyncio
import json
import sys
from http import HTTPStatus

from websockets.asyncio.server import broadcast, serve

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 9001

topics: dict[str, set] = {}  # "channel:SYMBOL" -> set of connections


def only_our_paths(connection, request):
    if request.path not in ("/v1/stream", "/v1/publish"):
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return None


async def publisher(websocket):
    async for message in websocket:
        if not isinstance(message, str):
            continue
        try:
            event = json.loads(message)
            topic = f"{event['channel']}:{event['data']['symbol']}"
        except (ValueError, KeyError, TypeError):
            continue
        subscribers = topics.get(topic)
        if subscribers:
            broadcast(subscribers, message)


async def subscriber(websocket):
    mine = set()
    try:
        async for message in websocket:
            if not isinstance(message, str):
                continue
            try:
                msg = json.loads(message)
                channel, symbols = msg["channel"], msg["symbols"]
            except (ValueError, KeyError, TypeError):
                continue
            if msg.get("action") != "subscribe" or not isinstance(channel, str) or not isinstance(symbols, list):
                continue
            for symbol in symbols:
                topic = f"{channel}:{symbol}"
                topics.setdefault(topic, set()).add(websocket)
                mine.add(topic)
            reply = {"type": "subscribed"}
            if "id" in msg:
                reply["id"] = msg["id"]
            reply["channel"] = channel
            reply["symbols"] = symbols
            await websocket.send(json.dumps(reply, separators=(",", ":")))
    finally:
        for topic in mine:
            subscribers = topics.get(topic)
            if subscribers is not None:
                subscribers.discard(websocket)
                if not subscribers:
                    del topics[topic]


async def handler(websocket):
    if websocket.request.path == "/v1/publish":
        await publisher(websocket)
    else:
        await subscriber(websocket)


async def main():
    async with serve(handler, "127.0.0.1", PORT, process_request=only_our_paths, compression=None) as server:
        print(f"python websockets peer listening on ws://127.0.0.1:{PORT}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
