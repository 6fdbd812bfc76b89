// The monitor page (docs/monitor.md): the server's figures from /api/ws/stats, a live quote ticker, and with a
// user token the account's portfolio, orders, executions, alerts, sessions and algorithm decisions, all over
// one connection of tickwire's own client (/client.js).
import { TickwireClient } from '/client.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const HISTORY_S = 300;
const DEFAULT_SYMBOLS = ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'TSLA', 'META', 'JPM'];
const PRIVATE = ['orders', 'executions', 'portfolio', 'alerts', 'sessions', 'decisions'];

// --- theme ---------------------------------------------------------------------------------------------
const savedTheme = localStorage.getItem('tickwire-theme');
if (savedTheme) document.documentElement.dataset.theme = savedTheme;
$('theme').addEventListener('click', () => {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === 'dark'
    : matchMedia('(prefers-color-scheme: dark)').matches;
  const next = dark ? 'light' : 'dark';
  document.documentElement.dataset.theme = next;
  localStorage.setItem('tickwire-theme', next);
  drawCharts();
});

// --- formatting ----------------------------------------------------------------------------------------
const int = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const usd = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
const price = (x) => (typeof x === 'number' ? x.toFixed(2) : '–');
function compact(x) {
  if (!Number.isFinite(x)) return '–';
  if (x >= 1e6) return `${(x / 1e6).toFixed(x >= 1e7 ? 1 : 2)}M`;
  if (x >= 1e4) return `${(x / 1e3).toFixed(1)}k`;
  return int.format(x);
}
function bytes(x) {
  if (!Number.isFinite(x)) return '–';
  if (x >= 1 << 20) return `${(x / (1 << 20)).toFixed(1)} MiB`;
  if (x >= 1 << 10) return `${(x / (1 << 10)).toFixed(1)} KiB`;
  return `${int.format(x)} B`;
}
const ms = (us) => (us == null ? '–' : us >= 1000 ? `${(us / 1000).toFixed(us >= 10000 ? 0 : 1)} ms` : `${us} µs`);
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

// --- the token: ?token= or pasted, kept in sessionStorage only, never left in the address ---------------
if (params.has('token')) {
  sessionStorage.setItem('tickwire-token', params.get('token'));
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
}
let token = sessionStorage.getItem('tickwire-token');
function claims(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

// --- charts --------------------------------------------------------------------------------------------
/** From-source latencies (ms) of the quotes received since the last stats poll. */
const sourceWindow = [];
const series = { deliveries: [], ingested: [], flush99: [], flush50: [], source99: [], source50: [] };
function push(name, value) {
  const s = series[name];
  s.push(value);
  if (s.length > HISTORY_S) s.shift();
}
function drawChart(canvas, lines, unit) {
  const css = getComputedStyle(document.documentElement);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const values = lines.flatMap((l) => l.data.filter(Number.isFinite));
  let max = Math.max(1e-9, ...values);
  const step = 10 ** Math.floor(Math.log10(max));
  max = Math.ceil(max / step) * step;
  const left = 44, bottom = h - 16, top = 6;
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = css.getPropertyValue('--muted');
  g.strokeStyle = css.getPropertyValue('--line');
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = bottom - ((bottom - top) * i) / 4;
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(w, y);
    g.stroke();
    g.fillText(unit((max * i) / 4), 2, y + 4);
  }
  // The window grows from one minute to five as the samples come.
  const span = Math.min(HISTORY_S, Math.max(60, ...lines.map((l) => l.data.length)));
  g.fillText(span >= 120 ? `-${Math.round(span / 60)} min` : `-${span} s`, left, h - 3);
  g.fillText('now', w - 22, h - 3);
  for (const line of lines) {
    g.strokeStyle = css.getPropertyValue(line.color);
    g.lineWidth = 1.6;
    g.beginPath();
    let started = false;
    line.data.forEach((v, i) => {
      if (!Number.isFinite(v)) return;
      const x = left + ((w - left) * (i + span - line.data.length)) / (span - 1);
      const y = bottom - ((bottom - top) * v) / max;
      if (started) g.lineTo(x, y);
      else g.moveTo(x, y);
      started = true;
    });
    g.stroke();
  }
}
function drawCharts() {
  drawChart($('chart-throughput'), [
    { data: series.deliveries, color: '--c1' },
    { data: series.ingested, color: '--c2' },
  ], compact);
  drawChart($('chart-latency'), [
    { data: series.flush99, color: '--c1' },
    { data: series.flush50, color: '--c3' },
    { data: series.source99, color: '--c2' },
    { data: series.source50, color: '--c4' },
  ], (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1)));
}
window.addEventListener('resize', drawCharts);

