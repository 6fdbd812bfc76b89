// The JavaScript client (net/web/client.js, served at /client.js) against the real binary, in Node with
// the ws package: resume without loss across a cut connection, acknowledgements, reconnect through a server
// restart, and dead-connection detection from the heartbeat. Run: node --test net/tests/clients/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { TickwireClient } from '../../web/client.js';
import { startServer, token, publish, quote, order, proxy, until } from './harness.mjs';

const publisher = token('publisher', 'publisher');

/** Every update and snapshot of `client`, and its gaps, duplicates and states, as they come. */
function record(client) {
  const seen = { updates: [], snapshots: [], gaps: [], duplicates: [], states: [], resets: [], closes: [], subscribed: [] };
  client.on('subscribed', (f) => seen.subscribed.push(f));
  client.on('update', (f) => seen.updates.push(f));
  client.on('snapshot', (f) => seen.snapshots.push(f));
  client.on('gap', (g) => seen.gaps.push(g));
  client.on('duplicate', (f) => seen.duplicates.push(f));
  client.on('state', (s) => seen.states.push(s));
  client.on('reset', (f) => seen.resets.push(f));
  client.on('close', (c) => seen.closes.push(c));
  return seen;
}

/** The sequences of `channel` that `seen` processed (snapshots and new updates), in order. */
const sequences = (seen, channel) =>
  [...seen.snapshots, ...seen.updates].filter((f) => f.channel === channel).map((f) => f.sequence).sort((a, b) => a - b);

test('a cut connection is resumed with every sequence once, and critical messages are acknowledged', async () => {
  const server = await startServer(['--shards', '2', '--no-simulator']);
  const path = await proxy(server.addr);
  const user = `u-${randomUUID()}`;
  try {
    const client = new TickwireClient({ url: `ws://${path.addr}/v1/stream`, token: token(user), WebSocket });
    const seen = record(client);
    client.subscribe('quotes', { symbols: ['AAPL', 'MSFT'] });
    client.subscribe('orders');
    await until(client, () => seen.subscribed.length === 2, 'both subscriptions');

    const total = 400;
    for (let i = 1; i <= total; i++) {
      const batch = [quote(i % 2 ? 'AAPL' : 'MSFT', 200 + i / 100)];
      if (i % 20 === 0) batch.push(order(user, `ord-${i}`));
      await publish(server.addr, publisher, batch);
      // Cut the connection twice mid-stream: the client must come back and resume.
      if (i === 150 || i === 300) {
        const opened = seen.states.filter((s) => s === 'open').length;
        path.cut();
        await until(client, () => seen.states.filter((s) => s === 'open').length > opened, 'the resumed connection');
      }
    }
    await until(client, () => {
      const q = sequences(seen, 'quotes');
      return q.filter((s) => s >= 1).length >= total && sequences(seen, 'orders').length >= total / 20;
    }, 'every update');
    for (const symbol of ['AAPL', 'MSFT']) {
      // The subscription may start from a snapshot of the first updates (placed a moment after `subscribed`):
      // from there on, each sequence once, in order.
      const got = [...seen.snapshots, ...seen.updates].filter((f) => f.channel === 'quotes' && f.data.symbol === symbol);
      const seqs = got.map((f) => f.sequence);
      const first = seqs[0];
      assert.ok(first <= 3, `${symbol} starts at ${first}`);
      assert.deepEqual(seqs, Array.from({ length: total / 2 - first + 1 }, (_, i) => first + i), `${symbol}: each sequence once, in order`);
    }
    const orders = seen.updates.filter((f) => f.channel === 'orders').map((f) => f.data.order_id);
    assert.deepEqual(orders, Array.from({ length: total / 20 }, (_, i) => `ord-${(i + 1) * 20}`), 'every order once, in order');
    assert.deepEqual(seen.gaps, [], 'no gap');
    assert.deepEqual(seen.resets, [], 'resumed, not reset');
    assert.deepEqual(seen.states, ['open', 'resuming', 'open', 'resuming', 'open']);
    assert.equal(client.reconnects, 2);
    assert.deepEqual(client.lastSequences('quotes'), { AAPL: total / 2, MSFT: total / 2 });
    await client.sync(); // the acks are read by the server
    client.close();
    assert.equal(client.state, 'closed');

    // The acknowledgements reached the server: the same user subscribing again gets no order back.
    const again = new TickwireClient({ url: `ws://${server.addr}/v1/stream`, token: token(user), WebSocket });
    const seen2 = record(again);
    again.subscribe('orders', {});
    again.subscribe('quotes', { symbols: ['AAPL'] });
    await until(again, () => seen2.snapshots.some((f) => f.channel === 'quotes'), 'the quotes snapshot after the orders');
    assert.deepEqual(seen2.updates.filter((f) => f.channel === 'orders'), [], 'acknowledged orders are not sent again');
    again.close();
  } finally {
    await path.close();
    await server.stop();
  }
});

