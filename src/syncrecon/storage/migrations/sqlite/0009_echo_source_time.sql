-- syncrecon SQLite schema, version 9: the echo ledger knows the time of the edit a written value
-- copies (recorded before the write), and keeps a spent entry (its webhook came back) for
-- that time until it expires.
ALTER TABLE echoes ADD COLUMN source_time TEXT;
ALTER TABLE echoes ADD COLUMN spent INTEGER NOT NULL DEFAULT 0;
