"""No credential ever shows: not in a repr, a log line, an error, the queue, the database or
the dashboard. Both loops run against the emulators with OAuth (HubSpot, rotating refresh
tokens) and JWT (Salesforce), through failures that put errors into logs and the queue; then
every place a secret could land is searched for every secret that was ever in play."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from syncrecon import (
    FieldMap,
    NaturalKey,
    Reconciler,
    SyncDefinition,
    SyncReconError,
    escalate,
    recency,
)
from syncrecon.connectors.hubspot import HubSpotConnector
from syncrecon.connectors.salesforce import SalesforceConnector, jwt_bearer
from syncrecon.dashboard import build_dashboard
from syncrecon.http import OAuth2RefreshToken, TokenSet, VirtualTimer
from syncrecon.queue import OperatorQueue, item_data
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import HubSpotEmulator, ManualClock, SalesforceEmulator, make_test_key_pair
from syncrecon.webhooks import WebhookHandler, WebhookRequest

HS_CLIENT_SECRET = "hs-client-secret-7f3a9c"
HS_REFRESH = "hs-refresh-token-2b8d41"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Recorder:
    """A transport wrapper that keeps every request and answer body (to find the tokens)."""

    def __init__(self, inner: httpx.MockTransport) -> None:
        self.inner = inner
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.bodies.append(request.content)
        response = self.inner.handle_request(request)
        response.read()
        self.bodies.append(response.content)
        return response


def hubspot_signature(secret: str, method: str, url: str, body: bytes, timestamp: str) -> str:
    mac = hmac.new(
        secret.encode(), (method + url).encode() + body + timestamp.encode(), hashlib.sha256
    )
    return base64.b64encode(mac.digest()).decode()


def test_no_secret_anywhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = ManualClock(START)
    timer = VirtualTimer(clock)
    hs = HubSpotEmulator(
        clock=clock,
        access_token=None,
        client_secret=HS_CLIENT_SECRET,
        refresh_token=HS_REFRESH,
        rotate_refresh_tokens=True,
        access_token_ttl=900,
    )
    sf = SalesforceEmulator(clock=clock)
    private, public = make_test_key_pair()
    sf.register_jwt_client("sf-consumer", public, "sync@acme.test")
    hs_wire, sf_wire = Recorder(hs.transport()), Recorder(sf.transport())
    issued: list[TokenSet] = []
    hs_auth = OAuth2RefreshToken(
        "https://api.hubapi.com/oauth/v1/token",
        client_id=hs.client_id,
        client_secret=HS_CLIENT_SECRET,
        refresh_token=HS_REFRESH,
        on_token=issued.append,
        clock=clock,
    )
    sf_auth = jwt_bearer(
        consumer_key="sf-consumer", username="sync@acme.test", private_key=private, clock=clock
    )
    deals = HubSpotConnector(
        httpx.Client(transport=httpx.MockTransport(hs_wire)),
        object_type="deals",
        properties=["dealname", "description", "amount", "dealstage"],
        auth=hs_auth,
        timer=timer,
        clock=clock,
    )
    opps = SalesforceConnector(
        httpx.Client(transport=httpx.MockTransport(sf_wire)),
        sobject="Opportunity",
        fields=["Name", "Description", "Amount", "StageName"],
        auth=sf_auth,
        timer=timer,
        clock=clock,
    )
    sync = SyncDefinition(
        name="deals",
        left=deals,
        right=opps,
        fields=[
            FieldMap(left="dealname", right="Name", policy=recency()),
            FieldMap(left="description", right="Description", policy=recency()),
            FieldMap(left="amount", right="Amount", policy=escalate()),
            # HubSpot stage ids are not Salesforce stage names: the writes are refused.
            FieldMap(left="dealstage", right="StageName", policy=recency()),
        ],
        natural_key=NaturalKey(left="dealname", right="Name", normalize=lambda v: str(v).lower()),
    )
    for i in range(6):
        hs.add("deals", {"dealname": f"Deal {i}", "amount": str(100 + i), "description": "hs"})
        sf.add("Opportunity", {"Name": f"Deal {i}", "Amount": 200 + i, "CloseDate": "2026-06-30"})
    storage = SQLiteStorage(tmp_path / "sync.sqlite")
    reconciler = Reconciler(sync, storage, clock=clock)
    errors: list[BaseException] = []
    report = reconciler.run_cycle()
    assert report.escalated  # amounts differ: items in the queue
    clock.advance(3600)  # both sessions renew: rotated refresh token, new JWT
    sf.expire_sessions()
    report = reconciler.run_cycle(full=True)

    # A webhook signed with the client secret, and one with a wrong signature.
    handler = WebhookHandler(
        [deals.webhook_source(sync, "left", client_secrets=[HS_CLIENT_SECRET], clock=clock)],
        storage,
        clock=clock,
    )
    body = json.dumps(
        [
            {
                "eventId": 1,
                "subscriptionId": 2,
                "portalId": hs.portal_id,
                "occurredAt": int(clock.now().timestamp() * 1000),
                "subscriptionType": "deal.propertyChange",
                "objectId": 1001,
                "propertyName": "description",
                "propertyValue": "from a webhook",
                "attemptNumber": 0,
            }
        ]
    ).encode()
    url = "https://hooks.example.com/webhooks/hubspot"
    stamp = str(int(clock.now().timestamp() * 1000))
    good = {
        "X-HubSpot-Signature-v3": hubspot_signature(HS_CLIENT_SECRET, "POST", url, body, stamp),
        "X-HubSpot-Request-Timestamp": stamp,
    }
    assert (
        handler.handle(WebhookRequest(method="POST", url=url, headers=good, body=body)).status
        == 200
    )
    bad = {**good, "X-HubSpot-Signature-v3": hubspot_signature("guess", "POST", url, body, stamp)}
    refused = handler.handle(WebhookRequest(method="POST", url=url, headers=bad, body=body))
    assert refused.status == 401
    handler.process_pending()

    # Refused credentials: errors that must name the endpoint, not the secret.
    hs.revoke_refresh_tokens()
    clock.advance(3600)
    for call in (lambda: deals.read_records(["1001"]), lambda: reconciler.run_cycle()):
        try:
            call()
        except SyncReconError as exc:
            errors.append(exc)
    assert errors

    secrets = {HS_CLIENT_SECRET, HS_REFRESH}
    for token in issued:
        secrets.add(token.access_token.reveal())
        if token.refresh_token is not None:
            secrets.add(token.refresh_token.reveal())
    assert len(issued) >= 2
    assert sf_auth.token is not None
    secrets.add(sf_auth.token.access_token.reveal())
    secrets.update(line for line in private.splitlines() if len(line) > 40)  # the key itself
    for wire in hs_wire.bodies + sf_wire.bodies:  # the JWT assertions that were sent
        text = wire.decode("utf-8", "replace")
        if "assertion=" in text:
            secrets.add(text.split("assertion=")[1].split("&")[0])
    assert len(secrets) >= 8

    queue = OperatorQueue(storage)
    dashboard = build_dashboard(storage, now=clock.now())
    places: dict[str, str] = {
        "log lines": caplog.text,
        "errors": " ".join(f"{e} {e!r} {e.__cause__!r}" for e in errors),
        "reprs": " ".join(
            repr(x)
            for x in (
                deals,
                opps,
                deals.api,
                opps.api,
                hs_auth,
                sf_auth,
                hs_auth.token,
                sf_auth.token,
                *issued,
                handler,
                reconciler,
            )
        ),
        "reports": repr(report),
        "the queue": json.dumps([item_data(i) for i in queue.list()], default=str),
        "the dashboard": dashboard.to_html() + repr(dashboard),
    }
    storage.close()
    database = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    places["the database"] = database.decode("utf-8", "replace")
    leaks = [
        f"{secret[:6]}... in {where}"
        for secret in secrets
        for where, text in places.items()
        if secret in text
    ]
    assert leaks == []
    assert len(places["the queue"]) > 100  # the search had material: items with errors
    assert "BAD_REFRESH_TOKEN" in places["errors"]
    assert "/oauth/v1/token" in places["errors"]
