-- syncrecon SQLite schema, version 4: the source time of the change an outbox entry carries.
ALTER TABLE outbox ADD COLUMN source_time TEXT;