test('unacknowledged critical messages come again after a reconnect, and are skipped as duplicates', async () => {
  const server = await startServer(['--shards', '1', '--no-simulator']);
  const path = await proxy(server.addr);
  const user = `u-${randomUUID()}`;
  try {
    const client = new TickwireClient({ url: `ws://${path.addr}/v1/stream`, token: token(user), WebSocket, autoAck: false });
    const seen = record(client);
    client.subscribe('orders');
    await client.once('subscribed');
    await publish(server.addr, publisher, [order(user, 'ord-1'), order(user, 'ord-2'), order(user, 'ord-3')]);
    await until(client, () => seen.updates.length === 3, 'three orders');
    client.ack('orders', 1);
    await client.sync(); // the ack is read before the cut
    path.cut();
    await until(client, () => seen.duplicates.length === 2, 'orders 2 and 3 again');
    assert.deepEqual(seen.duplicates.map((f) => f.data.order_id), ['ord-2', 'ord-3'], 'the unacknowledged ones, in order');
    assert.deepEqual(seen.updates.map((f) => f.data.order_id), ['ord-1', 'ord-2', 'ord-3'], 'processed once each');
    client.close();
  } finally {
    await path.close();
    await server.stop();
  }
});

test('the client follows a server restart: shutdown notice, resuming, reset on the new epoch, then live again', async () => {
  const first = await startServer(['--shards', '2', '--no-simulator']);
  let second = null;
  try {
    const client = new TickwireClient({ url: `ws://${first.addr}/v1/stream`, WebSocket });
    const seen = record(client);
    const notices = [];
    client.on('system', (s) => notices.push({ ...s, at: Date.now() }));
    client.subscribe('quotes', { symbols: ['NVDA'] });
    await client.once('subscribed');
    for (let i = 1; i <= 5; i++) await publish(first.addr, publisher, [quote('NVDA', 130 + i)]);
    await until(client, () => client.lastSequences('quotes').NVDA === 5, 'five quotes');
    const epoch = client.epoch;

    await first.stop();
    await until(client, () => client.state === 'resuming', 'resuming');
    assert.equal(notices.length, 1, 'one shutdown notice');
    assert.ok(notices[0].retry_after_ms >= 500 && notices[0].retry_after_ms <= 5000, JSON.stringify(notices[0]));
    const closedAt = Date.now();
    second = await startServer(['--shards', '2', '--no-simulator'], { listen: first.addr });
    await until(client, () => client.state === 'open', 'the reconnect', 15000);
    // The hint was honoured: no reconnect before it (the new server was not even there for part of it).
    assert.ok(Date.now() - notices[0].at >= notices[0].retry_after_ms - 50, 'reconnected after retry_after_ms');
    assert.ok(Date.now() - closedAt < notices[0].retry_after_ms + 5000);
    assert.notEqual(client.epoch, epoch, 'a new epoch');
    await until(client, () => seen.resets.length === 1, 'the reset');
    assert.deepEqual(seen.resets.map((r) => [r.symbol, r.reason]), [['NVDA', 'epoch_changed']]);
    assert.deepEqual(client.lastSequences('quotes'), {}, 'a reset forgets the topic');

    for (let i = 1; i <= 5; i++) await publish(second.addr, publisher, [quote('NVDA', 140 + i)]);
    await until(client, () => client.lastSequences('quotes').NVDA === 5, 'the new server\'s quotes');
    assert.deepEqual(seen.gaps, [], 'no gap');
    assert.deepEqual(seen.states, ['open', 'resuming', 'open']);
    const after = seen.updates.slice(5).map((f) => f.data.last);
    assert.deepEqual(after, [141, 142, 143, 144, 145]);
    client.close();
  } finally {
    await first.stop();
    if (second) await second.stop();
  }
});

test('a dead connection is detected after two silent heartbeat intervals; a quiet live one is kept with pings', async () => {
  const server = await startServer(['--shards', '1', '--no-simulator', '--heartbeat-s', '1']);
  const path = await proxy(server.addr);
  try {
    const client = new TickwireClient({ url: `ws://${path.addr}/v1/stream`, WebSocket });
    const seen = record(client);
    let pongs = 0;
    client.on('pong', () => pongs++);
    await until(client, () => client.state === 'open', 'open');
    assert.equal(client.heartbeatS, 1);
    // Quiet but alive: the client probes with pings and keeps the connection.
    await until(client, () => pongs >= 3, 'three pongs on a quiet connection', 10000);
    assert.deepEqual(seen.closes, []);

    path.freeze();
    const frozenAt = Date.now();
    await until(client, () => seen.closes.length === 1, 'the dead connection noticed', 10000);
    const silent = Date.now() - frozenAt;
    assert.equal(seen.closes[0].code, 4000);
    assert.ok(silent >= 1500 && silent < 4000, `noticed after ${silent} ms (two 1 s intervals)`);
    assert.equal(client.state, 'resuming');
    await until(client, () => client.state === 'open', 'a new connection');
    assert.equal(client.reconnects, 1);
    client.close();
  } finally {
    await path.close();
    await server.stop();
  }
});
