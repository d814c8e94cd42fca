"""Verify that webhook requests come from their provider.

Each verifier implements the :class:`Verifier` protocol for one provider's documented
signature scheme and depends on no provider SDK:

- :class:`StandardWebhooksVerifier`: Standard Webhooks ``v1`` (HMAC) and ``v1a`` (ed25519);
  replay-protected by a signed timestamp, and the signed ``webhook-id`` is the idempotency key.
- :class:`StripeVerifier`: ``Stripe-Signature``; replay-protected.
- :class:`HubSpotV3Verifier`: ``X-HubSpot-Signature-v3``; replay-protected.
- :class:`HubSpotV2Verifier`, :class:`HubSpotV1Verifier`: ``X-HubSpot-Signature``; **no**
  replay protection.
- :class:`ZendeskVerifier`: ``X-Zendesk-Webhook-Signature``; replay-protected when the signed
  timestamp is ISO 8601 (as Zendesk sends it).
- :class:`GitHubStyleVerifier`: ``X-Hub-Signature-256: sha256=<hex>``; **no** replay
  protection.

Every verifier takes several secrets at once, so a secret can be rotated without downtime,
and raises only :class:`~syncrecon.SignatureError` or :class:`~syncrecon.TimestampError`
for a bad request::

    from syncrecon.webhooks import StandardWebhooksVerifier

    verifier = StandardWebhooksVerifier(secrets=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    delivery = verifier.verify(method="POST", url=url, headers=headers, body=raw_body)
    if already_seen(delivery.delivery_id):
        ...
"""

from __future__ import annotations

from ._events import (
    ChangeEvent,
    EventKind,
    EventOutcome,
    PayloadParser,
    RequestHandler,
    WebhookRequest,
    WebhookResponse,
)
from ._handler import ProcessReport, WebhookHandler, WebhookSource, fingerprint
from ._parsers import (
    GenericJsonParser,
    HubSpotParser,
    ParserFactory,
    StripeParser,
    ZendeskParser,
    parser_for,
    register_parser,
)
from ._verify import (
    GitHubStyleVerifier,
    HubSpotV1Verifier,
    HubSpotV2Verifier,
    HubSpotV3Verifier,
    StandardWebhooksVerifier,
    StripeVerifier,
    VerifiedDelivery,
    Verifier,
    ZendeskVerifier,
)

__all__ = [
    "ChangeEvent",
    "EventKind",
    "EventOutcome",
    "GenericJsonParser",
    "GitHubStyleVerifier",
    "HubSpotParser",
    "HubSpotV1Verifier",
    "HubSpotV2Verifier",
    "HubSpotV3Verifier",
    "ParserFactory",
    "PayloadParser",
    "ProcessReport",
    "RequestHandler",
    "StandardWebhooksVerifier",
    "StripeParser",
    "StripeVerifier",
    "VerifiedDelivery",
    "Verifier",
    "WebhookHandler",
    "WebhookRequest",
    "WebhookResponse",
    "WebhookSource",
    "ZendeskParser",
    "ZendeskVerifier",
    "fingerprint",
    "parser_for",
    "register_parser",
]
