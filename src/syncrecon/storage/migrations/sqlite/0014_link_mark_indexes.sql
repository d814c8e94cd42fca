-- syncrecon SQLite schema, version 14: covering indexes for the marks a cycle reads for every
-- listed record (link_marks), one per side, so the lookup never reads a link's row with its
-- base (a WITHOUT ROWID row holds every mapped value).
CREATE INDEX links_left_marks ON links (sync, left_key, right_key, natural_key, left_seen, left_digest);
CREATE INDEX links_right_marks ON links (sync, right_key, left_key, natural_key, right_seen, right_digest);