// --- server figures from /api/ws/stats ------------------------------------------------------------------
/** The bound (µs) under which `q` of the samples between two cumulative histograms fall. */
function windowPercentile(bounds, now, before, q) {
  const diff = now.map((c, i) => c - (before ? before[i] : 0));
  const total = diff[diff.length - 1];
  if (!total) return null;
  const rank = Math.ceil(q * total);
  const i = diff.findIndex((c) => c >= rank);
  return bounds[Math.min(i, bounds.length - 1)];
}
let previous = null;
async function pollStats() {
  let stats;
  try {
    const resp = await fetch('/api/ws/stats', { cache: 'no-store' });
    stats = await resp.json();
  } catch {
    $('server-status').dataset.state = 'down';
    $('server-status').textContent = 'server unreachable';
    return;
  }
  $('server-status').dataset.state = stats.status;
  $('server-status').textContent = `server ${stats.status}`;
  $('f-connections').textContent = int.format(stats.connections);
  $('f-max').textContent = `of ${int.format(stats.max_connections)} · ${stats.shards.length} shards`;
  $('f-subscriptions').textContent = int.format(stats.subscriptions);
  $('f-topics').textContent = `${int.format(stats.topics)} topics`;
  $('f-uptime').textContent = duration(stats.uptime_s);
  $('f-epoch').textContent = `epoch ${stats.epoch}`;
  const p = previous && previous.epoch === stats.epoch ? previous : null;
  const dt = p ? (stats.timestamp_ms - p.timestamp_ms) / 1000 : 0;
  const rate = (get) => (p && dt > 0 ? Math.max(0, (get(stats) - get(p)) / dt) : NaN);
  const deliveries = rate((s) => s.totals.deliveries);
  const ingested = rate((s) => s.totals.ingested);
  $('f-deliveries').textContent = compact(deliveries);
  $('f-bytes').textContent = `${bytes(rate((s) => s.totals.delivered_bytes))} / s`;
  $('f-ingested').textContent = compact(ingested);
  $('f-sources').textContent = `${compact(stats.totals.simulated)} simulated · ${compact(stats.totals.published)} published`;
  const h = stats.ingest_to_flush;
  const before = p ? p.ingest_to_flush.cumulative : null;
  const f99 = windowPercentile(h.bounds_us, h.cumulative, before, 0.99);
  const f50 = windowPercentile(h.bounds_us, h.cumulative, before, 0.5);
  $('f-flush').textContent = ms(f99);
  $('f-flush50').textContent = `p50 ${ms(f50)}`;
  if (p) {
    push('deliveries', deliveries);
    push('ingested', ingested);
    push('flush99', f99 == null ? NaN : f99 / 1000);
    push('flush50', f50 == null ? NaN : f50 / 1000);
    const src = sourceWindow.splice(0).sort((a, b) => a - b);
    const at = (q) => (src.length ? src[Math.min(src.length - 1, Math.ceil(q * src.length) - 1)] : NaN);
    push('source99', at(0.99));
    push('source50', at(0.5));
    drawCharts();
    document.body.dataset.samples = String(series.deliveries.length);
  }
  const rows = stats.shards.map((s) => {
    const ps = p && p.shards[s.shard];
    const d = ps && dt > 0 ? (s.deliveries - ps.deliveries) / dt : NaN;
    const tr = el('tr');
    [s.shard, int.format(s.connections), int.format(s.subscriptions), int.format(s.topics), compact(d),
      ms(s.loop_lag_p99_us), int.format(s.stalls)].forEach((v) => tr.append(el('td', null, String(v))));
    return tr;
  });
  $('shards').tBodies[0].replaceChildren(...rows);
  previous = stats;
}
pollStats();
setInterval(pollStats, 1000);

