// Compiled (not run) by types.test.mjs with tsc --strict: the declarations of net/web/client.d.ts accept
// what docs/client.md does and refuse the mistakes below (each @ts-expect-error must be an error).
import { TickwireClient, type Quote, type State, type UpdateFrame } from '../../web/client.js';

const client = new TickwireClient({ url: 'ws://127.0.0.1:8080/v1/stream', token: 't', autoAck: ['orders'] });
client.on('quotes', (quote: Quote, frame: UpdateFrame<'quotes'>) => {
  const spread: number = quote.ask - quote.bid;
  const seq: number = frame.sequence;
  return spread + seq;
});
client.on('orders', (order) => order.filled_qty.toFixed(0));
client.on('portfolio', (p) => p.positions.map((x) => x.symbol.toUpperCase()));
client.on('alerts', (a, frame) => client.ack('alerts', frame.sequence + (a.symbol ? 0 : 0)));
client.on('state', (s: State) => s === 'resuming');
client.on('gap', (g) => g.received - g.expected);
const off: () => void = client.on('reset', (r) => r.reason);
off();
client.subscribe('bars', { symbols: ['AAPL'], interval: '1m' });
const last: Record<string, number> = client.lastSequences('bars/1m');
void last;
void (async () => {
  const q = await client.once('quotes');
  q.last.toFixed(2);
})();

// @ts-expect-error: not a channel
client.subscribe('quotez');
// @ts-expect-error: quotes have no `status`
client.on('quotes', (q) => q.status);
// @ts-expect-error: only critical channels are acknowledged
client.ack('quotes', 1);
// @ts-expect-error: not a state
client.on('state', (s) => s === 'reconnecting');
// @ts-expect-error: autoAck names critical channels
new TickwireClient({ autoAck: ['quotes'] });
