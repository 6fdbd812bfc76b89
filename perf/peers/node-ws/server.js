// tickwire perf peer: Node.js with the npm `ws` package, the way most teams run it:
// a Map topic -> Set of sockets, and socket.send() to each subscriber.
//
// Run (after perf/peers/install.sh), pinned to one core like one tickwire shard:
//   taskset -c 0 node perf/peers/node-ws/server.js 9001
//
// Listens on 127.0.0.1:<port> (first argument, default 9001).
//   /v1/stream   subscribers send {"action":"subscribe","channel":C,"symbols":[...],"id":...};
//                each symbol S joins topic "C:S", answered with one {"type":"subscribed",...}
//                frame. Other actions are ignored.
//   /v1/publish  one event per text frame; parsed only to find "<channel>:<data.symbol>",
//                then the received bytes go unchanged, as a text frame, to every socket of
//                that topic.
// `ws` never drops: a slow subscriber's frames queue in memory (socket.bufferedAmount).

"use strict";

const http = require("node:http");
const { WebSocketServer, WebSocket } = require("ws"); // resolves to perf/peers/node_modules/ws

const port = Number(process.argv[2] ?? 9001);

const topics = new Map(); // "channel:SYMBOL" -> Set<WebSocket>

const server = http.createServer((req, res) => {
  res.writeHead(404).end("not found");
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });

server.on("upgrade", (req, socket, head) => {
  const { pathname } = new URL(req.url, "http://localhost");
  if (pathname !== "/v1/stream" && pathname !== "/v1/publish") {
    socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (pathname === "/v1/publish") onPublisher(ws);
    else onSubscriber(ws);
  });
});

function onPublisher(ws) {
  ws.on("error", () => {});
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    const symbol = event?.data?.symbol;
    if (typeof event?.channel !== "string" || typeof symbol !== "string") return;
    const subscribers = topics.get(`${event.channel}:${symbol}`);
    if (!subscribers) return;
    for (const client of subscribers) {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: false });
    }
  });
}

function onSubscriber(ws) {
  const mine = new Set();
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg?.action !== "subscribe" || typeof msg.channel !== "string" || !Array.isArray(msg.symbols)) return;
    for (const symbol of msg.symbols) {
      const topic = `${msg.channel}:${symbol}`;
      let set = topics.get(topic);
      if (!set) topics.set(topic, (set = new Set()));
      set.add(ws);
      mine.add(topic);
    }
    ws.send(JSON.stringify({ type: "subscribed", id: msg.id, channel: msg.channel, symbols: msg.symbols }));
  });
  ws.on("close", () => {
    for (const topic of mine) {
      const set = topics.get(topic);
      if (set && set.delete(ws) && set.size === 0) topics.delete(topic);
    }
  });
  ws.on("error", () => {});
}

server.listen(port, "127.0.0.1", () => {
  console.log(`node ${process.version} ws peer listening on ws://127.0.0.1:${port}`);
});
