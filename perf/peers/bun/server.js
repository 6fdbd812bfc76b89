// tickwire perf peer: Bun.serve pub/sub (uWebSockets inside).
//
// Run (after perf/peers/install.sh), pinned to one core like one tickwire shard:
//   taskset -c 0 perf/peers/node_modules/.bin/bun perf/peers/bun/server.js 9001
//
// Listens on 127.0.0.1:<port> (first argument, default 9001).
//   /v1/stream   subscribers send {"action":"subscribe","channel":C,"symbols":[...],"id":...};
//                each symbol S becomes topic "C:S" via ws.subscribe(), answered with one
//                {"type":"subscribed",...} frame. Other actions are ignored.
//   /v1/publish  one event per text frame; parsed only to find "<channel>:<data.symbol>",
//                then the frame's text goes unchanged to that topic with server.publish().
// Slow subscribers are never skipped silently: the per-socket backpressure limit is 1 GiB,
// and a socket that still reaches it is closed (closeOnBackpressureLimit) rather than
// having messages dropped.

const port = Number(process.argv[2] ?? 9001);

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    const { pathname } = new URL(req.url);
    if (pathname === "/v1/stream" || pathname === "/v1/publish") {
      if (server.upgrade(req, { data: { publisher: pathname === "/v1/publish" } })) return;
      return new Response("WebSocket upgrade required", { status: 400 });
    }
    return new Response("not found", { status: 404 });
  },
  websocket: {
    perMessageDeflate: false,
    backpressureLimit: 1024 * 1024 * 1024,
    closeOnBackpressureLimit: true,
    idleTimeout: 120,
    sendPings: true,
    message(ws, message) {
      if (typeof message !== "string") return;
      let msg;
      try {
        msg = JSON.parse(message);
      } catch {
        return;
      }
      if (ws.data.publisher) {
        const symbol = msg?.data?.symbol;
        if (typeof msg?.channel === "string" && typeof symbol === "string") {
          server.publish(`${msg.channel}:${symbol}`, message);
        }
        return;
      }
      if (msg?.action !== "subscribe" || typeof msg.channel !== "string" || !Array.isArray(msg.symbols)) return;
      for (const symbol of msg.symbols) ws.subscribe(`${msg.channel}:${symbol}`);
      ws.send(JSON.stringify({ type: "subscribed", id: msg.id, channel: msg.channel, symbols: msg.symbols }));
    },
  },
});

console.log(`bun ${Bun.version} peer listening on ws://${server.hostname}:${server.port}`);
