"""tickwire perf peer: Python socketify (uWebSockets inside) pub/sub.

Run (after perf/peers/install.sh), pinned to one core like one tickwire shard:
    taskset -c 0 perf/peers/.venv/bin/python perf/peers/socketify/server.py 9001

Listens on 127.0.0.1:<port> (first argument, default 9001), one thread, one uWS/libuv loop.
  /v1/stream   subscribers send {"action":"subscribe","channel":C,"symbols":[...],"id":...};
               each symbol S becomes topic "C:S" via ws.subscribe(), answered with one
               {"type":"subscribed",...} frame. Other actions are ignored.
  /v1/publish  one event per text frame; parsed only to find "<channel>:<data.symbol>",
               then the frame's text goes unchanged to that topic with app.publish().
Slow subscribers are never skipped silently: max_backpressure is 1 GiB per socket and a
socket that still reaches it is closed (close_on_backpressure_limit) instead.
Needs the Debian package libuv1 (install.sh installs it).
"""

import json
import sys

from socketify import App, AppListenOptions, CompressOptions, OpCode

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 9001

app = App()


def on_subscriber_message(ws, message, opcode):
    if opcode != OpCode.TEXT:
        return
    try:
        msg = json.loads(message)
        channel, symbols = msg["channel"], msg["symbols"]
    except (ValueError, KeyError, TypeError):
        return
    if msg.get("action") != "subscribe" or not isinstance(channel, str) or not isinstance(symbols, list):
        return
    for symbol in symbols:
        ws.subscribe(f"{channel}:{symbol}")
    reply = {"type": "subscribed"}
    if "id" in msg:
        reply["id"] = msg["id"]
    reply["channel"] = channel
    reply["symbols"] = symbols
    ws.send(json.dumps(reply, separators=(",", ":")), OpCode.TEXT)


def on_publisher_message(ws, message, opcode):
    if opcode != OpCode.TEXT:
        return
    try:
        event = json.loads(message)
        topic = f"{event['channel']}:{event['data']['symbol']}"
    except (ValueError, KeyError, TypeError):
        return
    app.publish(topic, message, OpCode.TEXT)


def behavior(message_handler):
    return {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": 16 * 1024 * 1024,
        "idle_timeout": 120,
        "max_backpressure": 1024 * 1024 * 1024,
        "close_on_backpressure_limit": True,
        "send_pings_automatically": True,
        "message": message_handler,
    }


app.ws("/v1/stream", behavior(on_subscriber_message))
app.ws("/v1/publish", behavior(on_publisher_message))
app.any("/*", lambda res, req: res.write_status(404).end("not found"))
listening = []
app.listen(
    AppListenOptions(port=PORT, host="127.0.0.1"),
    lambda config: listening.append(config.port),
)
if not listening:  # uWS listens synchronously; socketify only logs a failure, so exit here
    sys.exit(f"socketify peer: cannot listen on 127.0.0.1:{PORT}")
print(f"socketify peer listening on ws://127.0.0.1:{listening[0]}", flush=True)
app.run()
