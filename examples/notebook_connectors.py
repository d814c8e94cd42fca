"""Two hand-written connectors, a rule set, and two reconciliation cycles.

A "crm" (plain ``def`` methods) and a "billing" system (``async def`` methods, as a client built
on ``httpx.AsyncClient`` would have) keep their records in dicts, under different field names.
syncrecon links them by e-mail, fixes what the rules allow, queues the rest for a person, and a
second cycle finds nothing left to write. Run: ``python examples/notebook_connectors.py``.
"""

import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from syncrecon import (
    Capabilities,
    Change,
    FieldInfo,
    FieldMap,
    NaturalKey,
    Page,
    Reconciler,
    Record,
    Side,
    Status,
    SyncDefinition,
    WriteResult,
    escalate,
    merge,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon.storage.sqlite import SQLiteStorage


class DictSystem:
    """What both systems share: records in a dict, pages in key order, writes applied in place."""

    def __init__(self, name: str, records: dict[str, Record], *, page_size: int) -> None:
        self.name = name
        self.capabilities = Capabilities(page_size=page_size, max_write_batch=50)
        self.records = records

    def _page(self, cursor: str | None) -> Page:
        start, keys = int(cursor or 0), sorted(self.records)  # the cursor is a position
        end = start + self.capabilities.page_size
        rows = [self.records[k] for k in keys[start:end]]
        return Page(records=rows, next_cursor=str(end) if end < len(keys) else None)

    def _read(self, keys: Sequence[str]) -> list[Record]:
        return [self.records[k] for k in keys if k in self.records]

    def _apply(self, changes: Sequence[Change]) -> list[WriteResult]:
        results = []  # one result per change (this example never deletes)
        for change in changes:
            key = change.key or f"{self.name}-{len(self.records) + 100}"  # a create: a new key
            fields = {**(self.records[key].fields if key in self.records else {}), **change.fields}
            self.records[key] = Record(key=key, fields=fields, modified_at=datetime.now(UTC))
            results.append(WriteResult.success(change, key))
        return results


class Crm(DictSystem):
    """Deals, behind plain ``def`` methods."""

    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        return self._page(cursor)

    def read_records(self, keys: Sequence[str]) -> list[Record]:
        return self._read(keys)

    def write_records(self, changes: Sequence[Change]) -> list[WriteResult]:
        return self._apply(changes)

    def describe_fields(self) -> list[FieldInfo]:
        # Types matter: a value that does not fit its described type is held and escalated.
        return [
            *(FieldInfo(name=n) for n in ("email", "stage", "notes")),
            FieldInfo(name="tags", type="multi_select"),
            FieldInfo(name="amount", type="number"),
        ]


class Billing(DictSystem):
    """Accounts, behind ``async def`` methods: syncrecon awaits them for you."""

    async def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        return self._page(cursor)

    async def read_records(self, keys: Sequence[str]) -> list[Record]:
        return self._read(keys)

    async def write_records(self, changes: Sequence[Change]) -> list[WriteResult]:
        return self._apply(changes)

    async def describe_fields(self) -> list[FieldInfo]:
        return [
            *(FieldInfo(name=n) for n in ("contact", "status", "memo")),
            FieldInfo(name="labels", type="multi_select"),
            FieldInfo(name="total", type="number"),
        ]


def record(key: str, minutes: int, **fields: Any) -> Record:
    """A record last modified ``minutes`` after nine o'clock on 1 March 2026."""
    return Record(key=key, fields=fields, modified_at=datetime(2026, 3, 1, 9, minutes, tzinfo=UTC))


crm = Crm("crm", {
    "deal-1": record("deal-1", 0, email="ada@example.com", stage="won", notes="call Monday",
                     tags=["vip"], amount=1200),
    "deal-2": record("deal-2", 0, email="bob@example.com", stage="lead", notes="", tags=[],
                     amount=300),
    "deal-3": record("deal-3", 5, email="cy@example.com", stage="lead", notes="new", tags=["eu"],
                     amount=80),
}, page_size=2)  # fmt: skip
billing = Billing("billing", {
    "acct-7": record("acct-7", 30, contact="Ada@Example.com", status="prospect",
                     memo="called; wants an EU invoice", labels=["vip", "eu"], total=1250),
    "acct-8": record("acct-8", 10, contact="bob@example.com", status="prospect", memo="",
                     labels=["trial"], total=300),
}, page_size=100)  # fmt: skip

sync = SyncDefinition(
    name="deals",
    left=crm,
    right=billing,
    fields=[
        # The CRM owns the e-mail: it flows one way and is never written back to the CRM.
        FieldMap(left="email", right="contact", direction="left_to_right"),
        # The CRM owns the stage; billing names its values differently.
        FieldMap(
            left="stage",
            right="status",
            policy=source_of_truth("left"),
            transform=value_map({"lead": "prospect", "won": "customer"}),
        ),
        FieldMap(left="notes", right="memo", policy=recency(skew=timedelta(seconds=30))),
        FieldMap(left="tags", right="labels", policy=merge()),
        FieldMap(left="amount", right="total", policy=escalate("money")),
    ],
    natural_key=NaturalKey(left="email", right="contact"),  # trimmed and case-folded
    create_on=["right"],  # a deal that billing lacks becomes a new account there
)

with tempfile.TemporaryDirectory() as tmp:
    storage = SQLiteStorage(Path(tmp) / "deals.sqlite")
    reconciler = Reconciler(sync, storage)
    first = reconciler.run_cycle()
    print(first, end="\n\n")
    second = reconciler.run_cycle()
    print(second, end="\n\n")

    # Escalated fields wait for a person; every other field now agrees on both sides.
    waiting = storage.list_items(statuses=[Status.ESCALATED])
    for item in waiting:
        print(f"needs a person: {item.left_key}.{item.field}\n{item.explanation}\n")
    escalated = {(item.left_key, item.field) for item in waiting}
    links = storage.get_links(sync.name, Side.LEFT, list(crm.records))
    assert len(links) == len(crm.records) == len(billing.records) == 3
    for link in links.values():
        for fm in sync.fields:
            if (link.left_key, fm.left) not in escalated:
                left = crm.records[link.left_key].fields[fm.left]
                right = fm.transform.to_left(billing.records[link.right_key].fields[fm.right])
                assert left == right, (link, fm.left, left, right)
    assert escalated == {("deal-1", "amount")}, escalated
    assert second.total_writes == 0, second
    storage.close()

print("converged: the second cycle wrote nothing")