// --- the stream ----------------------------------------------------------------------------------------
let symbols = (params.get('symbols') || localStorage.getItem('tickwire-symbols') || DEFAULT_SYMBOLS.join(','))
  .split(/[\s,]+/).filter(Boolean).map((s) => s.toUpperCase());
const quotes = new Map(); // symbol -> {card, first, last}
let client = null;

function quoteCard(symbol) {
  let q = quotes.get(symbol);
  if (q) return q;
  const card = el('div', 'quote');
  card.dataset.symbol = symbol;
  const rm = el('button', 'rm', '×');
  rm.type = 'button';
  rm.title = `remove ${symbol}`;
  rm.addEventListener('click', () => removeSymbol(symbol));
  card.append(el('span', 'sym', symbol), rm, el('span', 'px', '–'), el('span', 'chg', ''), el('span', 'ba', 'waiting for a quote'));
  $('ticker').append(card);
  q = { card, first: null, last: null, timer: null };
  quotes.set(symbol, q);
  return q;
}
function onQuote(data, frame) {
  const q = quoteCard(String(data.symbol).toUpperCase());
  const [, , px, chg, ba] = q.card.children;
  if (q.first == null) q.first = data.last;
  if (q.last != null && data.last !== q.last) {
    q.card.classList.remove('flash-up', 'flash-down');
    q.card.classList.add(data.last > q.last ? 'flash-up' : 'flash-down');
    clearTimeout(q.timer);
    q.timer = setTimeout(() => q.card.classList.remove('flash-up', 'flash-down'), 400);
  }
  q.last = data.last;
  px.textContent = price(data.last);
  const change = data.last - q.first;
  chg.textContent = `${change >= 0 ? '+' : ''}${change.toFixed(2)} (${((100 * change) / q.first).toFixed(2)}%)`;
  chg.title = 'change since this page opened';
  chg.className = `chg ${change > 0 ? 'up' : change < 0 ? 'down' : ''}`;
  ba.textContent = `bid ${price(data.bid)} × ${int.format(data.bid_size)} · ask ${price(data.ask)} × ${int.format(data.ask_size)}`;
  q.card.dataset.sequence = frame.sequence;
  q.card.dataset.updates = String(Number(q.card.dataset.updates || 0) + 1);
  if (frame.type !== 'snapshot') {
    const source = frame.source_ts ?? frame.timestamp;
    const t = typeof source === 'number' ? (source > 1e14 ? source / 1000 : source > 1e11 ? source : source * 1000) : Date.parse(source);
    if (Number.isFinite(t)) sourceWindow.push(Math.max(0, Date.now() - t));
  }
}
function saveSymbols() {
  localStorage.setItem('tickwire-symbols', symbols.join(','));
}
function removeSymbol(symbol) {
  symbols = symbols.filter((s) => s !== symbol);
  saveSymbols();
  const q = quotes.get(symbol);
  if (q) q.card.remove();
  quotes.delete(symbol);
  if (client) client.unsubscribe('quotes', { symbols: [symbol] });
}
$('ticker-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const added = $('ticker-input').value.split(/[\s,]+/).filter(Boolean).map((s) => s.toUpperCase())
    .filter((s) => !symbols.includes(s));
  $('ticker-input').value = '';
  if (!added.length) return;
  symbols.push(...added);
  saveSymbols();
  added.forEach(quoteCard);
  if (client) client.subscribe('quotes', { symbols: added });
});

