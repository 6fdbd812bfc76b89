// The monitor page (net/web/monitor.*) in a real browser: Debian's chromium, headless, driven by
// playwright-core. Run: node --test net/tests/browser/ (CHROMIUM names another browser binary;
// SCREENSHOTS=DIR writes the screenshots that docs/monitor.md shows).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { startServer, token, publish, quote, order, alert } from '../clients/harness.mjs';

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const publisher = token('publisher', 'publisher');
const SIM = ['--shards', '2', '--simulator-symbols', '10', '--simulator-rate', '400'];
let browser;

before(async () => {
  browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--ignore-certificate-errors'] });
});
after(async () => {
  await browser.close();
});

/** A new page with its console errors, warnings and uncaught exceptions collected. */
async function open(url, viewport = { width: 1280, height: 900 }, colorScheme = 'light') {
  const context = await browser.newContext({ viewport, colorScheme, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const problems = { errors: [], warnings: [] };
  page.on('console', (m) => {
    if (m.type() === 'error') problems.errors.push(m.text());
    if (m.type() === 'warning') problems.warnings.push(m.text());
  });
  page.on('pageerror', (e) => problems.errors.push(String(e)));
  await page.goto(url);
  return { page, context, problems };
}

/** How many quotes the ticker card of `symbol` has shown. */
const updatesOf = (page, symbol) =>
  page.$eval(`.quote[data-symbol="${symbol}"]`, (c) => Number(c.dataset.updates || 0)).catch(() => 0);

test('the page loads clean under its policy, charts the server and ticks', async () => {
  const server = await startServer(SIM);
  try {
    const resp = await fetch(`http://${server.addr}/monitor`);
    const policy = resp.headers.get('content-security-policy');
    assert.match(policy, /script-src 'self'/);
    assert.doesNotMatch(policy, /unsafe-inline/);
    const { page, context, problems } = await open(`http://${server.addr}/`);
    await page.waitForSelector('#conn-state[data-state="open"]');
    await page.waitForFunction(() => document.querySelector('#server-status').dataset.state === 'healthy');
    // The ticker updates: AAPL's card shows one quote after another, at a real price.
    const first = await updatesOf(page, 'AAPL');
    await page.waitForFunction((n) => Number(document.querySelector('.quote[data-symbol="AAPL"]').dataset.updates || 0) > n + 2, first);
    const px = Number(await page.textContent('.quote[data-symbol="AAPL"] .px'));
    assert.ok(px > 150 && px < 400, `AAPL at ${px}`);
    // A price move flashes its card green or red.
    await page.waitForSelector('.quote.flash-up, .quote.flash-down');
    // The figures come from /api/ws/stats: this page's own connection is counted, deliveries per second shown.
    await page.waitForFunction(() => Number(document.querySelector('#f-connections').textContent) >= 1);
    await page.waitForFunction(() => /\d/.test(document.querySelector('#f-deliveries').textContent));
    assert.equal(await page.$$eval('#shards tbody tr', (rows) => rows.length), 2, 'one row per shard');
    // Adding a symbol subscribes to it.
    await page.fill('#ticker-input', 'v');
    await page.press('#ticker-input', 'Enter');
    await page.waitForFunction(() => Number(document.querySelector('.quote[data-symbol="V"]')?.dataset.updates || 0) > 0);
    assert.deepEqual(problems.errors, [], 'no console error');
    if (process.env.SCREENSHOTS) {
      mkdirSync(process.env.SCREENSHOTS, { recursive: true });
      // Half a minute of charts first.
      await page.waitForSelector('body[data-samples="30"]', { timeout: 60000 });
      await page.screenshot({ path: path.join(process.env.SCREENSHOTS, 'monitor-desktop.png') });
    }
    await context.close();
  } finally {
    await server.stop();
  }
});

test('with a user token: orders, executions and alerts; a critical alert stays until acknowledged', async () => {
  const server = await startServer(SIM, { env: { RUST_LOG: 'debug' } });
  const user = `u-${randomUUID()}`;
  const userToken = token(user);
  try {
    const { page, context, problems } = await open(`http://${server.addr}/?token=${userToken}`);
    await page.waitForSelector('#conn-state[data-state="open"]');
    assert.doesNotMatch(page.url(), /token=/, 'the token leaves the address bar');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tickwire-token') !== null), true);
    assert.equal(await page.evaluate(() => localStorage.getItem('tickwire-token')), null, 'not kept beyond the session');
    await page.waitForFunction((u) => document.querySelector('#account-user').textContent.includes(u), user);
    // The quotes and the six private channels are subscribed before anything is published.
    await page.waitForSelector('body[data-subscribed="7"]');
    assert.equal(await page.isHidden('#account-body'), false);

    await publish(server.addr, publisher, [order(user, 'ord-77')]);
    await page.waitForSelector('#orders li[data-order-id="ord-77"]');
    await page.waitForFunction(() => /Order ord-77: new/.test(document.querySelector('#toasts').textContent));
    assert.match(await page.textContent('#orders li[data-order-id="ord-77"]'), /BUY 100 AAPL @ 231.50.*new/);
    await publish(server.addr, publisher, [{ ...order(user, 'ord-77', 'filled'), data: { ...order(user, 'ord-77').data, status: 'filled', filled_qty: 100, avg_price: 231.5 } }]);
    await page.waitForFunction(() => document.querySelector('#orders li[data-order-id="ord-77"] .tag').textContent === 'filled');
    assert.equal(await page.$$eval('#orders li', (l) => l.length), 1, 'one line per order');

    await publish(server.addr, publisher, [{
      channel: 'executions', user_id: user,
      data: { trade_id: 't-1', order_id: 'ord-77', symbol: 'AAPL', side: 'buy', quantity: 100, price: 231.5, pnl: 0, executed_at: new Date().toISOString() },
    }]);
    await page.waitForFunction(() => /Executed: BUY 100 AAPL @ 231.50/.test(document.querySelector('#toasts').textContent));

    await publish(server.addr, publisher, [
      { channel: 'portfolio', user_id: user, data: { total_value: 125340.5, day_pnl: -812.25, cash: 48210, buying_power: 96420,
        positions: [{ symbol: 'AAPL', quantity: 100, avg_price: 231.5, market_price: 233.1, unrealized_pnl: 160 }] } },
      { channel: 'decisions', user_id: user, data: { session_id: 'sess-9', algorithm_id: 'mean-reversion', decision: 'buy',
        reasoning: 'price 2.1 sigma below its 20-period mean', confidence: 0.74, symbol: 'MSFT', price: 424.1 } },
      { channel: 'sessions', user_id: user, data: { session_id: 'sess-9', status: 'running', data: { current_pnl: 120.5 } } },
    ]);
    await page.waitForFunction(() => document.querySelector('#pf-value').textContent === '$125,340.50');
    assert.equal(await page.textContent('#pf-pnl'), '-$812.25');
    await page.waitForFunction(() => /buy MSFT.*74% · mean-reversion.*2\.1 sigma below/.test(document.querySelector('#decisions').textContent));
    await page.waitForFunction(() => document.querySelector('#session-status').textContent === 'sess-9: running');

    await publish(server.addr, publisher, [alert(user, 'alt-crit', 'critical')]);
    await page.waitForSelector('.alert[data-alert-id="alt-crit"][data-level="critical"]');
    if (process.env.SCREENSHOTS) {
      await page.waitForSelector('body[data-samples="10"]', { timeout: 60000 });
      await page.screenshot({ path: path.join(process.env.SCREENSHOTS, 'monitor-account.png'), fullPage: true });
    }
    // Unacknowledged, it comes back after a reload.
    await page.reload();
    await page.waitForSelector('.alert[data-alert-id="alt-crit"][data-level="critical"]');
    await page.click('.alert[data-alert-id="alt-crit"] button');
    assert.equal(await page.$('.alert[data-alert-id="alt-crit"]'), null, 'dismissed');
    // Acknowledged: after a reload it is not sent again. A later alert shows that the subscription was served
    // (redelivered alerts come before live ones).
    await page.evaluate(() => window.tickwireClient.sync());
    await page.reload();
    await page.waitForSelector('body[data-subscribed="7"]');
    await publish(server.addr, publisher, [alert(user, 'alt-later', 'info')]);
    await page.waitForSelector('.alert[data-alert-id="alt-later"]');
    assert.equal(await page.$('.alert[data-alert-id="alt-crit"]'), null, 'an acknowledged alert does not come back');
    assert.ok(!server.log().includes(userToken), 'the token is not in the server log');
    assert.match(server.log(), /connection closed/, 'debug lines about this page\'s connections were logged');
    assert.deepEqual(problems.errors, [], 'no console error');
    await context.close();
  } finally {
    await server.stop();
  }
});

test('the server restarting shows resuming, then the stream continues without a gap', async () => {
  const first = await startServer(SIM);
  let second = null;
  try {
    const { page, context, problems } = await open(`http://${first.addr}/`);
    await page.waitForSelector('#conn-state[data-state="open"]');
    const states = [];
    await page.exposeFunction('recordState', (s) => states.push(s));
    await page.evaluate(() => window.tickwireClient.on('state', (s) => window.recordState(s)));
    await first.stop();
    await page.waitForSelector('#conn-state[data-state="resuming"]');
    second = await startServer(SIM, { listen: first.addr });
    await page.waitForSelector('#conn-state[data-state="open"]', { timeout: 15000 });
    const n = await updatesOf(page, 'AAPL');
    await page.waitForFunction((k) => Number(document.querySelector('.quote[data-symbol="AAPL"]').dataset.updates) > k + 2, n);
    assert.deepEqual(states, ['resuming', 'open']);
    assert.deepEqual(problems.warnings.filter((w) => w.includes('gap')), [], 'no gap');
    await context.close();
  } finally {
    await first.stop();
    if (second) await second.stop();
  }
});

test('an admin token adds the admin stats; on a phone the page fits the width', async () => {
  const server = await startServer(SIM);
  try {
    const { page, context, problems } = await open(`http://${server.addr}/`, { width: 390, height: 844 }, 'dark');
    // The token pasted, rather than in the address.
    await page.waitForSelector('#conn-state[data-state="open"]');
    assert.equal(await page.isVisible('#admin'), false);
    await page.fill('#token-input', token('ops', 'admin'));
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('#admin:not([hidden])');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tickwire-token') !== null), true);
    // The new connection's welcome may come after the admin stats (a fetch of their own).
    await page.waitForFunction(() => /signed in as ops/.test(document.querySelector('#account-user').textContent));
    assert.match(await page.textContent('#admin-stats'), /activeConnections/);
    // The system's dark theme, then the light one chosen with the button (and remembered).
    const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(await background(), 'rgb(15, 20, 25)');
    await page.click('#theme');
    assert.equal(await background(), 'rgb(244, 246, 249)');
    assert.equal(await page.evaluate(() => localStorage.getItem('tickwire-theme')), 'light');
    await page.click('#theme');
    assert.equal(await background(), 'rgb(15, 20, 25)');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than the phone`);
    await page.waitForFunction(() => Number(document.querySelector('.quote[data-symbol="AAPL"]').dataset.updates || 0) > 2);
    if (process.env.SCREENSHOTS) {
      await page.waitForSelector('body[data-samples="10"]', { timeout: 60000 });
      await page.screenshot({ path: path.join(process.env.SCREENSHOTS, 'monitor-phone-dark.png'), fullPage: false });
    }
    assert.deepEqual(problems.errors, [], 'no console error');
    await context.close();
  } finally {
    await server.stop();
  }
});

test('behind TLS the page connects with wss:// to its own server', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tickwire-tls-'));
  const [cert, key] = [path.join(dir, 'cert.pem'), path.join(dir, 'key.pem')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'],
  { stdio: 'ignore' });
  const server = await startServer([...SIM, '--tls-cert', cert, '--tls-key', key]);
  try {
    const { page, context, problems } = await open(`https://${server.addr}/`);
    await page.waitForSelector('#conn-state[data-state="open"]');
    assert.match(await page.evaluate(() => window.tickwireClient.url), /^wss:\/\//);
    await page.waitForFunction(() => Number(document.querySelector('.quote[data-symbol="AAPL"]').dataset.updates || 0) > 1);
    assert.deepEqual(problems.errors, [], 'no console error');
    await context.close();
  } finally {
    await server.stop();
  }
});

test('Chromium negotiates permessage-deflate and gets the same messages as a client without it', async () => {
  const server = await startServer(['--shards', '2', '--no-simulator']);
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    const handshakes = [];
    const browserFrames = [];
    cdp.on('Network.webSocketHandshakeResponseReceived', (e) => handshakes.push(e.response.headers));
    // CDP shows each message as the page gets it: inflated.
    cdp.on('Network.webSocketFrameReceived', (e) => browserFrames.push(e.response.payloadData));
    await page.goto(`http://${server.addr}/?symbols=AAPL`);
    await page.waitForSelector('body[data-subscribed="1"]');

    const plain = new WebSocket(`ws://${server.addr}/v1/stream`, { perMessageDeflate: false });
    const plainFrames = [];
    await new Promise((resolve) => {
      plain.on('message', (data) => {
        const text = data.toString();
        plainFrames.push(text);
        if (JSON.parse(text).type === 'subscribed') resolve();
      });
      plain.on('open', () => plain.send(JSON.stringify({ action: 'subscribe', channel: 'quotes', symbols: ['AAPL'] })));
    });
    assert.equal(plain.extensions, '', 'the Node client did not offer compression');

    for (let i = 1; i <= 20; i++) await publish(server.addr, publisher, [quote('AAPL', 230 + i / 100)]);
    const quotes = (frames) => frames.filter((f) => /"type":"quote"/.test(f));
    await page.waitForFunction(() => Number(document.querySelector('.quote[data-symbol="AAPL"]').dataset.sequence) === 20);
    await new Promise((resolve) => {
      const check = () => (quotes(plainFrames).length >= 20 ? resolve() : plain.once('message', check));
      check();
    });
    const extensions = handshakes.map((h) => h['Sec-WebSocket-Extensions'] || h['sec-websocket-extensions']);
    assert.match(extensions[0], /permessage-deflate/, 'Chromium and the server agreed on compression');
    assert.equal(quotes(browserFrames).length, 20);
    assert.deepEqual(quotes(browserFrames), quotes(plainFrames), 'the same messages, byte for byte');
    const metrics = await (await fetch(`http://${server.addr}/metrics`)).text();
    const deflated = [...metrics.matchAll(/^tickwire_deflated_frames_total\{[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
    assert.ok(deflated >= 20, `${deflated} updates deflated`);
    plain.close();
    await context.close();
  } finally {
    await server.stop();
  }
});
