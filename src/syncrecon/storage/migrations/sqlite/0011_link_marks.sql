-- syncrecon SQLite schema, version 11: per side, the mark a cycle leaves on a link whose
-- record held exactly its base (a digest of the mapped values and the record's modification
-- time, in microseconds since the epoch), so a later cycle skips an unchanged record without
-- decoding its base. Writing a link's base forgets its marks.
ALTER TABLE links ADD COLUMN left_seen INTEGER;
ALTER TABLE links ADD COLUMN left_digest TEXT;
ALTER TABLE links ADD COLUMN right_seen INTEGER;
ALTER TABLE links ADD COLUMN right_digest TEXT;
