-- syncrecon PostgreSQL schema, version 1: the whole schema of SQLite version 12.
-- Values are canonical JSON text and times fixed-width UTC text (syncrecon._clock.ts), as in
-- SQLite, so both backends store and read back the same values. Text compares byte-wise
-- (COLLATE "C"): times, keys and pages sort the same as in SQLite and in Python.
CREATE TABLE links (
    sync         TEXT COLLATE "C" NOT NULL,
    left_key     TEXT COLLATE "C" NOT NULL,
    right_key    TEXT COLLATE "C" NOT NULL,
    natural_key  TEXT COLLATE "C",
    base         TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT COLLATE "C" NOT NULL,
    updated_at   TEXT COLLATE "C" NOT NULL,
    left_seen    BIGINT,
    left_digest  TEXT,
    right_seen   BIGINT,
    right_digest TEXT,
    PRIMARY KEY (sync, left_key)
);
CREATE UNIQUE INDEX links_right ON links (sync, right_key);
CREATE INDEX links_natural ON links (sync, natural_key) WHERE natural_key IS NOT NULL;

CREATE TABLE items (
    id          BIGSERIAL PRIMARY KEY,
    sync        TEXT COLLATE "C" NOT NULL,
    left_key    TEXT COLLATE "C" NOT NULL DEFAULT '',
    right_key   TEXT COLLATE "C" NOT NULL DEFAULT '',
    field       TEXT COLLATE "C" NOT NULL,
    status      TEXT COLLATE "C" NOT NULL,
    left_value  TEXT,
    right_value TEXT,
    base_value  TEXT,
    has_base    INTEGER NOT NULL DEFAULT 0,
    rule        TEXT,
    category    TEXT COLLATE "C",
    explanation TEXT NOT NULL DEFAULT '',
    resolution  TEXT,
    detected_at TEXT COLLATE "C" NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL,
    resolved_at TEXT COLLATE "C",
    cycle_id    TEXT,
    note        TEXT,
    assignee    TEXT COLLATE "C",
    times_seen  INTEGER NOT NULL DEFAULT 1,
    search_text TEXT
);
-- At most one active (open or escalated) item per record and field.
CREATE UNIQUE INDEX items_active ON items (sync, left_key, right_key, field)
    WHERE status IN ('open', 'escalated');
CREATE INDEX items_status ON items (sync, status, category);
CREATE INDEX items_detected ON items (detected_at);
CREATE INDEX items_closed ON items (resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX items_active_detected ON items (detected_at, id)
    WHERE status IN ('open', 'escalated');
CREATE INDEX items_active_sync ON items (sync, detected_at, id)
    WHERE status IN ('open', 'escalated');
CREATE INDEX items_left_key ON items (left_key, sync);
CREATE INDEX items_right_key ON items (right_key, sync);

CREATE TABLE sync_state (
    sync            TEXT COLLATE "C" PRIMARY KEY,
    left_watermark  TEXT COLLATE "C",
    right_watermark TEXT COLLATE "C",
    last_full_sweep TEXT COLLATE "C"
);

CREATE TABLE cycles (
    id          TEXT COLLATE "C" PRIMARY KEY,
    sync        TEXT COLLATE "C" NOT NULL,
    started_at  TEXT COLLATE "C" NOT NULL,
    finished_at TEXT COLLATE "C" NOT NULL,
    mode        TEXT NOT NULL,
    dry_run     INTEGER NOT NULL,
    report      TEXT NOT NULL
);
CREATE INDEX cycles_sync ON cycles (sync, started_at);
CREATE INDEX cycles_started ON cycles (started_at);

CREATE TABLE counters (
    metric TEXT COLLATE "C" NOT NULL,
    labels TEXT COLLATE "C" NOT NULL,
    bucket TEXT COLLATE "C" NOT NULL,
    value  BIGINT NOT NULL,
    PRIMARY KEY (metric, labels, bucket)
);
CREATE INDEX counters_bucket ON counters (bucket);

CREATE TABLE leases (
    name       TEXT COLLATE "C" PRIMARY KEY,
    owner      TEXT COLLATE "C" NOT NULL,
    expires_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE inbox (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT COLLATE "C" NOT NULL,
    dedupe_key  TEXT COLLATE "C" NOT NULL,
    event       TEXT NOT NULL,
    received_at TEXT COLLATE "C" NOT NULL,
    status      TEXT COLLATE "C" NOT NULL DEFAULT 'pending',
    outcome     TEXT,
    note        TEXT,
    lease_owner TEXT COLLATE "C",
    lease_until TEXT COLLATE "C",
    done_at     TEXT COLLATE "C",
    record      TEXT COLLATE "C"
);
CREATE UNIQUE INDEX inbox_dedupe ON inbox (source, dedupe_key);
CREATE INDEX inbox_pending ON inbox (status, id) WHERE status = 'pending';
CREATE INDEX inbox_pending_record ON inbox (record, id) WHERE status = 'pending';
CREATE INDEX inbox_done ON inbox (received_at) WHERE status = 'done';

CREATE TABLE field_times (
    sync        TEXT COLLATE "C" NOT NULL,
    left_key    TEXT COLLATE "C" NOT NULL,
    field       TEXT COLLATE "C" NOT NULL,
    source_time TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (sync, left_key, field)
);

CREATE TABLE echoes (
    id          BIGSERIAL PRIMARY KEY,
    sync        TEXT COLLATE "C" NOT NULL,
    side        TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    field       TEXT COLLATE "C" NOT NULL,
    fingerprint TEXT COLLATE "C" NOT NULL,
    expires_at  TEXT COLLATE "C" NOT NULL,
    source_time TEXT COLLATE "C",
    spent       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX echoes_lookup ON echoes (sync, side, key, field, fingerprint);
CREATE INDEX echoes_expiry ON echoes (expires_at);

CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    sync        TEXT COLLATE "C" NOT NULL,
    side        TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    left_key    TEXT COLLATE "C" NOT NULL,
    right_key   TEXT COLLATE "C" NOT NULL,
    fields      TEXT NOT NULL,
    expect      TEXT NOT NULL,
    base        TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     TEXT COLLATE "C" NOT NULL,
    last_error  TEXT,
    status      TEXT COLLATE "C" NOT NULL DEFAULT 'pending',
    lease_owner TEXT COLLATE "C",
    lease_until TEXT COLLATE "C",
    created_at  TEXT COLLATE "C" NOT NULL,
    source_time TEXT COLLATE "C"
);
CREATE INDEX outbox_due ON outbox (status, next_at) WHERE status = 'pending';
CREATE INDEX outbox_settled ON outbox (status, next_at);

CREATE TABLE field_schemas (
    sync        TEXT COLLATE "C" NOT NULL,
    side        TEXT COLLATE "C" NOT NULL,
    field       TEXT COLLATE "C" NOT NULL,
    fingerprint TEXT NOT NULL,
    info        TEXT NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (sync, side, field)
);

CREATE TABLE create_intents (
    sync            TEXT COLLATE "C" NOT NULL,
    side            TEXT COLLATE "C" NOT NULL,
    source_key      TEXT COLLATE "C" NOT NULL,
    idempotency_key TEXT NOT NULL,
    created_at      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (sync, side, source_key)
);

CREATE TABLE record_claims (
    record TEXT COLLATE "C" PRIMARY KEY,
    owner  TEXT COLLATE "C" NOT NULL,
    until  TEXT COLLATE "C" NOT NULL
);
