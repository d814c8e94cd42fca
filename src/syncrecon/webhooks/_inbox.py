"""The inbox's vocabulary, shared by the front door that fills it and the processor that
drains it: how an event is stored (:func:`event_row`) and read back (:func:`stored_event`),
and the ``webhook_events`` counter each outcome adds (:func:`outcome_counter`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..storage._base import Counter
from ._events import ChangeEvent, EventOutcome

if TYPE_CHECKING:
    from ._handler import WebhookSource


def event_row(event: ChangeEvent) -> dict[str, Any]:
    """The event as the inbox stores it."""
    return {
        "system": event.system,
        "object_type": event.object_type,
        "key": event.key,
        "kind": event.kind.value,
        "occurred_at": event.occurred_at,
        "event_id": event.event_id,
        "field": event.field,
        "value": event.value,
        "dedupe_key": event.dedupe_key,
        "merged_keys": list(event.merged_keys),
        "change_source": event.change_source,
    }


def stored_event(data: Mapping[str, Any]) -> ChangeEvent:
    """The event an inbox row holds (:func:`event_row` read back)."""
    return ChangeEvent(**{**data, "merged_keys": tuple(data.get("merged_keys") or ())})


def outcome_counter(src: WebhookSource, outcome: EventOutcome, amount: int = 1) -> Counter:
    """``amount`` events of ``src`` that ended as ``outcome``, for the dashboard."""
    return Counter(
        metric="webhook_events",
        labels={"source": src.name, "direction": src.direction, "outcome": outcome.value},
        amount=amount,
    )
