// Shared by the Node tests of the JavaScript client and of the monitor page: the real tickwire binary
// started and stopped, tokens, publishing, and a TCP proxy that can cut or freeze connections.
import { spawn, execFileSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '../../..');
/** The server binary: TICKWIRE_BIN, or the debug build. */
export const bin = process.env.TICKWIRE_BIN ? path.resolve(process.env.TICKWIRE_BIN) : path.join(root, 'target/debug/tickwire');
export const SECRET = 'client-tests-secret';

/** A token for `sub` with `role`. */
export function token(sub, role = 'user') {
  return execFileSync(bin, ['token', '--sub', sub, '--role', role, '--jwt-secret', SECRET]).toString().trim();
}

/**
 * Starts the server with `args` (besides the secret) and resolves once it listens: `{addr, port, proc,
 * log(), stop()}`. `stop()` sends SIGTERM and resolves when it has exited.
 */
export function startServer(args = [], { listen = '127.0.0.1:0', env = {} } = {}) {
  // The server refuses TICKWIRE_ variables it does not know, such as the TICKWIRE_BIN that names it here.
  const { TICKWIRE_BIN: _, ...inherited } = process.env;
  const proc = spawn(bin, ['--listen', listen, '--jwt-secret', SECRET, ...args], {
    env: { ...inherited, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    proc.stderr.on('data', (chunk) => {
      log += chunk;
      const m = /listening on ([0-9.]+):(\d+)/.exec(log);
      if (m && !proc.resolved) {
        proc.resolved = true;
        resolve({
          addr: `${m[1]}:${m[2]}`,
          port: Number(m[2]),
          proc,
          log: () => log,
          exited,
          stop: () => {
            proc.kill('SIGTERM');
            return exited;
          },
        });
      }
    });
    exited.then(({ code }) => {
      if (!proc.resolved) reject(new Error(`the server exited (${code}) before listening:\n${log}`));
    });
  });
}

/** POSTs `events` to /api/publish; resolves with the parsed answer (throws unless 202). */
export async function publish(addr, publisherToken, events) {
  const resp = await fetch(`http://${addr}/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${publisherToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(events),
  });
  const body = await resp.json();
  if (resp.status !== 202) throw new Error(`publish answered ${resp.status}: ${JSON.stringify(body)}`);
  return body;
}

export const quote = (symbol, last) => ({
  channel: 'quotes',
  data: { symbol, bid: last - 0.01, ask: last + 0.01, last, bid_size: 100, ask_size: 100, volume: 1000 },
});

export const order = (user, id, status = 'new') => ({
  channel: 'orders',
  user_id: user,
  data: { order_id: id, symbol: 'AAPL', side: 'buy', type: 'limit', status, qty: 100, filled_qty: 0, avg_price: null, limit_price: 231.5 },
});

export const alert = (user, id, level = 'critical') => ({
  channel: 'alerts',
  user_id: user,
  data: { alert_id: id, type: 'risk', level, message: `risk limit reached (${id})`, symbol: 'AAPL', triggered_at: new Date().toISOString() },
});

/**
 * A TCP proxy to `target` ("host:port"): `cut()` ends every connection through it, `freeze()` stops
 * forwarding on the open ones (without closing them: a dead path), `close()` stops it.
 */
export async function proxy(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const pairs = new Set();
  const server = net.createServer((down) => {
    const up = net.connect(port, host);
    const pair = { down, up, frozen: false };
    pairs.add(pair);
    down.on('data', (d) => pair.frozen || up.write(d));
    up.on('data', (d) => pair.frozen || down.write(d));
    const end = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on('close', end).on('error', end);
    up.on('close', end).on('error', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    addr: `127.0.0.1:${server.address().port}`,
    connections: () => pairs.size,
    cut: () => [...pairs].forEach((p) => (p.down.destroy(), p.up.destroy())),
    freeze: () => pairs.forEach((p) => (p.frozen = true)),
    close: () => new Promise((resolve) => {
      pairs.forEach((p) => (p.down.destroy(), p.up.destroy()));
      server.close(resolve);
    }),
  };
}

/** Resolves when `predicate()` holds, checked on each of `client`'s frames and state changes. */
export function until(client, predicate, what, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    if (predicate()) return resolve();
    const timer = setTimeout(() => {
      offs.forEach((off) => off());
      reject(new Error(`timed out waiting for ${what}`));
    }, timeoutMs);
    const check = () => {
      if (!predicate()) return;
      clearTimeout(timer);
      offs.forEach((off) => off());
      resolve();
    };
    const offs = ['message', 'state', 'close'].map((e) => client.on(e, check));
  });
}
