-- syncrecon SQLite schema, version 2: the fast loop's inbox, order guard, echo ledger, outbox.
CREATE TABLE inbox (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    dedupe_key  TEXT NOT NULL,
    event       TEXT NOT NULL,
    received_at TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',
    outcome     TEXT,
    note        TEXT,
    lease_owner TEXT,
    lease_until TEXT,
    done_at     TEXT
);
CREATE UNIQUE INDEX inbox_dedupe ON inbox (source, dedupe_key);
CREATE INDEX inbox_pending ON inbox (status, id) WHERE status = 'pending';

CREATE TABLE field_times (
    sync        TEXT NOT NULL,
    left_key    TEXT NOT NULL,
    field       TEXT NOT NULL,
    source_time TEXT NOT NULL,
    PRIMARY KEY (sync, left_key, field)
) WITHOUT ROWID;

CREATE TABLE echoes (
    id          INTEGER PRIMARY KEY,
    sync        TEXT NOT NULL,
    side        TEXT NOT NULL,
    key         TEXT NOT NULL,
    field       TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX echoes_lookup ON echoes (sync, side, key, field, fingerprint);
CREATE INDEX echoes_expiry ON echoes (expires_at);

CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    sync        TEXT NOT NULL,
    side        TEXT NOT NULL,
    key         TEXT NOT NULL,
    left_key    TEXT NOT NULL,
    right_key   TEXT NOT NULL,
    fields      TEXT NOT NULL,
    expect      TEXT NOT NULL,
    base        TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     TEXT NOT NULL,
    last_error  TEXT,
    status      TEXT NOT NULL DEFAULT 'pending',
    lease_owner TEXT,
    lease_until TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_at) WHERE status = 'pending';
