// Types of tickwire's JavaScript client (client.js; docs/client.md). The frames are those of docs/protocol.md.

export type State = 'connecting' | 'open' | 'resuming' | 'closed';
export declare const STATES: readonly State[];
export declare const CRITICAL_CHANNELS: readonly ['orders', 'executions', 'alerts'];
export declare const PRIVATE_CHANNELS: readonly ['orders', 'executions', 'portfolio', 'alerts', 'sessions', 'decisions'];

export interface Quote { symbol: string; bid: number; ask: number; last: number; bid_size: number; ask_size: number; volume: number }
export interface Trade { symbol: string; price: number; size: number; timestamp: string; exchange: string }
export interface Bar {
  symbol: string; interval: string; start: string;
  open: number; high: number; low: number; close: number; volume: number; vwap: number;
}
export interface News { headline: string; source: string; symbols: string[]; sentiment: number; timestamp: string }
export interface Signal { signal_type: string; symbol: string; price: number; quantity: number; confidence: number }
export interface SystemNotice { level: string; message: string; retry_after_ms?: number }
export interface Order {
  order_id: string; symbol: string; side: string; type: string; status: string;
  qty: number; filled_qty: number; avg_price: number | null; limit_price: number | null;
}
export interface Execution {
  trade_id: string; order_id: string; symbol: string; side: string;
  quantity: number; price: number; pnl: number; executed_at: string;
}
export interface Position { symbol: string; quantity: number; avg_price: number; market_price: number; unrealized_pnl: number }
export interface Portfolio { total_value: number; day_pnl: number; cash: number; buying_power: number; positions: Position[] }
export interface Alert {
  alert_id: string; type: string; level: string; message: string; symbol: string | null; triggered_at: string;
}
export interface SessionStatus { session_id: string; status: string; data: Record<string, unknown> }
export interface Decision {
  session_id: string; algorithm_id: string; decision: string; reasoning: string;
  confidence: number; symbol: string; price: number;
}

/** The data of each channel's updates and snapshots. */
export interface ChannelData {
  quotes: Quote; trades: Trade; bars: Bar; news: News; signals: Signal; system: SystemNotice;
  orders: Order; executions: Execution; portfolio: Portfolio; alerts: Alert; sessions: SessionStatus;
  decisions: Decision;
}
export type Channel = keyof ChannelData;

/** An update or snapshot frame. */
export interface UpdateFrame<C extends Channel = Channel> {
  type: string; channel: C; sequence: number; timestamp: string; source_ts?: string | number;
  data: ChannelData[C]; signature?: string;
}
export interface Welcome {
  type: 'welcome'; connection_id: string; client_id: string | null; user_id: string | null;
  epoch: string; heartbeat_s: number; protocol: number; timestamp: string;
}
export interface Subscribed {
  type: 'subscribed'; id?: string; channel: Channel; symbols?: string[]; interval?: string;
  throttle_ms: number; subscription_id: string;
}
export interface Unsubscribed { type: 'unsubscribed'; id?: string; channel: Channel; symbols?: string[] }
export interface Reset { type: 'reset'; channel: Channel; symbol?: string; reason: string }
export interface ErrorFrame { type: 'error'; id?: string; code: string; message: string; timestamp: string }
export interface Gap { channel: Channel; key: string; expected: number; received: number }
export interface Close { code: number; reason: string }

export type Events = {
  [C in Channel]: (data: ChannelData[C], frame: UpdateFrame<C>) => void;
} & {
  state: (state: State) => void;
  welcome: (frame: Welcome) => void;
  subscribed: (frame: Subscribed) => void;
  unsubscribed: (frame: Unsubscribed) => void;
  pong: (frame: { type: 'pong'; id?: string; timestamp: string }) => void;
  update: (frame: UpdateFrame) => void;
  snapshot: (frame: UpdateFrame) => void;
  duplicate: (frame: UpdateFrame) => void;
  gap: (gap: Gap) => void;
  reset: (frame: Reset) => void;
  error: (frame: ErrorFrame) => void;
  close: (close: Close) => void;
  message: (frame: Record<string, unknown>) => void;
  listenerError: (error: unknown, event: string) => void;
};

export interface Options {
  /** The stream endpoint, e.g. `ws://host:8080/v1/stream` (default: the server of the current page). */
  url?: string;
  /** A JWT, sent as `?token=`. */
  token?: string;
  /** Names this client across its reconnects (default: a random UUID). */
  clientId?: string;
  /** Acknowledge critical messages once their listeners return: all (true, the default), none (false), or these channels. */
  autoAck?: boolean | Array<'orders' | 'executions' | 'alerts'>;
  /** A WebSocket constructor (default: the global one; in Node 20, e.g. the `ws` package's). */
  WebSocket?: unknown;
  /** A random number source in [0, 1), for the reconnect jitter (default Math.random). */
  random?: () => number;
}

export interface SubscribeOptions { symbols?: string[]; interval?: string; throttle_ms?: number }

export declare function defaultUrl(): string;

export declare class TickwireClient {
  constructor(options?: Options);
  readonly url: string;
  readonly clientId: string;
  readonly state: State;
  readonly epoch: string | null;
  readonly heartbeatS: number;
  readonly userId: string | null;
  readonly connectionId: string | null;
  readonly reconnects: number;
  readonly autoAck: ReadonlyArray<'orders' | 'executions' | 'alerts'>;
  on<E extends keyof Events>(event: E, listener: Events[E]): () => void;
  off<E extends keyof Events>(event: E, listener: Events[E]): void;
  once<E extends keyof Events>(event: E): Promise<Parameters<Events[E]>[0]>;
  subscribe(channel: Channel, options?: SubscribeOptions): void;
  unsubscribe(channel: Channel, options?: { symbols?: string[] }): void;
  ack(channel: 'orders' | 'executions' | 'alerts', sequence: number): void;
  /** Sends pending acks and a ping; resolves with the pong, once the server has read all sent before it. */
  sync(): Promise<{ type: 'pong'; id?: string; timestamp: string }>;
  lastSequences(channel: Channel | `bars/${string}`): Record<string, number>;
  close(): void;
}
