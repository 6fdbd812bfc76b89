// tickwire's JavaScript client: an ES module, no dependencies, no build step (docs/client.md).
// Served by the server at /client.js (types at /client.d.ts); runs in browsers and in Node 20+ (pass a
// WebSocket implementation such as the `ws` package's where there is no global one).
//
// It follows the reference client of docs/protocol.md: per topic it keeps the last sequence processed,
// skips duplicates, reports gaps, forgets a topic on `reset`, acknowledges critical messages, resumes every
// subscription with `from_sequence` and `epoch` after a reconnect (jittered exponential backoff, or the
// server's `retry_after_ms` after a shutdown notice), and treats two heartbeat intervals of silence as a
// dead connection.

/** Channels whose messages are delivered at least once and must be acknowledged. */
export const CRITICAL_CHANNELS = Object.freeze(['orders', 'executions', 'alerts']);

/** Channels of one user, keyed by no symbol (`*` in `from_sequence`). */
export const PRIVATE_CHANNELS = Object.freeze(['orders', 'executions', 'portfolio', 'alerts', 'sessions', 'decisions']);

/** The connection states, in the order a connection usually goes through them. */
export const STATES = Object.freeze(['connecting', 'open', 'resuming', 'closed']);

const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 5000;
const ACK_DELAY_MS = 20;

/** The stream URL of the server that served the current page (`wss://` under https), if there is a page. */
export function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) throw new Error('tickwire: no page to take the server from; pass options.url');
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/v1/stream`;
}

function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return `js-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Where a subscription's sequences are kept: its channel, and for bars its interval (`bars/1m`). */
function spaceOfSub(sub) {
  return sub.channel === 'bars' ? `bars/${sub.interval || '1m'}` : sub.channel;
}

function spaceOfFrame(frame) {
  return frame.channel === 'bars' && frame.data && frame.data.interval ? `bars/${frame.data.interval}` : frame.channel;
}

/** The key of the topic an update or snapshot frame belongs to, within its subscription (see `topicKey`). */
function frameKey(sub, frame) {
  const channel = frame.channel;
  if (PRIVATE_CHANNELS.includes(channel) || channel === 'system') return '*';
  const data = frame.data || {};
  if (channel === 'news') {
    // All news has one topic; news for symbols is sequenced per symbol: the first subscribed one it names.
    if (!sub || !sub.symbols) return '*';
    const named = Array.isArray(data.symbols) ? data.symbols.map((s) => String(s).toUpperCase()) : [];
    return named.find((s) => sub.symbols.includes(s)) || named[0] || '*';
  }
  return data.symbol != null ? String(data.symbol).toUpperCase() : '*';
}

/**
 * A connection to a tickwire server that survives reconnects.
 *
 * Events (`on(name, listener)`): `state` (the new state), `welcome`, `subscribed`, `unsubscribed`, each
 * channel's name (`quotes`, `orders`, ...: `(data, frame)` for every snapshot and every new update), `update`
 * (every new update frame), `snapshot`, `duplicate`, `gap` (`{channel, key, expected, received}`), `reset`,
 * `system` (notices, the shutdown notice included), `error` (error frames), `close` (`{code, reason}` of each
 * connection that ends), `message` (every frame, parsed, once the client has taken it into account).
 */
