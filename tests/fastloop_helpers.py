"""Shared scaffolding for fast-loop tests: two simulated CRMs, a signer and a simple parser."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from syncrecon import (
    FieldMap,
    MalformedPayloadError,
    NaturalKey,
    Reconciler,
    Side,
    SyncDefinition,
    escalate,
    merge,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon.storage import Storage
from syncrecon.testing import ManualClock, SimulatedSystem
from syncrecon.webhooks import (
    ChangeEvent,
    EventKind,
    StandardWebhooksVerifier,
    WebhookHandler,
    WebhookRequest,
    WebhookSource,
)

SECRET = "whsec_" + base64.b64encode(b"fast-loop-test-secret-0123456789").decode()
STAGES = {"open": "Prospecting", "won": "Closed Won", "lost": "Closed Lost"}


class JsonChanges:
    """Parses ``[{"id", "key", "field", "value", "at" (epoch ms), "kind"?}]`` (tests only)."""

    def __init__(self, system: str) -> None:
        self.system = system

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Sequence[ChangeEvent]:
        try:
            items = json.loads(body)
            return [
                ChangeEvent(
                    system=self.system,
                    object_type="deal",
                    key=str(i["key"]),
                    kind=EventKind(i.get("kind", "update")),
                    field=i.get("field"),
                    value=i.get("value"),
                    occurred_at=datetime.fromtimestamp(i["at"] / 1000, UTC),
                    event_id=str(i["id"]),
                )
                for i in items
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedPayloadError(f"bad test payload: {exc}") from exc


def sign(body: bytes, msg_id: str, when: datetime, secret: str = SECRET) -> dict[str, str]:
    """Standard Webhooks v1 headers for ``body``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    stamp = str(int(when.timestamp()))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


class World:
    """HubSpot-like left and Salesforce-like right, linked by a first reconciliation cycle."""

    def __init__(self, storage: Storage, *, records: int = 5, inline: bool = True) -> None:
        self.clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC), tick=timedelta(milliseconds=1))
        self.left = SimulatedSystem("hubspot", clock=self.clock, key_prefix="h")
        self.right = SimulatedSystem("salesforce", clock=self.clock, key_prefix="s")
        for i in range(records):
            common = {"notes": f"n{i}", "tags": ["a"], "amount": 100 + i}
            self.left.create({"email": f"u{i}@x.com", "stage": "open", **common})
            self.right.create(
                {
                    "Email": f"u{i}@x.com",
                    "StageName": "Prospecting",
                    "Notes": common["notes"],
                    "Tags": ["a"],
                    "Amount": common["amount"],
                }
            )
        self.sync = SyncDefinition(
            name="deals",
            left=self.left,
            right=self.right,
            fields=[
                FieldMap(
                    left="stage",
                    right="StageName",
                    policy=source_of_truth("left"),
                    transform=value_map(STAGES),
                ),
                FieldMap(left="notes", right="Notes", policy=recency()),
                FieldMap(left="tags", right="Tags", policy=merge()),
                FieldMap(left="amount", right="Amount", policy=escalate("deal_value")),
            ],
            natural_key=NaturalKey(left="email", right="Email"),
            delete_from=Side.LEFT,
        )
        self.storage = storage
        self.reconciler = Reconciler(self.sync, storage, clock=self.clock)
        self.reconciler.run_cycle()
        verifier = StandardWebhooksVerifier(secrets=[SECRET], clock=self.clock)
        self.handler = WebhookHandler(
            [
                WebhookSource(
                    name="hubspot",
                    sync=self.sync,
                    side=Side.LEFT,
                    verifier=verifier,
                    parser=JsonChanges("hubspot"),
                ),
                WebhookSource(
                    name="salesforce",
                    sync=self.sync,
                    side=Side.RIGHT,
                    verifier=verifier,
                    parser=JsonChanges("salesforce"),
                ),
            ],
            storage,
            clock=self.clock,
            inline=inline,
        )
        self._ids = 0

    def request(
        self,
        source: str,
        items: list[dict[str, Any]],
        *,
        msg_id: str | None = None,
        when: datetime | None = None,
    ) -> WebhookRequest:
        self._ids += 1
        body = json.dumps(items).encode()
        headers = sign(body, msg_id or f"msg_{self._ids}", when or self.clock.now())
        return WebhookRequest(
            method="POST",
            url=f"https://app.example.com/webhooks/{source}",
            headers=headers,
            body=body,
        )

    def change(
        self,
        key: str,
        field: str,
        value: Any,
        *,
        at: datetime | None = None,
        event_id: str | None = None,
        kind: str = "update",
    ) -> dict[str, Any]:
        self._ids += 1
        when = at or self.clock.now()
        return {
            "id": event_id or f"evt_{self._ids}",
            "key": key,
            "field": field,
            "value": value,
            "at": int(when.timestamp() * 1000),
            "kind": kind,
        }
