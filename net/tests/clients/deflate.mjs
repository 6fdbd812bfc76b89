// permessage-deflate with Node's `ws` (run by .ci/run): a client with perMessageDeflate negotiates it on
// /v1/stream and sees exactly the messages a client without it sees, byte for byte.
//
// Usage: node net/tests/clients/deflate.mjs HOST:PORT SYMBOL...
// The server must run its simulated feed quoting those symbols.
import WebSocket from "ws";

const [addr, ...symbols] = process.argv.slice(2);
if (!addr || symbols.length === 0) {
  console.error("usage: deflate.mjs HOST:PORT SYMBOL...");
  process.exit(2);
}
const WANT = 300; // updates per connection after its snapshots

function collect(compress) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${addr}/v1/stream`, { perMessageDeflate: compress });
    const got = { extensions: "", snapshots: new Map(), updates: new Map() };
    let n = 0;
    ws.on("open", () => {
      got.extensions = ws.extensions;
      ws.send(JSON.stringify({ action: "subscribe", channel: "quotes", symbols }));
    });
    ws.on("message", (data, isBinary) => {
      if (isBinary) return reject(new Error("a binary message"));
      const text = data.toString("utf8");
      const m = JSON.parse(text);
      if (m.type === "snapshot") got.snapshots.set(m.data.symbol, m.sequence);
      if (m.type === "quote") {
        got.updates.set(`${m.data.symbol}/${m.sequence}`, text);
        if (++n === WANT) ws.close(1000);
      }
    });
    ws.on("close", () => resolve(got));
    ws.on("error", reject);
  });
}

const [deflating, plain] = await Promise.all([collect(true), collect(false)]);
const fail = (msg) => {
  console.error(`ws (Node): ${msg}`);
  process.exit(1);
};
if (!deflating.extensions.includes("permessage-deflate")) fail(`not negotiated: "${deflating.extensions}"`);
if (plain.extensions !== "") fail(`negotiated without an offer: "${plain.extensions}"`);
// Every update after both snapshots of its symbol reaches both, gapless: compare those both hold.
let common = 0;
for (const [key, text] of deflating.updates) {
  const [symbol, seq] = key.split("/");
  const from = Math.max(deflating.snapshots.get(symbol) ?? 0, plain.snapshots.get(symbol) ?? 0);
  if (Number(seq) <= from || !plain.updates.has(key)) continue;
  if (plain.updates.get(key) !== text) fail(`${key} differs:\n${text}\n${plain.updates.get(key)}`);
  common++;
}
if (common < WANT / 3) fail(`only ${common} updates in common`);
console.log(`ws (Node): permessage-deflate negotiated ("${deflating.extensions}"), ${common} updates identical`);