// --- the account -----------------------------------------------------------------------------------------
const orders = new Map(); // order_id -> li
const shownAlerts = new Map(); // sequence -> {level, dismissed}
let alertsAcked = 0;
function toast(text) {
  const t = el('div', 'toast', text);
  $('toasts').prepend(t);
  while ($('toasts').children.length > 4) $('toasts').lastChild.remove();
  setTimeout(() => t.remove(), 5000);
}
// Alerts are acknowledged by the page: up to the oldest critical one still on screen.
function ackAlerts() {
  let upTo = Infinity;
  for (const [seq, a] of shownAlerts) if (a.level === 'critical' && !a.dismissed) upTo = Math.min(upTo, seq - 1);
  if (upTo === Infinity) upTo = Math.max(0, ...shownAlerts.keys());
  if (upTo > alertsAcked && client) {
    client.ack('alerts', upTo);
    alertsAcked = upTo;
  }
}
function onAlert(data, frame) {
  if (shownAlerts.has(frame.sequence)) return;
  const level = String(data.level || 'info').toLowerCase();
  shownAlerts.set(frame.sequence, { level, dismissed: false });
  const box = el('div', 'alert');
  box.dataset.level = level;
  box.dataset.alertId = data.alert_id;
  box.setAttribute('role', 'alert');
  const head = el('div', 'head');
  head.append(el('span', null, `${level} · ${data.type || 'alert'}${data.symbol ? ` · ${data.symbol}` : ''}`),
    el('small', null, new Date(data.triggered_at || frame.timestamp).toLocaleTimeString()));
  const dismiss = el('button', null, level === 'critical' ? 'acknowledge' : 'dismiss');
  dismiss.type = 'button';
  const close = () => {
    shownAlerts.get(frame.sequence).dismissed = true;
    box.remove();
    ackAlerts();
  };
  dismiss.addEventListener('click', close);
  box.append(head, el('div', null, data.message), dismiss);
  $('alerts').prepend(box);
  if (level !== 'critical') setTimeout(() => box.isConnected && close(), 8000);
  ackAlerts();
}
function onOrder(data, frame) {
  let li = orders.get(data.order_id);
  if (!li) {
    li = el('li');
    li.dataset.orderId = data.order_id;
    orders.set(data.order_id, li);
  }
  const tag = el('span', `tag ${data.status}`, data.status);
  const what = `${String(data.side).toUpperCase()} ${data.qty} ${data.symbol}${data.limit_price != null ? ` @ ${price(data.limit_price)}` : ''}`;
  li.replaceChildren(el('strong', null, data.order_id), el('span', null, what), tag,
    el('span', 'sub', data.filled_qty ? `filled ${data.filled_qty}${data.avg_price != null ? ` @ ${price(data.avg_price)}` : ''}` : ''));
  $('orders').prepend(li);
  while ($('orders').children.length > 30) {
    orders.delete($('orders').lastChild.dataset.orderId);
    $('orders').lastChild.remove();
  }
  if (frame.type !== 'snapshot') {
    li.dataset.sequence = frame.sequence;
    toast(`Order ${data.order_id}: ${data.status}`);
  }
}
function onExecution(data) {
  toast(`Executed: ${String(data.side).toUpperCase()} ${data.quantity} ${data.symbol} @ ${price(data.price)}`);
}
function onPortfolio(data) {
  $('pf-value').textContent = usd.format(data.total_value);
  $('pf-pnl').textContent = `${data.day_pnl >= 0 ? '+' : ''}${usd.format(data.day_pnl)}`;
  $('pf-pnl').className = `value ${data.day_pnl > 0 ? 'up' : data.day_pnl < 0 ? 'down' : ''}`;
  $('pf-cash').textContent = usd.format(data.cash);
}
function onDecision(data) {
  const li = el('li');
  li.append(el('strong', null, `${data.decision} ${data.symbol}`), el('span', null, `@ ${price(data.price)}`),
    el('span', 'tag', `${Math.round(100 * data.confidence)}% · ${data.algorithm_id}`), el('span', 'why', data.reasoning));
  $('decisions').prepend(li);
  while ($('decisions').children.length > 20) $('decisions').lastChild.remove();
}
function onSession(data) {
  $('session-status').textContent = `${data.session_id}: ${data.status}`;
}

