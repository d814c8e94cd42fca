-- syncrecon SQLite schema, version 13: sharded cycles. A sharded cycle's plan (its shards and
-- what each reads, as JSON) and each finished shard's result (its partial report and the work
-- left for the step that needs the whole picture) until that step stores the cycle's report.
CREATE TABLE shard_plans (
    cycle_id   TEXT PRIMARY KEY,
    sync       TEXT NOT NULL,
    shards     INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    spec       TEXT NOT NULL
);
CREATE INDEX shard_plans_sync ON shard_plans (sync, created_at);
CREATE TABLE shard_results (
    cycle_id    TEXT NOT NULL REFERENCES shard_plans (cycle_id) ON DELETE CASCADE,
    shard       INTEGER NOT NULL,
    finished_at TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (cycle_id, shard)
);
