-- What a node leaves at a graceful stop for the process that takes over its address (docs/deploy/restart.md):
-- its epoch, and the last sequence of each public topic (private topics' are in websocket_topic_sequences).
-- The next process reads and deletes them in one transaction; after a crash there is nothing to read, and
-- the public topics start again in a new epoch.
CREATE TABLE websocket_handover (
    node       text        NOT NULL PRIMARY KEY,   -- the listening address, e.g. 0.0.0.0:8080
    epoch      text        NOT NULL,
    written_at timestamptz NOT NULL
);
CREATE TABLE websocket_handover_sequences (
    node         text   NOT NULL,
    channel      text   NOT NULL,
    symbol       text   NOT NULL,
    bar_interval text   NOT NULL DEFAULT '',
    sequence     bigint NOT NULL,
    PRIMARY KEY (node, channel, symbol, bar_interval)
);