export class TickwireClient {
  /**
   * @param {object} [options]
   * @param {string} [options.url] the stream endpoint, e.g. `ws://host:8080/v1/stream` (default: the page's server)
   * @param {string} [options.token] a JWT, sent as `?token=`
   * @param {string} [options.clientId] names this client across its reconnects (default: a random UUID)
   * @param {boolean|string[]} [options.autoAck] acknowledge critical messages once their listeners return:
   *   `true` (the default) for every critical channel, `false` for none, or the channels to acknowledge (ack
   *   the others yourself with `ack`)
   * @param {Function} [options.WebSocket] a WebSocket constructor (default: the global one)
   * @param {Function} [options.random] a random number source in [0, 1), for the reconnect jitter
   */
  constructor(options = {}) {
    this.url = options.url || defaultUrl();
    this.token = options.token || null;
    this.clientId = options.clientId || randomId();
    const auto = options.autoAck == null || options.autoAck === true ? CRITICAL_CHANNELS : options.autoAck || [];
    /** The critical channels acknowledged by the client itself. */
    this.autoAck = Object.freeze([...auto]);
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new Error('tickwire: no WebSocket here; pass options.WebSocket (e.g. the ws package)');
    }
    this.random = options.random || Math.random;
    /** @type {'connecting'|'open'|'resuming'|'closed'} */
    this.state = 'connecting';
    this.epoch = null;
    this.heartbeatS = 30;
    this.userId = null;
    this.connectionId = null;
    /** Reconnects made so far. */
    this.reconnects = 0;
    this._listeners = new Map();
    this._subs = new Map(); // subscription key -> {channel, symbols, interval, throttle_ms}
    this._last = new Map(); // channel -> Map(key -> last sequence)
    this._pendingAcks = new Map(); // channel -> highest sequence to acknowledge
    this._ackTimer = null;
    this._ws = null;
    this._attempt = 0;
    this._retryAfterMs = null;
    this._reconnectTimer = null;
    this._watchdog = null;
    this._lastFrameAt = 0;
    this._lastSentAt = 0;
    this._nextId = 1;
    this._closedByUser = false;
    this._connect();
  }

  /** Adds `listener` for `event`; returns a function that removes it. */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    const set = this._listeners.get(event);
    if (set) set.delete(listener);
  }

  /** Resolves with the next `event`'s first argument. */
  once(event) {
    return new Promise((resolve) => {
      const off = this.on(event, (value) => {
        off();
        resolve(value);
      });
    });
  }

  /**
   * Subscribes to `channel` (kept across reconnects, resumed from the last sequences seen).
   * @param {string} channel
   * @param {{symbols?: string[], interval?: string, throttle_ms?: number}} [options]
   */
  subscribe(channel, options = {}) {
    const asked = options.symbols ? options.symbols.map((s) => String(s).toUpperCase()) : undefined;
    const sub = { channel, symbols: asked, interval: options.interval, throttle_ms: options.throttle_ms || undefined };
    const key = this._subKey(sub);
    const old = this._subs.get(key);
    const kept = old && old.symbols && asked ? { ...sub, symbols: [...new Set([...old.symbols, ...asked])] } : sub;
    this._subs.set(key, kept);
    if (this.state === 'open') this._sendSubscribe(sub);
  }

  /** Unsubscribes from some symbols of `channel`, or (without `symbols`) from all of it. */
  unsubscribe(channel, options = {}) {
    const symbols = options.symbols ? options.symbols.map((s) => String(s).toUpperCase()) : null;
    for (const [key, sub] of this._subs) {
      if (sub.channel !== channel) continue;
      if (symbols && sub.symbols) {
        sub.symbols = sub.symbols.filter((s) => !symbols.includes(s));
        if (sub.symbols.length === 0) this._subs.delete(key);
      } else {
        this._subs.delete(key);
      }
    }
    for (const [space, last] of this._last) {
      if (space !== channel && !space.startsWith(`${channel}/`)) continue;
      if (symbols) symbols.forEach((s) => last.delete(s));
      else this._last.delete(space);
    }
    const req = { action: 'unsubscribe', channel };
    if (symbols) req.symbols = symbols;
    this._send(req);
  }

  /** Acknowledges the critical messages of `channel` up to `sequence` (done for you with `autoAck`). */
  ack(channel, sequence) {
    this._send({ action: 'ack', channel, sequence });
  }

  /**
   * Sends the pending acknowledgements, then a `ping`; resolves with the `pong`, when the server has read
   * everything sent before it on this connection (rejects if the connection ends first).
   */
  sync() {
    this._flushAcks();
    const id = `sync-${this._nextId++}`;
    return new Promise((resolve, reject) => {
      const offs = [
        this.on('pong', (frame) => {
          if (frame.id !== id) return;
          offs.forEach((off) => off());
          resolve(frame);
        }),
        this.on('close', () => {
          offs.forEach((off) => off());
          reject(new Error('tickwire: the connection ended before the pong'));
        }),
      ];
      if (!this._send({ action: 'ping', id })) {
        offs.forEach((off) => off());
        reject(new Error('tickwire: not connected'));
      }
    });
  }

  /**
   * The last sequence processed of each topic of `channel`: `{key: sequence}` (keys are symbols, or `*`
   * for private and all-news topics). Bars are per interval: `lastSequences('bars/1m')`.
   */
  lastSequences(channel) {
    return Object.fromEntries(this._last.get(channel) || []);
  }

  /** Ends the connection for good (no reconnect). */
  close() {
    this._closedByUser = true;
    this._flushAcks();
    clearTimeout(this._reconnectTimer);
    this._stopWatchdog();
    if (this._ws) this._ws.close(1000, 'client closing');
    this._setState('closed');
  }

  // --- internals -------------------------------------------------------------------------------------

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (e) {
        if (event !== 'listenerError') this._emit('listenerError', e, event);
        else throw e;
      }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', state);
  }

  _subKey(sub) {
    return `${sub.channel}|${sub.interval || ''}|${sub.throttle_ms || 0}`;
  }

  _connect() {
    const params = new URLSearchParams({ client_id: this.clientId });
    if (this.token) params.set('token', this.token);
    const sep = this.url.includes('?') ? '&' : '?';
    let ws;
    try {
      ws = new this.WebSocket(`${this.url}${sep}${params}`);
    } catch (e) {
      this._emit('close', { code: 1006, reason: String(e && e.message) });
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    ws.onmessage = (event) => this._onFrame(ws, event.data);
    ws.onclose = (event) => this._onClose(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close follows
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._stopWatchdog();
    this._emit('close', { code, reason });
    if (this._closedByUser) return;
    const hint = /retry_after_ms=(\d+)/.exec(reason || '');
    if (hint && this._retryAfterMs == null) this._retryAfterMs = Number(hint[1]);
    // Until a first welcome there is nothing to resume.
    this._setState(this.epoch == null ? 'connecting' : 'resuming');
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._closedByUser) return;
    let delay;
    if (this._retryAfterMs != null) {
      delay = this._retryAfterMs;
      this._retryAfterMs = null;
    } else {
      const base = Math.min(BACKOFF_FIRST_MS * 2 ** this._attempt, BACKOFF_MAX_MS);
      delay = base * (0.5 + 0.5 * this.random());
    }
    this._attempt += 1;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => {
      this.reconnects += 1;
      this._connect();
    }, delay);
  }

  _send(req) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(req));
    this._lastSentAt = Date.now();
    return true;
  }

  _sendSubscribe(sub) {
    const req = { action: 'subscribe', channel: sub.channel, id: `s${this._nextId++}` };
    if (sub.symbols) req.symbols = sub.symbols;
    if (sub.interval) req.interval = sub.interval;
    if (sub.throttle_ms) req.throttle_ms = sub.throttle_ms;
    const last = this._last.get(spaceOfSub(sub));
    if (last && last.size > 0 && this.epoch != null) {
      const from = {};
      for (const [key, seq] of last) {
        if (key === '*' || !sub.symbols || sub.symbols.includes(key)) from[key] = seq;
      }
      if (Object.keys(from).length > 0) {
        req.from_sequence = from;
        req.epoch = this._lastEpoch || this.epoch;
      }
    }
    this._send(req);
  }

  _onFrame(ws, raw) {
    if (ws !== this._ws) return;
    this._lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(typeof raw === 'string' ? raw : new TextDecoder().decode(raw));
    } catch {
      return;
    }
    this._dispatch(frame);
    this._emit('message', frame);
  }

  _dispatch(frame) {
    switch (frame.type) {
      case 'welcome':
        return this._onWelcome(frame);
      case 'subscribed':
      case 'unsubscribed':
      case 'pong':
        return this._emit(frame.type, frame);
      case 'error':
        return this._emit('error', frame);
      case 'reset': {
        for (const [space, last] of this._last) {
          if (space === frame.channel || space.startsWith(`${frame.channel}/`)) last.delete(frame.symbol || '*');
        }
        return this._emit('reset', frame);
      }
      case 'snapshot':
        return this._onSnapshot(frame);
      case 'system':
        if (frame.sequence == null) {
          const hint = frame.data && frame.data.retry_after_ms;
          if (typeof hint === 'number') this._retryAfterMs = hint;
          return this._emit('system', frame.data || {}, frame);
        }
        return this._onUpdate(frame);
      default:
        if (typeof frame.sequence === 'number' && frame.channel) return this._onUpdate(frame);
    }
  }

  _onWelcome(frame) {
    // The sequences kept so far belong to the epoch they were seen in: resume names that one.
    this._lastEpoch = this.epoch;
    this.epoch = frame.epoch;
    this.heartbeatS = frame.heartbeat_s || 30;
    this.userId = frame.user_id;
    this.connectionId = frame.connection_id;
    this._attempt = 0;
    this._startWatchdog();
    this._emit('welcome', frame);
    for (const sub of this._subs.values()) this._sendSubscribe(sub);
    this._lastEpoch = null;
    this._setState('open');
  }

  _subFor(frame) {
    const space = spaceOfFrame(frame);
    for (const sub of this._subs.values()) {
      if (spaceOfSub(sub) === space) return sub;
    }
    return null;
  }

  _lastOf(frame) {
    const space = spaceOfFrame(frame);
    let last = this._last.get(space);
    if (!last) {
      last = new Map();
      this._last.set(space, last);
    }
    return last;
  }

  _onSnapshot(frame) {
    const key = frameKey(this._subFor(frame), frame);
    if (typeof frame.sequence === 'number') this._lastOf(frame).set(key, frame.sequence);
    this._emit('snapshot', frame);
    this._emit(frame.channel, frame.data, frame);
  }

  _onUpdate(frame) {
    const sub = this._subFor(frame);
    const key = frameKey(sub, frame);
    const last = this._lastOf(frame);
    const prev = last.get(key);
    const critical = CRITICAL_CHANNELS.includes(frame.channel);
    if (prev != null && frame.sequence <= prev) {
      this._emit('duplicate', frame);
      if (critical && this.autoAck.includes(frame.channel)) this._queueAck(frame.channel, frame.sequence);
      return;
    }
    if (prev != null && frame.sequence > prev + 1 && !(sub && sub.throttle_ms)) {
      this._emit('gap', { channel: frame.channel, key, expected: prev + 1, received: frame.sequence });
    }
    last.set(key, frame.sequence);
    this._emit('update', frame);
    this._emit(frame.channel, frame.data, frame);
    if (critical && this.autoAck.includes(frame.channel)) this._queueAck(frame.channel, frame.sequence);
  }

  _queueAck(channel, sequence) {
    const prev = this._pendingAcks.get(channel);
    if (prev == null || sequence > prev) this._pendingAcks.set(channel, sequence);
    if (!this._ackTimer) this._ackTimer = setTimeout(() => this._flushAcks(), ACK_DELAY_MS);
  }

  _flushAcks() {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    for (const [channel, sequence] of this._pendingAcks) {
      if (this._send({ action: 'ack', channel, sequence })) this._pendingAcks.delete(channel);
    }
  }

  // Dead-connection detection: the server pings every heartbeat_s, but browsers answer pings without
  // telling the page, so a quiet connection is probed with a `ping` request; two intervals without any
  // frame end it.
  _startWatchdog() {
    this._stopWatchdog();
    const interval = this.heartbeatS * 1000;
    this._lastFrameAt = Date.now();
    this._watchdog = setInterval(() => {
      const quiet = Date.now() - this._lastFrameAt;
      if (quiet >= 2 * interval) {
        const ws = this._ws;
        this._onClose(ws, 4000, 'no frame from the server for two heartbeat intervals');
        if (ws) ws.close(4000, 'heartbeat timeout');
      } else if (quiet >= interval / 2 && Date.now() - this._lastSentAt >= interval / 2) {
        this._send({ action: 'ping' });
      }
    }, Math.max(interval / 4, 50));
  }

  _stopWatchdog() {
    clearInterval(this._watchdog);
    this._watchdog = null;
  }
}