// --- admin ------------------------------------------------------------------------------------------------
let adminTimer = null;
async function pollAdmin() {
  const resp = await fetch('/api/admin/websocket-stats', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' })
    .catch(() => null);
  if (!resp || !resp.ok) return;
  const stats = await resp.json();
  const rows = [];
  const add = (k, v) => {
    const tr = el('tr');
    tr.append(el('td', null, k), el('td', null, String(v)));
    rows.push(tr);
  };
  for (const [k, v] of Object.entries(stats)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) Object.entries(v).forEach(([k2, v2]) => add(`${k}.${k2}`, v2));
    else if (!Array.isArray(v)) add(k, v);
  }
  $('admin-stats').tBodies[0].replaceChildren(...rows);
  $('admin').hidden = false;
}

// --- connecting -----------------------------------------------------------------------------------------
function connect() {
  if (client) client.close();
  orders.clear();
  shownAlerts.clear();
  alertsAcked = 0;
  ['orders', 'decisions', 'alerts'].forEach((id) => $(id).replaceChildren());
  clearInterval(adminTimer);
  $('admin').hidden = true;
  // The page acknowledges alerts itself (when dismissed); orders and executions once shown.
  client = new TickwireClient({ token: token || undefined, autoAck: ['orders', 'executions'] });
  window.tickwireClient = client;
  const state = (s) => {
    $('conn-state').dataset.state = s;
    $('conn-state').textContent = s;
    document.body.dataset.state = s;
  };
  state(client.state);
  client.on('state', state);
  // Replies to this page's subscriptions so far, on every connection: for tests and the curious.
  let subscribed = 0;
  document.body.dataset.subscribed = '0';
  client.on('subscribed', () => (document.body.dataset.subscribed = String(++subscribed)));
  client.on('welcome', (w) => {
    $('account-user').textContent = w.user_id ? `signed in as ${w.user_id}` : 'not signed in';
  });
  client.on('quotes', onQuote);
  client.on('gap', (g) => console.warn('tickwire: gap', g));
  client.on('error', (e) => console.warn('tickwire:', e.code, e.message));
  client.on('system', (s) => s.retry_after_ms != null && toast(`${s.message} (${s.retry_after_ms} ms)`));
  symbols.forEach(quoteCard);
  if (symbols.length) client.subscribe('quotes', { symbols });
  const signedIn = Boolean(token);
  $('account-body').hidden = !signedIn;
  $('token-clear').hidden = !signedIn;
  if (signedIn) {
    client.on('orders', onOrder);
    client.on('executions', onExecution);
    client.on('portfolio', onPortfolio);
    client.on('alerts', onAlert);
    client.on('decisions', onDecision);
    client.on('sessions', onSession);
    PRIVATE.forEach((c) => client.subscribe(c));
    if (claims(token).role === 'admin') {
      pollAdmin();
      adminTimer = setInterval(pollAdmin, 5000);
    }
  }
}
$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = $('token-input').value.trim();
  $('token-input').value = '';
  if (!value) return;
  token = value;
  sessionStorage.setItem('tickwire-token', token);
  connect();
});
$('token-clear').addEventListener('click', () => {
  token = null;
  sessionStorage.removeItem('tickwire-token');
  connect();
});
connect();
