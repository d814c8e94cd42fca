"""Verify that webhook requests come from their provider.

Each verifier implements the :class:`Verifier` protocol for one provider's documented
signature scheme and depends on no provider SDK:

=============================  ===================================  ==================
verifier                       scheme                               replay protection
=============================  ===================================  ==================
:class:`StandardWebhooksVerifier`  Standard Webhooks ``v1`` / ``v1a``  signed timestamp
:class:`StripeVerifier`        ``Stripe-Signature``                 signed timestamp
:class:`HubSpotV3Verifier`     ``X-HubSpot-Signature-v3``           signed timestamp
:class:`HubSpotV2Verifier`     ``X-HubSpot-Signature`` (v2)         none
:class:`HubSpotV1Verifier`     ``X-HubSpot-Signature`` (v1)         none
:class:`ZendeskVerifier`       ``X-Zendesk-Webhook-Signature``      signed timestamp
:class:`GitHubStyleVerifier`   ``X-Hub-Signature-256``              none
=============================  ===================================  ==================

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
    "GitHubStyleVerifier",
    "HubSpotV1Verifier",
    "HubSpotV2Verifier",
    "HubSpotV3Verifier",
    "StandardWebhooksVerifier",
    "StripeVerifier",
    "VerifiedDelivery",
    "Verifier",
    "ZendeskVerifier",
]
