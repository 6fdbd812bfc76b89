-- tickwire's tables: connections, subscription state, periodic figures and the durable critical queue.
-- Times are timestamptz (UTC); the server writes them from its own clock in microseconds.

-- Every connection's life. `run_id` names one server run (its start in microseconds): connection ids are
-- unique within a run.
CREATE TABLE websocket_connections (
    run_id          bigint      NOT NULL,
    id              bigint      NOT NULL,
    user_id         text,
    client_id       text        NOT NULL,
    ip              text        NOT NULL,
    shard           integer     NOT NULL,
    connected_at    timestamptz NOT NULL,
    disconnected_at timestamptz,
    close_code      integer,
    messages_in     bigint      NOT NULL DEFAULT 0,
    messages_out    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, id)
);
-- `tickwire report`: connections over time.
CREATE INDEX websocket_connections_connected_at ON websocket_connections (connected_at);
CREATE INDEX websocket_connections_user ON websocket_connections (user_id, connected_at);

-- Subscription state per user and client id, for `"restore": true`. Anonymous clients have user_id ''.
-- `symbol` is '' for private channels and '*' for a whole channel; `bar_interval` is '' except for bars.
CREATE TABLE websocket_subscriptions (
    user_id       text        NOT NULL,
    client_id     text        NOT NULL,
    channel       text        NOT NULL,
    symbol        text        NOT NULL,
    bar_interval  text        NOT NULL DEFAULT '',
    throttle_ms   integer     NOT NULL DEFAULT 0,
    subscribed_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, client_id, channel, symbol, bar_interval)
);

-- Figures written by each shard every --metrics-interval-s.
CREATE TABLE websocket_metrics (
    recorded_at        timestamptz      NOT NULL,
    run_id             bigint           NOT NULL,
    shard              integer          NOT NULL,
    interval_s         double precision NOT NULL,
    connections        bigint           NOT NULL,
    connections_opened bigint           NOT NULL,
    subscriptions      bigint           NOT NULL,
    messages_in_per_s  double precision NOT NULL,
    ingested_per_s     double precision NOT NULL,
    deliveries_per_s   double precision NOT NULL,
    bytes_per_s        double precision NOT NULL,
    latency_p50_ms     double precision,
    latency_p99_ms     double precision,
    PRIMARY KEY (recorded_at, run_id, shard)
);

-- The critical-message queue (orders, executions, alerts): every message with the very frame sent, until
-- and after its user acknowledges it (acked_at).
CREATE TABLE websocket_critical_messages (
    user_id    text        NOT NULL,
    channel    text        NOT NULL,
    sequence   bigint      NOT NULL,
    frame      bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    acked_at   timestamptz,
    PRIMARY KEY (user_id, channel, sequence)
);
-- Start-up loads the unacknowledged messages.
CREATE INDEX websocket_critical_messages_unacked ON websocket_critical_messages (user_id, channel, sequence)
    WHERE acked_at IS NULL;

-- The last sequence of each private topic, so that sequences continue across restarts.
CREATE TABLE websocket_topic_sequences (
    channel  text   NOT NULL,
    user_id  text   NOT NULL,
    sequence bigint NOT NULL,
    PRIMARY KEY (channel, user_id)
);
