-- syncrecon SQLite schema, version 12: the operator queue's pages, counts and search.
-- Each item keeps its search text (keys, field, category, explanation and the values'
-- display text, case folded; written with the item), so a search is one pass over one
-- column with a bound parameter. Items stored before this version get theirs when it is
-- applied. The active items are indexed by detection time (and by sync), so a page of the
-- queue reads only its rows however many closed items there are; the record keys are
-- indexed, so a record's items (an item's history) are found without a scan.
ALTER TABLE items ADD COLUMN search_text TEXT;
CREATE INDEX items_active_detected ON items (detected_at, id)
    WHERE status IN ('open', 'escalated');
CREATE INDEX items_active_sync ON items (sync, detected_at, id)
    WHERE status IN ('open', 'escalated');
CREATE INDEX items_left_key ON items (left_key, sync);
CREATE INDEX items_right_key ON items (right_key, sync);
