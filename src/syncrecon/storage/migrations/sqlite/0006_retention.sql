-- syncrecon SQLite schema, version 6: indexes for pruning (Storage.prune and Retention), so
-- each bounded batch of deletes finds its rows without scanning a table.
CREATE INDEX inbox_done ON inbox (received_at) WHERE status = 'done';
CREATE INDEX outbox_settled ON outbox (status, next_at);
CREATE INDEX cycles_started ON cycles (started_at);
CREATE INDEX counters_bucket ON counters (bucket);
CREATE INDEX items_closed ON items (resolved_at) WHERE resolved_at IS NOT NULL;
