-- syncrecon SQLite schema, version 3: field fingerprints for schema-drift detection.
CREATE TABLE field_schemas (
    sync        TEXT NOT NULL,
    side        TEXT NOT NULL,
    field       TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    info        TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (sync, side, field)
) WITHOUT ROWID;
