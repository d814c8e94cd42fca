"""The demo's and the benchmark's world: HubSpot-like deals and Salesforce-like opportunities.

Field names, the stage picklist and the rule set follow the mission's example: the deal stage
has HubSpot as its source of truth, notes go by recency, tags merge, and amount and close date
always go to an operator.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from ._models import FieldInfo, Side
from ._policy import escalate, merge, recency, source_of_truth
from ._sync import FieldMap, NaturalKey, SyncDefinition, value_map
from .testing import GeneratedSystem, ManualClock, SimulatedSystem

STAGES = {
    "appointmentscheduled": "Prospecting",
    "qualifiedtobuy": "Qualification",
    "presentationscheduled": "Needs Analysis",
    "decisionmakerboughtin": "Proposal",
    "contractsent": "Negotiation",
    "closedwon": "Closed Won",
    "closedlost": "Closed Lost",
}
TAGS = ["enterprise", "smb", "renewal", "upsell", "partner", "priority", "emea", "apac"]
NOTES = ["intro call done", "sent pricing", "waiting on legal", "champion left", "demo booked"]


def deal_fields() -> list[FieldMap]:
    """The mission's rule set over the deal fields."""
    return [
        FieldMap(
            left="dealstage",
            right="StageName",
            transform=value_map(STAGES),
            policy=source_of_truth(Side.LEFT),
        ),
        FieldMap(left="notes", right="Description", policy=recency(skew=timedelta(seconds=2))),
        FieldMap(left="tags", right="Tags__c", policy=merge()),
        FieldMap(left="amount", right="Amount", policy=escalate("deal_value")),
        FieldMap(left="closedate", right="CloseDate", policy=escalate("contract_dates")),
    ]


def deal_sync(left: Any, right: Any, *, name: str = "deals") -> SyncDefinition:
    """HubSpot deals (left) <-> Salesforce opportunities (right)."""
    return SyncDefinition(
        name=name,
        left=left,
        right=right,
        fields=deal_fields(),
        natural_key=NaturalKey(left="email", right="Email"),
        create_on=[Side.LEFT, Side.RIGHT],
        delete_from=Side.LEFT,
    )


def hubspot_deal(i: int, rng: random.Random) -> dict[str, Any]:
    """A HubSpot-shaped deal."""
    return {
        "email": f"buyer{i}@example.com",
        "dealname": f"Deal {i}",
        "dealstage": rng.choice(list(STAGES)),
        "notes": rng.choice(NOTES),
        "tags": sorted(rng.sample(TAGS, rng.randint(0, 3))),
        "amount": rng.randrange(1_000, 500_000, 100),
        "closedate": date(2026, 1, 1) + timedelta(days=rng.randrange(365)),
    }


def to_salesforce(deal: Mapping[str, Any]) -> dict[str, Any]:
    """The same deal as a Salesforce opportunity."""
    return {
        "Email": str(deal["email"]).upper() if len(str(deal["email"])) % 3 == 0 else deal["email"],
        "Name": deal["dealname"],
        "StageName": STAGES[deal["dealstage"]],
        "Description": deal["notes"],
        "Tags__c": list(deal["tags"]),
        "Amount": deal["amount"],
        "CloseDate": deal["closedate"],
    }


HUBSPOT_FIELDS = [
    FieldInfo(name="email", type="string"),
    FieldInfo(name="dealname", type="string"),
    FieldInfo(name="dealstage", type="enumeration", options=tuple(STAGES)),
    FieldInfo(name="notes", type="string"),
    FieldInfo(name="tags", type="multi_enumeration", options=tuple(TAGS)),
    FieldInfo(name="amount", type="number"),
    FieldInfo(name="closedate", type="date"),
]
SALESFORCE_FIELDS = [
    FieldInfo(name="Email", type="email"),
    FieldInfo(name="Name", type="string"),
    FieldInfo(name="StageName", type="picklist", options=tuple(STAGES.values())),
    FieldInfo(name="Description", type="textarea"),
    FieldInfo(name="Tags__c", type="multipicklist", options=tuple(TAGS)),
    FieldInfo(name="Amount", type="currency"),
    FieldInfo(name="CloseDate", type="date"),
]


def simulated_pair(clock: ManualClock) -> tuple[SimulatedSystem, SimulatedSystem]:
    """Empty HubSpot-like and Salesforce-like systems with their providers' page sizes."""
    hubspot = SimulatedSystem(
        "hubspot",
        clock=clock,
        key_prefix="hs-",
        page_size=100,
        max_read_batch=100,
        max_write_batch=100,
        field_timestamps=True,
        fields=HUBSPOT_FIELDS,
    )
    salesforce = SimulatedSystem(
        "salesforce",
        clock=clock,
        key_prefix="006",
        page_size=2000,
        max_read_batch=2000,
        max_write_batch=200,
        fields=SALESFORCE_FIELDS,
    )
    return hubspot, salesforce


def generated_pair(
    count: int, seed: int, clock: ManualClock
) -> tuple[GeneratedSystem, GeneratedSystem]:
    """Two large systems whose records are generated on demand from ``seed``."""

    def left(i: int) -> dict[str, Any]:
        return hubspot_deal(i, random.Random(seed * 1_000_003 + i))

    def right(i: int) -> dict[str, Any]:
        return to_salesforce(left(i))

    hubspot = GeneratedSystem(
        "hubspot",
        count=count,
        make=left,
        clock=clock,
        key_prefix="hs-",
        page_size=100,
        max_read_batch=100,
        max_write_batch=100,
    )
    salesforce = GeneratedSystem(
        "salesforce",
        count=count,
        make=right,
        clock=clock,
        key_prefix="006",
        page_size=2000,
        max_read_batch=2000,
        max_write_batch=200,
    )
    return hubspot, salesforce
