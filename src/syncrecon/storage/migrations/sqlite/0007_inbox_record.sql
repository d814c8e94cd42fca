-- syncrecon SQLite schema, version 7: the inbox is claimed by record (one worker at a time per
-- record, its events in source-time order). Rows stored before this version have no record
-- and are claimed one by one, as before.
ALTER TABLE inbox ADD COLUMN record TEXT;
CREATE INDEX inbox_pending_record ON inbox (record, id) WHERE status = 'pending';
