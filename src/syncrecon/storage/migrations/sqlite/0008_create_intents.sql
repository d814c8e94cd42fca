-- syncrecon SQLite schema, version 8: create intents. A create is recorded with its
-- idempotency key before the call and settled in the transaction that stores its link, so a
-- create whose answer was lost (or whose process died) is looked up, never made twice.
CREATE TABLE create_intents (
    sync            TEXT NOT NULL,
    side            TEXT NOT NULL,
    source_key      TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (sync, side, source_key)
) WITHOUT ROWID;
