-- syncrecon SQLite schema, version 10: records claimed by a reconciliation cycle for a write
-- batch, so that a cycle and a fast-loop worker never write one record at the same time.
CREATE TABLE record_claims (
    record TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until TEXT NOT NULL
);
