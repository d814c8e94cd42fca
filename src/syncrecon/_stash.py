"""The cycle's scratch space: a temporary SQLite file that holds both sides' records.

A reconciliation cycle must never hold both systems' full records in memory at once. It
stages every record it reads here (its mapped values, canonical JSON) and joins the two sides
in SQL, so memory stays flat whatever the number of records. The file is deleted when the
cycle ends; it holds no state that outlives the cycle.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

__all__ = ["PairRow", "PlanRow", "Planned", "SeenRow", "Single", "StagedRow", "Stash"]

_SCHEMA = """
CREATE TABLE rec (
    side    INTEGER NOT NULL,
    key     TEXT NOT NULL,
    link    TEXT,
    other   TEXT,
    nat     TEXT,
    proj    TEXT,
    raw     TEXT,
    mod     TEXT,
    ftimes  TEXT,
    base    TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 1,
    bad     TEXT,
    ret     INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (side, key)
) WITHOUT ROWID;
CREATE TABLE seen (
    side    INTEGER NOT NULL,
    key     TEXT NOT NULL,
    other   TEXT NOT NULL,
    modus   INTEGER,
    PRIMARY KEY (side, key)
) WITHOUT ROWID;
CREATE INDEX rec_changed ON rec (link) WHERE changed = 1;
CREATE TABLE matched (left_key TEXT PRIMARY KEY, right_key TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE act (left_key TEXT NOT NULL, right_key TEXT NOT NULL,
    PRIMARY KEY (left_key, right_key)) WITHOUT ROWID;
CREATE TABLE held (side INTEGER NOT NULL, key TEXT NOT NULL, PRIMARY KEY (side, key)) WITHOUT ROWID;
CREATE TABLE plan (
    id        INTEGER PRIMARY KEY,
    target    INTEGER NOT NULL,
    op        TEXT NOT NULL,
    left_key  TEXT,
    right_key TEXT,
    nat       TEXT,
    fields    TEXT NOT NULL,
    expect    TEXT,
    expect_mod TEXT,
    base      TEXT,
    items     TEXT,
    rules     TEXT,
    shared    INTEGER NOT NULL DEFAULT 0,
    src       TEXT,
    done      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX plan_target ON plan (target, op, id);
CREATE TABLE later (side INTEGER NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (side, key)) WITHOUT ROWID;
"""


class StagedRow(NamedTuple):
    """One record staged in full (see :meth:`Stash.put`). Texts are canonical JSON."""

    side: int
    key: str
    link: str | None  # the left key of its link, if linked
    other: str | None  # its counterpart's key, if linked
    nat: str | None
    proj: str | None  # mapped values in the left vocabulary, by left name
    raw: str | None  # the right side's own values of mapped fields, and the natural key
    mod: str | None
    ftimes: str | None
    base: str | None
    deleted: int
    changed: int
    bad: str | None
    ret: int


class SeenRow(NamedTuple):
    """A linked record known to be unchanged, staged without its values (they are its link's
    base, which the other side's row carries when the pair is decided): see
    :meth:`Stash.put_unchanged`."""

    side: int
    key: str
    other: str  # its counterpart's key
    modus: int | None  # its modification time, microseconds since the epoch


class PairRow(NamedTuple):
    """A linked pair that needs a decision (see :meth:`Stash.pairs`)."""

    left_key: str
    right_key: str
    left_proj: str | None
    right_proj: str | None
    base: str | None
    left_raw: str | None
    right_raw: str | None
    left_mod: str | None
    right_mod: str | None
    left_ftimes: str | None
    right_ftimes: str | None
    left_deleted: int
    right_deleted: int
    nat: str | None
    left_bad: str | None
    right_bad: str | None
    right_light: int
    left_modus: int | None
    right_modus: int | None


class Single(NamedTuple):
    """A live record linked to nothing (see :meth:`Stash.singles`)."""

    key: str
    nat: str | None
    proj: str | None
    raw: str | None


class Planned(NamedTuple):
    """A write the cycle decided, to be stored by :meth:`Stash.plan`."""

    target: int
    op: str
    left_key: str | None
    right_key: str | None
    nat: str | None
    fields: str  # what to write, by the target's field names
    expect: str | None  # what the target must still hold, by its field names
    expect_mod: str | None  # for a delete: the survivor's modification time when read
    base: str | None  # the base values the link gets once the write landed
    items: str  # queue item ids the write resolves
    rules: str  # the rules that decided it (counted as auto-resolved when it lands)
    shared: int  # 1 when the same pair is written on both sides (base moves after both)
    src: str | None  # per source field, what the source may still hold (and copies' times)


class PlanRow(NamedTuple):
    """A stored planned write (see :meth:`Stash.planned`): :class:`Planned` with its id."""

    id: int
    op: str
    left_key: str | None
    right_key: str | None
    nat: str | None
    fields: str
    expect: str | None
    expect_mod: str | None
    base: str | None
    items: str | None
    rules: str | None
    shared: int
    src: str | None

    @property
    def pair(self) -> tuple[str, str]:
        """(left key, right key) of an update's or a delete's linked pair."""
        if self.left_key is None or self.right_key is None:
            raise ValueError(f"planned {self.op} {self.id} has no linked pair")
        return self.left_key, self.right_key

    def key(self, side: int) -> str:
        """The key on ``side`` (0 left, 1 right): a linked record's, or a create's source."""
        key = self.left_key if side == 0 else self.right_key
        if key is None:
            raise ValueError(f"planned {self.op} {self.id} has no key on side {side}")
        return key


def _pair_row(_cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> PairRow:
    return PairRow._make(row)


def _single(_cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Single:
    return Single._make(row)


def _plan_row(_cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> PlanRow:
    return PlanRow._make(row)


class Stash:
    """Scratch tables for one cycle: ``rec`` (records staged in full), ``seen`` (unchanged
    linked records, staged light: a quarter of the columns, a third of the cost), ``plan``
    (planned writes). A record is in ``rec`` or in ``seen``, never both."""

    def __init__(self, directory: str | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="syncrecon-cycle-", suffix=".sqlite", dir=directory)
        os.close(fd)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("PRAGMA temp_store = FILE")
        self.db.execute("PRAGMA cache_size = -16000")
        self.db.executescript(_SCHEMA)
        self.db.execute("BEGIN")
        self._any_seen = False
        self._any_full = False

    def close(self) -> None:
        """Drop the scratch file."""
        try:
            self.db.close()
        finally:
            for suffix in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)

    def __enter__(self) -> Stash:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checkpoint(self) -> None:
        """Commit the scratch transaction (bounds the page cache; no durability needed)."""
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    def put(self, rows: Sequence[StagedRow]) -> None:
        """Stage records in full (replacing what was staged for them).

        ``changed`` is 0 only for a linked record whose values equal its link's base; ``bad``
        holds the problems of values that do not fit (by left field name); ``ret`` is 0 for a
        record staged as gone because a read by key did not return it.
        """
        self.db.executemany(
            "INSERT OR REPLACE INTO rec (side, key, link, other, nat, proj, raw, mod, ftimes,"
            " base, deleted, changed, bad, ret)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._any_full = self._any_full or bool(rows)
        if self._any_seen:  # a record read again in full is no longer staged light
            self.db.executemany(
                "DELETE FROM seen WHERE side = ? AND key = ?", [(r[0], r[1]) for r in rows]
            )

    def put_unchanged(self, rows: Sequence[SeenRow | tuple[int, str, str, int | None]]) -> None:
        """Stage linked records known to be unchanged, light (see :class:`SeenRow`), replacing
        what was staged for them: a connector may list a record twice in one cycle (a listing
        ordered by modification time, with an edit in between), and the later read wins."""
        if rows:
            self._any_seen = True
            self.db.executemany("INSERT OR REPLACE INTO seen VALUES (?, ?, ?, ?)", rows)
            if self._any_full:  # listed twice (a listing by modification time): the later wins
                self.db.executemany(
                    "DELETE FROM rec WHERE side = ? AND key = ?", [(r[0], r[1]) for r in rows]
                )

    def count(self, side: int) -> int:
        """How many records of ``side`` the connector returned (its tombstones included)."""
        return int(
            self.db.execute(
                "SELECT (SELECT count(*) FROM rec WHERE side = ? AND ret = 1)"
                " + (SELECT count(*) FROM seen WHERE side = ?)",
                (side, side),
            ).fetchone()[0]
        )

    def staged(self, side: int, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` are staged on ``side``."""
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for table in ("rec", "seen"):
                found.update(
                    row[0]
                    for row in self.db.execute(
                        f"SELECT key FROM {table} WHERE side = ? AND key IN ({marks})",  # noqa: S608
                        (side, *chunk),
                    )
                )
        return found

    def missing_counterparts(self, side: int) -> Iterator[tuple[str, str]]:
        """(key, other side's key) of linked records of ``side`` whose counterpart is not staged."""
        other = 1 - side
        cur = self.db.execute(
            "SELECT a.key, a.other FROM rec a WHERE a.side = :side AND a.link IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM rec b WHERE b.side = :other AND b.key = a.other)"
            " AND NOT EXISTS (SELECT 1 FROM seen b WHERE b.side = :other AND b.key = a.other)"
            " UNION ALL SELECT a.key, a.other FROM seen a WHERE a.side = :side"
            " AND NOT EXISTS (SELECT 1 FROM rec b WHERE b.side = :other AND b.key = a.other)"
            " AND NOT EXISTS (SELECT 1 FROM seen b WHERE b.side = :other AND b.key = a.other)",
            {"side": side, "other": other},
        )
        yield from cur

    def unlinked_by_natural_key(self) -> Iterator[tuple[str | None, int, str]]:
        """(natural key, side, key) of live unlinked records, grouped by natural key."""
        cur = self.db.execute(
            "SELECT nat, side, key FROM rec WHERE link IS NULL AND deleted = 0"
            " ORDER BY nat IS NULL, nat, side, key"
        )
        yield from cur

    def add_matches(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Remember newly matched (left key, right key) pairs; :meth:`apply_matches` links them."""
        self.db.executemany("INSERT INTO matched (left_key, right_key) VALUES (?, ?)", pairs)

    def hold(self, records: Sequence[tuple[int, str]]) -> None:
        """Keep these (side, key) records from being created elsewhere (they await an operator)."""
        self.db.executemany("INSERT OR IGNORE INTO held (side, key) VALUES (?, ?)", records)

    def apply_matches(self) -> int:
        """Mark the remembered pairs as linked (with no base yet); return how many."""
        self.db.execute(
            "UPDATE rec SET link = rec.key, other = m.right_key FROM matched m"
            " WHERE rec.side = 0 AND rec.key = m.left_key"
        )
        self.db.execute(
            "UPDATE rec SET link = m.left_key, other = m.left_key FROM matched m"
            " WHERE rec.side = 1 AND rec.key = m.right_key"
        )
        return int(self.db.execute("SELECT count(*) FROM matched").fetchone()[0])

    def mark_active(self, pairs: Iterable[tuple[str, str]]) -> None:
        """(left key, right key) of links with active queue items: never skipped as unchanged."""
        self.db.executemany("INSERT OR IGNORE INTO act (left_key, right_key) VALUES (?, ?)", pairs)

    def count_pairs(self) -> int:
        """Linked pairs staged live on both sides."""
        return int(
            self.db.execute(
                "SELECT count(*) FROM (SELECT key, other FROM rec WHERE side = 0"
                " AND link IS NOT NULL AND deleted = 0 UNION ALL SELECT key, other FROM seen"
                " WHERE side = 0) l"
                " WHERE EXISTS (SELECT 1 FROM rec r WHERE r.side = 1 AND r.key = l.other"
                " AND r.deleted = 0) OR EXISTS (SELECT 1 FROM seen r WHERE r.side = 1"
                " AND r.key = l.other)"
            ).fetchone()[0]
        )

    def count_deleted_pairs(self, side: int) -> int:
        """Linked pairs whose record on ``side`` is gone while the other side's is not."""
        return int(
            self.db.execute(
                "SELECT count(*) FROM rec d WHERE d.changed = 1 AND d.link IS NOT NULL"
                " AND d.side = ? AND d.deleted = 1 AND (EXISTS (SELECT 1 FROM rec o"
                " WHERE o.side = 1 - d.side AND o.key = d.other AND o.deleted = 0)"
                " OR EXISTS (SELECT 1 FROM seen o WHERE o.side = 1 - d.side AND o.key = d.other))",
                (side,),
            ).fetchone()[0]
        )

    def pairs(self, batch: int = 2000) -> Iterator[list[PairRow]]:
        """Linked pairs staged on both sides that need a decision, in batches (by left key).

        A pair whose records both equal their base and that has no active queue item is
        skipped without being read: only the changed records (a partial index) and the links
        with active items are joined, so a steady-state cycle's compare costs what changed.
        A record staged light (``seen``) has its base as its values and no text time (its
        ``modus`` instead); ``right_light`` says the right one is.
        """
        cur = self.db.cursor()
        cur.row_factory = _pair_row
        cur.execute(
            "WITH todo (k) AS (SELECT link FROM rec WHERE changed = 1 AND link IS NOT NULL"
            " UNION SELECT left_key FROM act),"
            " p AS (SELECT todo.k AS k, coalesce(l.other, ls.other) AS o,"
            " l.key IS NULL AS l_light FROM todo"
            " LEFT JOIN rec l ON l.side = 0 AND l.key = todo.k AND l.link IS NOT NULL"
            " LEFT JOIN seen ls ON ls.side = 0 AND ls.key = todo.k"
            " WHERE l.key IS NOT NULL OR ls.key IS NOT NULL)"
            " SELECT p.k, p.o,"
            " CASE WHEN p.l_light THEN r.base ELSE l.proj END,"
            " CASE WHEN r.key IS NULL THEN l.base ELSE r.proj END,"
            " coalesce(l.base, r.base), l.raw, r.raw,"
            " l.mod, r.mod, l.ftimes, r.ftimes, coalesce(l.deleted, 0), coalesce(r.deleted, 0),"
            " coalesce(l.nat, r.nat), l.bad, r.bad, r.key IS NULL, ls.modus, rs.modus"
            " FROM p LEFT JOIN rec l ON l.side = 0 AND l.key = p.k"
            " LEFT JOIN seen ls ON ls.side = 0 AND ls.key = p.k"
            " LEFT JOIN rec r ON r.side = 1 AND r.key = p.o"
            " LEFT JOIN seen rs ON rs.side = 1 AND rs.key = p.o"
            " WHERE r.key IS NOT NULL OR rs.key IS NOT NULL ORDER BY p.k"
        )
        while rows := cur.fetchmany(batch):
            yield rows

    def linked_left(self) -> int:
        """How many linked left records are staged (in full or light)."""
        return int(
            self.db.execute(
                "SELECT (SELECT count(*) FROM rec WHERE side = 0 AND link IS NOT NULL)"
                " + (SELECT count(*) FROM seen WHERE side = 0)"
            ).fetchone()[0]
        )

    def light_partners(self) -> list[str]:
        """Right keys staged light whose left record was staged changed: the pair is decided,
        so the right record's own values are needed (a read by key stages it in full)."""
        return [
            row[0]
            for row in self.db.execute(
                "SELECT r.key FROM seen r JOIN rec l ON l.side = 0 AND l.key = r.other"
                " WHERE r.side = 1 AND l.changed = 1 ORDER BY r.key"
            )
        ]

    def singles(self, side: int, batch: int = 2000) -> Iterator[list[Single]]:
        """Live unlinked records of ``side`` in batches."""
        cur = self.db.cursor()
        cur.row_factory = _single
        cur.execute(
            "SELECT key, nat, proj, raw FROM rec WHERE side = ? AND link IS NULL AND deleted = 0"
            " AND NOT EXISTS (SELECT 1 FROM held h WHERE h.side = rec.side AND h.key = rec.key)"
            " ORDER BY key",
            (side,),
        )
        while rows := cur.fetchmany(batch):
            yield rows

    def plan(self, rows: Iterable[Planned]) -> None:
        """Store planned writes."""
        self.db.executemany(
            "INSERT INTO plan (target, op, left_key, right_key, nat, fields, expect, expect_mod,"
            " base, items, rules, shared, src) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def planned(self, target: int, ops: Sequence[str], batch: int) -> Iterator[list[PlanRow]]:
        """Planned writes to ``target`` with one of ``ops``, in batches (id order)."""
        marks = ",".join("?" * len(ops))
        last = 0
        cur = self.db.cursor()
        cur.row_factory = _plan_row
        while True:
            rows: list[PlanRow] = cur.execute(
                "SELECT id, op, left_key, right_key, nat, fields, expect, expect_mod, base,"  # noqa: S608
                f" items, rules, shared, src FROM plan WHERE target = ? AND op IN ({marks})"
                " AND id > ? ORDER BY id LIMIT ?",
                (target, *ops, last, batch),
            ).fetchall()
            if not rows:
                return
            last = rows[-1].id
            yield rows

    def mark_done(self, ids: Sequence[int], done: int) -> None:
        """Record the outcome of planned writes (1 ok, -1 failed or skipped)."""
        self.db.executemany("UPDATE plan SET done = ? WHERE id = ?", [(done, i) for i in ids])

    def take_later(
        self,
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Take out what a shard leaves for the step that sees the whole cycle: the records
        linked to nothing (matching and creating need every shard's), and both records of
        every linked pair with a side gone (deletes wait for the mass-delete guard over the
        whole cycle), with the held records. Returns ``(rec rows, seen rows, held rows)`` as
        plain tuples (:meth:`put`, :meth:`put_unchanged` and :meth:`hold` take them back)."""
        db = self.db
        db.execute("DELETE FROM later")
        db.execute("INSERT OR IGNORE INTO later SELECT side, key FROM rec WHERE link IS NULL")
        db.execute(
            "INSERT OR IGNORE INTO later SELECT side, key FROM rec"
            " WHERE link IS NOT NULL AND deleted = 1"
        )
        db.execute(
            "INSERT OR IGNORE INTO later SELECT 1 - side, other FROM rec"
            " WHERE link IS NOT NULL AND deleted = 1"
        )
        rec = [
            tuple(row)
            for row in db.execute(
                "SELECT r.* FROM rec r JOIN later d ON d.side = r.side AND d.key = r.key"
            )
        ]
        seen = [
            tuple(row)
            for row in db.execute(
                "SELECT s.* FROM seen s JOIN later d ON d.side = s.side AND d.key = s.key"
            )
        ]
        db.execute("DELETE FROM rec WHERE (side, key) IN (SELECT side, key FROM later)")
        db.execute("DELETE FROM seen WHERE (side, key) IN (SELECT side, key FROM later)")
        held = [tuple(row) for row in db.execute("SELECT side, key FROM held")]
        db.execute("DELETE FROM held")
        return rec, seen, held

    def staged_keys(self, side: int) -> list[str]:
        """Every key staged on ``side`` (in full or light)."""
        return [
            row[0]
            for row in self.db.execute(
                "SELECT key FROM rec WHERE side = ? UNION SELECT key FROM seen WHERE side = ?",
                (side, side),
            )
        ]

    def shared_complete(self) -> Iterator[tuple[str, str | None, str | None, str | None]]:
        """Links whose writes to both sides all succeeded: left key, base, items, rules."""
        cur = self.db.execute(
            "SELECT left_key, max(base), max(items), max(rules) FROM plan WHERE shared = 1"
            " GROUP BY left_key HAVING min(done) = 1 AND count(*) = 2"
        )
        yield from cur
