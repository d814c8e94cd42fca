"""The fast loop's triage as pure decisions: frozen values in, a verdict or a planned write out.

No storage and no clock here: what each check needs (the link, what is known about the
sync's fields, the time of the change last applied, an unspent echo entry) is handed in, the
way the processor reads it just before the check (``syncrecon.webhooks._process``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fastloop_helpers import World
from syncrecon import Side, Status
from syncrecon.storage import InboxEntry, Link
from syncrecon.storage.memory import MemoryStorage
from syncrecon.webhooks import ChangeEvent, EventOutcome, WebhookSource
from syncrecon.webhooks._triage import (
    Candidate,
    FieldFacts,
    Match,
    Planned,
    Verdict,
    check_field,
    check_order,
    decide,
    match,
    screen,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
NOTHING_KNOWN = FieldFacts(quarantined=frozenset(), waiting=frozenset(), schemas={})
ENTRY = InboxEntry(source="hubspot", dedupe_key="e1", event={}, received_at=NOW, id=1)


@pytest.fixture(scope="module")
def sources() -> dict[str, WebhookSource]:
    return World(MemoryStorage()).handler.sources


def _event(field: str | None = "stage", value: Any = "won", **kw: Any) -> ChangeEvent:
    args: dict[str, Any] = {
        "system": "hubspot",
        "object_type": "deal",
        "key": "h1",
        "kind": "update",
        "occurred_at": NOW - timedelta(minutes=1),
        "event_id": "e1",
        "field": field,
        "value": value,
    }
    return ChangeEvent(**{**args, **kw})


LINK = Link(sync="deals", left_key="h1", right_key="s1", base={"stage": "open", "notes": "n0"})


def _candidate(src: WebhookSource, field: str = "stage", value: Any = "won") -> Candidate:
    found = match(src, _event(field, value), LINK)
    assert isinstance(found, Match)
    checked = check_field(found, NOTHING_KNOWN, now=NOW)
    assert isinstance(checked, Candidate)
    return checked


def test_screen_ignores_other_object_types_and_defers_creations(
    sources: dict[str, WebhookSource],
) -> None:
    hubspot = WebhookSource(
        name="hubspot",
        sync=sources["hubspot"].sync,
        side=Side.LEFT,
        verifier=sources["hubspot"].verifier,
        parser=sources["hubspot"].parser,
        object_type="deal",
    )
    assert screen(hubspot, _event(object_type="contact")) == Verdict(
        outcome=EventOutcome.IGNORED, note="object type 'contact'"
    )
    assert screen(hubspot, _event(kind="create", field=None)) == Verdict(
        outcome=EventOutcome.DEFERRED, note="create: matched by reconciliation"
    )
    assert screen(hubspot, _event()) is None


def test_match_needs_a_link_an_update_and_a_mapped_field(
    sources: dict[str, WebhookSource],
) -> None:
    src = sources["hubspot"]
    assert match(src, _event(), None).note == "not linked yet: reconciliation matches it"
    deletion = match(src, _event(kind="delete", field=None), LINK)
    assert deletion == Verdict(
        outcome=EventOutcome.DEFERRED, note="deletion: decided by reconciliation"
    )
    assert match(src, _event(field="phone"), LINK) == Verdict(
        outcome=EventOutcome.IGNORED, note="field 'phone' is not mapped"
    )
    found = match(src, _event(), LINK)
    assert isinstance(found, Match)
    assert (found.fm.left, found.link) == ("stage", LINK)


def test_check_field_quarantine_waiting_and_drift(sources: dict[str, WebhookSource]) -> None:
    src = sources["hubspot"]
    found = match(src, _event(field="amount", value="lots"), LINK)
    assert isinstance(found, Match)
    quarantined = FieldFacts(quarantined=frozenset({"amount"}), waiting=frozenset(), schemas={})
    assert check_field(found, quarantined, now=NOW).note == (
        "the field is quarantined (schema drift)"
    )
    waiting = FieldFacts(
        quarantined=frozenset(), waiting=frozenset({("h1", "s1", "amount")}), schemas={}
    )
    assert check_field(found, waiting, now=NOW).note == "the field waits for an operator"
    typed = FieldFacts(
        quarantined=frozenset(),
        waiting=frozenset(),
        schemas={(Side.LEFT, "amount"): {"type": "number"}},
    )
    drift = check_field(found, typed, now=NOW)
    assert isinstance(drift, Verdict)
    assert (drift.outcome, drift.quarantine) == (EventOutcome.DEFERRED, "amount")
    assert drift.item is not None
    assert (drift.item.status, drift.item.category, drift.item.detected_at) == (
        Status.ESCALATED,
        "schema_drift",
        NOW,
    )


def test_check_order_finds_stale_events(sources: dict[str, WebhookSource]) -> None:
    c = _candidate(sources["hubspot"])
    assert check_order(c, None) is c
    assert check_order(c, c.event.occurred_at - timedelta(seconds=1)) is c
    stale = check_order(c, c.event.occurred_at)
    assert isinstance(stale, Verdict)
    assert stale.outcome is EventOutcome.STALE


def test_decide_echoes_no_ops_policies_and_planned_writes(
    sources: dict[str, WebhookSource],
) -> None:
    hubspot, salesforce = sources["hubspot"], sources["salesforce"]
    c = _candidate(hubspot)
    assert decide(ENTRY, c, echo=7, now=NOW) == Verdict(
        outcome=EventOutcome.ECHO, note="the webhook of syncrecon's own write", spend_echo=7
    )
    back = _candidate(hubspot, value="open")  # the last-synced value
    assert decide(ENTRY, back, echo=None, now=NOW) == Verdict(
        outcome=EventOutcome.ECHO,
        note="equal to the last-synced value",
        newest=("deals", "h1", "stage", back.event.occurred_at),
    )
    planned = decide(ENTRY, c, echo=None, now=NOW)
    assert isinstance(planned, Planned)
    assert (planned.value, planned.base, planned.rule, planned.entry) == (
        "won",
        "open",
        "source_of_truth",
        ENTRY,
    )
    # The source of truth is the left: a change on the right is a queue item, not a write.
    found = match(salesforce, _event(field="StageName", value="Closed Lost", key="s1"), LINK)
    assert isinstance(found, Match)
    other = check_field(found, NOTHING_KNOWN, now=NOW)
    assert isinstance(other, Candidate)
    assert other.value == "lost"  # in the left vocabulary
    refused = decide(ENTRY, other, echo=None, now=NOW)
    assert isinstance(refused, Verdict)
    assert refused.outcome is EventOutcome.DEFERRED
    assert refused.item is not None
    assert (refused.item.rule, refused.item.detected_at) == ("source_of_truth", NOW)
