"""The connectors' part of ``python -m syncrecon bench``: real connectors over httpx, against
the HubSpot and Salesforce emulators, on a virtual clock.

- ``hubspot_requests_vs_floor`` / ``salesforce_requests_vs_floor``: the HTTP requests of a full
  pass (every page of a full listing, plus what the connector needs first: the properties or
  describe call) over the floor ``ceil(N / page)`` of the listing endpoint.
- ``rate_limited_wall_vs_floor``: a HubSpot full pass plus batch reads and writes under the
  documented limit (100 requests per 10 s) on virtual time: the time it took over
  ``requests / allowed rate``; ``rate_limited_429s`` counts the 429s earned (the goal is 0).
- ``connector_cpu_us_per_record``: our own decoding and typing of a record read, and encoding
  of a record written, per provider (the emulators' and httpx's time left out).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ._models import Change, ChangeOp
from .connectors.hubspot import HubSpotConnector
from .connectors.salesforce import SalesforceConnector
from .http import RateLimiter, VirtualTimer, Window
from .testing import ManualClock
from .testing._hubspot import HubSpotEmulator
from .testing._salesforce import SalesforceEmulator

HUBSPOT_PROPS = ["dealname", "dealstage", "amount", "closedate", "description", "tags"]
SALESFORCE_FIELDS = ["Name", "StageName", "Amount", "CloseDate", "Description", "Tags__c"]
STAGES = ["qualifiedtobuy", "presentationscheduled", "closedwon", "closedlost"]
SF_STAGES = ["Prospecting", "Qualification", "Closed Won", "Closed Lost"]
TAGS = ["vip", "renewal", "new"]
SF_TAGS = ["Renewal", "Upsell", "Partner", "Enterprise"]


class _Capture:
    """A transport that keeps the JSON answers of the listing endpoint (for the CPU figure)."""

    def __init__(self, inner: httpx.MockTransport, keep: Callable[[str], bool]) -> None:
        self.inner = inner
        self.keep = keep
        self.bodies: list[Any] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if self.keep(request.url.path) and len(self.bodies) < 5:
            response.read()
            self.bodies.append(json.loads(response.content))
        return response


def _full_pass(conn: Any) -> int:
    cursor = None
    n = 0
    while True:
        page = conn.list_records(since=None, cursor=cursor)
        n += len(page.records)
        cursor = page.next_cursor
        if cursor is None:
            return n


def _cpu_per_record(
    decode: Callable[[Any], Any], encode: Callable[[Any], Any], items: list[Any]
) -> float:
    records = []
    began = time.process_time()
    for item in items:
        records.append(decode(item))
    for record in records:
        encode(record.fields)
    spent = time.process_time() - began
    return spent / max(len(items), 1) * 1e6


def _hubspot(records: int) -> dict[str, Any]:
    clock = ManualClock(datetime(2026, 3, 2, tzinfo=UTC))
    emu = HubSpotEmulator(clock=clock, access_token="pat-bench", daily_limit=None, seed=1)
    emu.add_property("deals", "tags", type="enumeration", field_type="checkbox", options=TAGS)
    emu.bulk_add(
        "deals",
        records,
        lambda i: {
            "dealname": f"Deal {i:06d}",
            "dealstage": STAGES[i % 4],
            "amount": str(1000 + i),
            "closedate": "2026-06-30T00:00:00.000Z",
            "description": f"Notes for deal {i}",
            "tags": ";".join(TAGS[: 1 + i % 3]),
        },
    )
    capture = _Capture(emu.transport(), lambda path: path.endswith("/objects/deals"))
    timer = VirtualTimer(clock)
    limiter = RateLimiter([Window(100, 10.0)], timer=timer, name="bench")
    search = RateLimiter([Window(5, 1.0)], timer=timer, name="bench search")
    with httpx.Client(transport=httpx.MockTransport(capture)) as client:
        conn = HubSpotConnector(
            client,
            object_type="deals",
            properties=HUBSPOT_PROPS,
            token="pat-bench",
            limiter=limiter,
            search_limiter=search,
            timer=timer,
            clock=clock,
        )
        start = clock.now()
        began = time.perf_counter()
        listed = _full_pass(conn)
        pass_s = time.perf_counter() - began
        pass_requests = sum(conn.api.requests.values())
        # Then what a cycle does next: read some records back and write the fixes.
        keys = [str(1001 + i) for i in range(0, records, max(1, records // 2000))][:2000]
        for i in range(0, len(keys), 100):
            conn.read_records(keys[i : i + 100])
        changes = [
            Change(op=ChangeOp.UPDATE, key=k, fields={"description": f"fixed {k}"}, ref=k)
            for k in keys
        ]
        for i in range(0, len(changes), 100):
            conn.write_records(changes[i : i + 100])
        elapsed = (clock.now() - start).total_seconds()
        total = sum(conn.api.requests.values()) + sum(conn.search_api.requests.values())
        items = [item for body in capture.bodies for item in body.get("results", [])]
        cpu = _cpu_per_record(conn._record, conn.encode, items)
    floor = math.ceil(records / 100)
    allowed_per_s = 100 / 10.0
    return {
        "hubspot_records_listed": listed,
        "hubspot_full_pass_requests": pass_requests,
        "hubspot_request_floor": floor,
        "hubspot_requests_vs_floor": round(pass_requests / floor, 4),
        "hubspot_full_pass_s": round(pass_s, 3),
        "rate_limited_requests": total,
        "rate_limited_wall_s": round(elapsed, 1),
        "rate_limit_floor_s": round(total / allowed_per_s, 1),
        "rate_limited_wall_vs_floor": round(elapsed / (total / allowed_per_s), 4),
        "rate_limited_429s": emu.request_count(status=429),
        "hubspot_cpu_us_per_record": round(cpu, 2),
    }


def _salesforce(records: int) -> dict[str, Any]:
    from .connectors.salesforce import jwt_bearer
    from .testing._salesforce import make_test_key_pair

    clock = ManualClock(datetime(2026, 3, 2, tzinfo=UTC))
    emu = SalesforceEmulator(clock=clock, daily_api_limit=1_000_000)
    private, public = make_test_key_pair()
    emu.register_jwt_client("bench-key", public, "bench@example.com")
    emu.bulk_add(
        "Opportunity",
        records,
        lambda i: {
            "Name": f"Deal {i:06d}",
            "StageName": SF_STAGES[i % 4],
            "Amount": 1000 + i,
            "CloseDate": "2026-06-30",
            "Description": f"Notes for deal {i}",
            "Tags__c": ";".join(SF_TAGS[: 1 + i % 3]),
        },
    )
    capture = _Capture(emu.transport(), lambda path: "/query" in path)
    timer = VirtualTimer(clock)
    auth = jwt_bearer(
        consumer_key="bench-key",
        username="bench@example.com",
        private_key=private,
        clock=clock,
        session_lifetime=timedelta(hours=1),
    )
    with httpx.Client(transport=httpx.MockTransport(capture)) as client:
        conn = SalesforceConnector(
            client,
            sobject="Opportunity",
            fields=SALESFORCE_FIELDS,
            auth=auth,
            daily_limit=1_000_000,
            timer=timer,
            clock=clock,
        )
        began = time.perf_counter()
        listed = _full_pass(conn)
        pass_s = time.perf_counter() - began
        requests = sum(conn.api.requests.values())
        items = [row for body in capture.bodies for row in body.get("records", [])]
        cpu = _cpu_per_record(
            conn._record,
            lambda fields: conn._payload(
                Change(op=ChangeOp.UPDATE, key="006", fields=fields, ref="r")
            ),
            items,
        )
    floor = math.ceil(records / 2000)
    return {
        "salesforce_records_listed": listed,
        "salesforce_full_pass_requests": requests,
        "salesforce_request_floor": floor,
        "salesforce_requests_vs_floor": round(requests / floor, 4),
        "salesforce_full_pass_s": round(pass_s, 3),
        "salesforce_cpu_us_per_record": round(cpu, 2),
    }


def run_connector_bench(records: int = 100_000) -> dict[str, Any]:
    """The connectors' figures, for ``records`` records on each emulator."""
    hubspot = _hubspot(records)
    salesforce = _salesforce(records)
    cpu = (hubspot["hubspot_cpu_us_per_record"] + salesforce["salesforce_cpu_us_per_record"]) / 2
    return {**hubspot, **salesforce, "connector_cpu_us_per_record": round(cpu, 2)}
