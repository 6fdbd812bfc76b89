-- Indexes for the retention's deletes (retention_days), so that they do not scan whole tables.
CREATE INDEX websocket_critical_messages_acked_at ON websocket_critical_messages (acked_at)
    WHERE acked_at IS NOT NULL;
CREATE INDEX websocket_subscriptions_subscribed_at ON websocket_subscriptions (subscribed_at);
