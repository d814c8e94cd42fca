-- syncrecon SQLite schema, version 1.
CREATE TABLE links (
    sync        TEXT NOT NULL,
    left_key    TEXT NOT NULL,
    right_key   TEXT NOT NULL,
    natural_key TEXT,
    base        TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (sync, left_key)
) WITHOUT ROWID;
CREATE UNIQUE INDEX links_right ON links (sync, right_key);
CREATE INDEX links_natural ON links (sync, natural_key) WHERE natural_key IS NOT NULL;

CREATE TABLE items (
    id          INTEGER PRIMARY KEY,
    sync        TEXT NOT NULL,
    left_key    TEXT NOT NULL DEFAULT '',
    right_key   TEXT NOT NULL DEFAULT '',
    field       TEXT NOT NULL,
    status      TEXT NOT NULL,
    left_value  TEXT,
    right_value TEXT,
    base_value  TEXT,
    has_base    INTEGER NOT NULL DEFAULT 0,
    rule        TEXT,
    category    TEXT,
    explanation TEXT NOT NULL DEFAULT '',
    resolution  TEXT,
    detected_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    resolved_at TEXT,
    cycle_id    TEXT,
    note        TEXT,
    assignee    TEXT,
    times_seen  INTEGER NOT NULL DEFAULT 1
);
-- At most one active (open or escalated) item per record and field.
CREATE UNIQUE INDEX items_active ON items (sync, left_key, right_key, field)
    WHERE status IN ('open', 'escalated');
CREATE INDEX items_status ON items (sync, status, category);
CREATE INDEX items_detected ON items (detected_at);

CREATE TABLE sync_state (
    sync            TEXT PRIMARY KEY,
    left_watermark  TEXT,
    right_watermark TEXT,
    last_full_sweep TEXT
);

CREATE TABLE cycles (
    id          TEXT PRIMARY KEY,
    sync        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    mode        TEXT NOT NULL,
    dry_run     INTEGER NOT NULL,
    report      TEXT NOT NULL
);
CREATE INDEX cycles_sync ON cycles (sync, started_at);

CREATE TABLE counters (
    metric TEXT NOT NULL,
    labels TEXT NOT NULL,
    bucket TEXT NOT NULL,
    value  INTEGER NOT NULL,
    PRIMARY KEY (metric, labels, bucket)
) WITHOUT ROWID;

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
