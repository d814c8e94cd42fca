"""Tests for syncrecon.webhooks: published vectors, tampering, rotation, clocks, fuzzing.

Signatures are computed here from each provider's documented formula (independently of the
code under test), and cross-checked against the providers' own packages where installed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
import types
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncrecon.webhooks as webhooks
from syncrecon._exceptions import ConfigurationError, SignatureError, TimestampError
from syncrecon.webhooks import (
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

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "webhook-vectors.json").read_text(encoding="utf-8")
)
SW = VECTORS["standard_webhooks_v1"][0]
GITHUB = VECTORS["github_sha256"][0]
HUBSPOT_V1 = VECTORS["hubspot_v1"][0]
HUBSPOT_V2 = VECTORS["hubspot_v2"][0]

T0 = 1_700_000_000
NOW = datetime.fromtimestamp(T0, UTC)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()
PLAIN_SECRET = "shh-its-a-secret"
OTHER_PLAIN = "a-different-secret"
BODY = b'{"type":"contact.updated","data":{"id":"1f81eb52"}}'
URL = "https://hooks.example.com/webhooks/in"


class FixedClock:
    """A clock that always tells the same time."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def at(seconds: float) -> FixedClock:
    return FixedClock(datetime.fromtimestamp(seconds, UTC))


# ------------------------------------------------------------------------------------------
# Independent signers, from each provider's documented formula


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def sw_signature(secret: str, msg_id: str, stamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return "v1," + base64.b64encode(_hmac(key, f"{msg_id}.{stamp}.".encode() + body)).decode()


def sw_headers(
    secret: str = SECRET, msg_id: str = "msg_1", stamp: int | str = T0, body: bytes = BODY
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sw_signature(secret, msg_id, str(stamp), body),
    }


def stripe_headers(
    secret: str = SECRET, stamp: int | str = T0, body: bytes = BODY
) -> dict[str, str]:
    sig = _hmac(secret.encode(), f"{stamp}.".encode() + body).hex()
    return {"Stripe-Signature": f"t={stamp},v1={sig}"}


def hubspot_v3_headers(
    secret: str = PLAIN_SECRET,
    method: str = "POST",
    uri: str = URL,
    body: bytes = BODY,
    stamp: int | str = T0 * 1000,
) -> dict[str, str]:
    message = f"{method}{uri}".encode() + body + str(stamp).encode()
    return {
        "X-HubSpot-Signature-v3": base64.b64encode(_hmac(secret.encode(), message)).decode(),
        "X-HubSpot-Request-Timestamp": str(stamp),
    }


def hubspot_v2_headers(
    secret: str = PLAIN_SECRET, method: str = "POST", uri: str = URL, body: bytes = BODY
) -> dict[str, str]:
    digest = hashlib.sha256(f"{secret}{method}{uri}".encode() + body).hexdigest()
    return {"X-HubSpot-Signature": digest, "X-HubSpot-Signature-Version": "v2"}


def hubspot_v1_headers(secret: str = PLAIN_SECRET, body: bytes = BODY) -> dict[str, str]:
    digest = hashlib.sha256(secret.encode() + body).hexdigest()
    return {"X-HubSpot-Signature": digest, "X-HubSpot-Signature-Version": "v1"}


ZENDESK_STAMP = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")


def zendesk_headers(
    secret: str = PLAIN_SECRET, stamp: str = ZENDESK_STAMP, body: bytes = BODY
) -> dict[str, str]:
    sig = base64.b64encode(_hmac(secret.encode(), stamp.encode() + body)).decode()
    return {
        "X-Zendesk-Webhook-Signature": sig,
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
    }


def github_headers(secret: str = PLAIN_SECRET, body: bytes = BODY) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, "sha256").hexdigest()
    }


def verify(verifier: Verifier, headers: Mapping[str, str], body: bytes = BODY) -> VerifiedDelivery:
    return verifier.verify(method="POST", url=URL, headers=headers, body=body)


# Each case: a verifier factory taking secrets, and a signer giving valid headers for BODY
# signed with one secret at T0.
CASES: dict[str, tuple[Callable[[list[str]], Verifier], Callable[[str], dict[str, str]], str]] = {
    "standard-webhooks": (
        lambda s: StandardWebhooksVerifier(secrets=s, clock=at(T0)),
        lambda secret: sw_headers(secret),
        "whsec",
    ),
    "stripe": (
        lambda s: StripeVerifier(secrets=s, clock=at(T0)),
        lambda secret: stripe_headers(secret),
        "whsec",
    ),
    "hubspot-v3": (
        lambda s: HubSpotV3Verifier(secrets=s, clock=at(T0)),
        lambda secret: hubspot_v3_headers(secret),
        "plain",
    ),
    "hubspot-v2": (
        lambda s: HubSpotV2Verifier(secrets=s),
        lambda secret: hubspot_v2_headers(secret),
        "plain",
    ),
    "hubspot-v1": (
        lambda s: HubSpotV1Verifier(secrets=s),
        lambda secret: hubspot_v1_headers(secret),
        "plain",
    ),
    "zendesk": (
        lambda s: ZendeskVerifier(secrets=s, clock=at(T0)),
        lambda secret: zendesk_headers(secret),
        "plain",
    ),
    "github": (
        lambda s: GitHubStyleVerifier(secrets=s),
        lambda secret: github_headers(secret),
        "plain",
    ),
}


def secrets_for(kind: str) -> tuple[str, str]:
    return (SECRET, OTHER_SECRET) if kind == "whsec" else (PLAIN_SECRET, OTHER_PLAIN)


# ------------------------------------------------------------------------------------------
# The public surface


def test_all_is_sorted_and_complete() -> None:
    assert webhooks.__all__ == sorted(webhooks.__all__)
    for name in webhooks.__all__:
        assert hasattr(webhooks, name)
    public = {
        name
        for name, value in vars(webhooks).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - {"annotations"} == set(webhooks.__all__)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_verifier_meets_the_protocol(name: str) -> None:
    make, _, kind = CASES[name]
    assert isinstance(make([secrets_for(kind)[0]]), Verifier)


@pytest.mark.parametrize("name", sorted(CASES))
def test_repr_hides_secrets(name: str) -> None:
    make, _, kind = CASES[name]
    secret = secrets_for(kind)[0]
    text = repr(make([secret]))
    assert secret not in text
    assert secret.removeprefix("whsec_") not in text
    assert "<1 secret>" in text


def test_verified_delivery_is_frozen_and_keyword_only() -> None:
    delivery = VerifiedDelivery(scheme="x")
    with pytest.raises(AttributeError):
        delivery.scheme = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        VerifiedDelivery("x")  # type: ignore[call-arg]


# ------------------------------------------------------------------------------------------
# Published vectors


def test_standard_webhooks_published_vector() -> None:
    stamp = int(SW["webhook_timestamp"])
    verifier = StandardWebhooksVerifier(secrets=[SW["secret"]], clock=at(stamp))
    headers = {
        "webhook-id": SW["webhook_id"],
        "webhook-timestamp": SW["webhook_timestamp"],
        "webhook-signature": SW["signature"],
    }
    delivery = verify(verifier, headers, SW["body"].encode())
    assert delivery == VerifiedDelivery(
        scheme="standard-webhooks-v1",
        delivery_id=SW["webhook_id"],
        timestamp=datetime.fromtimestamp(stamp, UTC),
        replay_protected=True,
        secret_index=0,
    )
    # The independent signer agrees with the vector, so the other tests' signatures are sound.
    assert sw_signature(SW["secret"], SW["webhook_id"], SW["webhook_timestamp"], b"x") != ""
    assert (
        sw_signature(SW["secret"], SW["webhook_id"], SW["webhook_timestamp"], SW["body"].encode())
        == SW["signature"]
    )


@pytest.mark.parametrize("replacement", ["A", "E", "0", ""])
def test_standard_webhooks_vector_with_last_character_changed_fails(replacement: str) -> None:
    stamp = int(SW["webhook_timestamp"])
    verifier = StandardWebhooksVerifier(secrets=[SW["secret"]], clock=at(stamp))
    headers = {
        "webhook-id": SW["webhook_id"],
        "webhook-timestamp": SW["webhook_timestamp"],
        "webhook-signature": SW["signature"][:-1] + replacement,
    }
    with pytest.raises(SignatureError):
        verify(verifier, headers, SW["body"].encode())


def test_standard_webhooks_vector_with_junk_entries_passes() -> None:
    stamp = int(SW["webhook_timestamp"])
    verifier = StandardWebhooksVerifier(secrets=[SW["secret"]], clock=at(stamp))
    junk = (
        "v2,abc v1,!!!notbase64 junk v1a,AAAA , v1, v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
    )
    headers = {
        "webhook-id": SW["webhook_id"],
        "webhook-timestamp": SW["webhook_timestamp"],
        "webhook-signature": f"{junk}  {SW['signature']} v3,xyz",
    }
    assert verify(verifier, headers, SW["body"].encode()).delivery_id == SW["webhook_id"]


@pytest.mark.parametrize("offset", [301, -301, 3600, -86400])
def test_standard_webhooks_vector_outside_five_minutes_fails(offset: int) -> None:
    stamp = int(SW["webhook_timestamp"])
    verifier = StandardWebhooksVerifier(secrets=[SW["secret"]], clock=at(stamp + offset))
    headers = {
        "webhook-id": SW["webhook_id"],
        "webhook-timestamp": SW["webhook_timestamp"],
        "webhook-signature": SW["signature"],
    }
    with pytest.raises(TimestampError):
        verify(verifier, headers, SW["body"].encode())


def test_github_published_vector() -> None:
    verifier = GitHubStyleVerifier(secrets=[GITHUB["secret"]])
    headers = {GITHUB["header"]: GITHUB["signature"]}
    delivery = verify(verifier, headers, GITHUB["body"].encode())
    assert delivery == VerifiedDelivery(scheme="github-sha256", replay_protected=False)
    with pytest.raises(SignatureError):
        verify(verifier, headers, GITHUB["body"].encode() + b" ")
    with pytest.raises(SignatureError):
        verify(verifier, {GITHUB["header"]: GITHUB["signature"][:-1] + "0"}, b"Hello, World!")


def test_hubspot_v1_published_vector() -> None:
    verifier = HubSpotV1Verifier(secrets=[HUBSPOT_V1["client_secret"]])
    headers = {
        "X-HubSpot-Signature": HUBSPOT_V1["signature"],
        "X-HubSpot-Signature-Version": "v1",
    }
    delivery = verify(verifier, headers, HUBSPOT_V1["body"].encode())
    assert delivery.scheme == "hubspot-v1"
    assert delivery.replay_protected is False
    assert delivery.timestamp is None
    with pytest.raises(SignatureError):
        verify(verifier, headers, HUBSPOT_V1["body"].encode().replace(b"123", b"124"))


def test_hubspot_v2_published_vector() -> None:
    verifier = HubSpotV2Verifier(secrets=[HUBSPOT_V2["client_secret"]])
    headers = {
        "X-HubSpot-Signature": HUBSPOT_V2["signature"],
        "X-HubSpot-Signature-Version": "v2",
    }
    delivery = verifier.verify(
        method=HUBSPOT_V2["method"],
        url=HUBSPOT_V2["uri"],
        headers=headers,
        body=HUBSPOT_V2["body"].encode(),
    )
    assert delivery.scheme == "hubspot-v2"
    assert delivery.replay_protected is False
    with pytest.raises(SignatureError):
        verifier.verify(
            method="POST", url=HUBSPOT_V2["uri"], headers=headers, body=HUBSPOT_V2["body"].encode()
        )
    with pytest.raises(SignatureError):
        verifier.verify(method="GET", url=HUBSPOT_V2["uri"] + "/", headers=headers, body=b"")


def test_hubspot_v2_documented_post_example() -> None:
    # developers.hubspot.com, "v2 request validation", example for a request with a body.
    verifier = HubSpotV2Verifier(secrets=["yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"])
    headers = {
        "X-HubSpot-Signature": "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900",
        "X-HubSpot-Signature-Version": "v2",
    }
    delivery = verifier.verify(
        method="POST",
        url="https://www.example.com/webhook_uri",
        headers=headers,
        body=b'{"example_field":"example_value"}',
    )
    assert delivery.scheme == "hubspot-v2"


# ------------------------------------------------------------------------------------------
# Every scheme: valid, tampered, rotated, case-insensitive


@pytest.mark.parametrize("name", sorted(CASES))
def test_valid_signature_passes(name: str) -> None:
    make, sign, kind = CASES[name]
    secret = secrets_for(kind)[0]
    delivery = verify(make([secret]), sign(secret))
    assert delivery.secret_index == 0
    assert delivery.scheme


@pytest.mark.parametrize("name", sorted(CASES))
def test_tampered_body_fails(name: str) -> None:
    make, sign, kind = CASES[name]
    secret = secrets_for(kind)[0]
    with pytest.raises(SignatureError):
        verify(make([secret]), sign(secret), BODY.replace(b"1f81", b"1f82"))
    with pytest.raises(SignatureError):
        verify(make([secret]), sign(secret), BODY + b"\n")


@pytest.mark.parametrize("name", sorted(CASES))
def test_tampered_signature_fails(name: str) -> None:
    make, sign, kind = CASES[name]
    secret = secrets_for(kind)[0]
    headers = sign(secret)
    for header, value in headers.items():
        if "version" in header.lower() or "timestamp" in header.lower() or header == "webhook-id":
            continue
        flipped = value[:-3] + ("A" if value[-3] != "A" else "B") + value[-2:]
        if value[-3] in "0123456789abcdef":
            flipped = value[:-3] + ("0" if value[-3] != "0" else "1") + value[-2:]
        with pytest.raises(SignatureError):
            verify(make([secret]), {**headers, header: flipped})


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrong_secret_fails(name: str) -> None:
    make, sign, kind = CASES[name]
    right, wrong = secrets_for(kind)
    with pytest.raises(SignatureError):
        verify(make([wrong]), sign(right))


@pytest.mark.parametrize("name", sorted(CASES))
def test_rotation_second_secret_matches(name: str) -> None:
    make, sign, kind = CASES[name]
    old, new = secrets_for(kind)
    verifier = make([old, new])
    assert verify(verifier, sign(new)).secret_index == 1
    assert verify(verifier, sign(old)).secret_index == 0


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("style", ["upper", "lower", "title", "httpx"])
def test_header_names_match_case_insensitively(name: str, style: str) -> None:
    make, sign, kind = CASES[name]
    secret = secrets_for(kind)[0]
    headers = sign(secret)
    changed: Mapping[str, str]
    if style == "httpx":
        changed = httpx.Headers(headers)
    else:
        changed = {getattr(key, style)(): value for key, value in headers.items()}
    assert verify(make([secret]), changed).secret_index == 0


def test_standard_webhooks_several_signature_entries_for_rotation() -> None:
    headers = sw_headers(OTHER_SECRET)
    headers["webhook-signature"] += " " + sw_headers(SECRET)["webhook-signature"]
    verifier = StandardWebhooksVerifier(secrets=[SECRET], clock=at(T0))
    assert verify(verifier, headers).secret_index == 0


def test_standard_webhooks_secret_without_prefix_or_padding() -> None:
    raw = b"sixteen-byte-key"
    unpadded = base64.b64encode(raw).decode().rstrip("=")
    headers = sw_headers("whsec_" + base64.b64encode(raw).decode())
    for secret in (unpadded, "whsec_" + unpadded):
        verifier = StandardWebhooksVerifier(secrets=[secret], clock=at(T0))
        assert verify(verifier, headers).delivery_id == "msg_1"


def test_stripe_several_v1_and_other_schemes() -> None:
    good = stripe_headers()["Stripe-Signature"]
    stamp, v1 = good.split(",")
    header = f"{stamp},v0={'0' * 64},v1={'f' * 64},{v1}"
    delivery = verify(StripeVerifier(secrets=[SECRET], clock=at(T0)), {"stripe-signature": header})
    assert delivery.scheme == "stripe-v1"
    assert delivery.timestamp == NOW
    assert delivery.replay_protected is True
    assert delivery.delivery_id is None


def test_stripe_key_is_the_whole_secret_not_base64_decoded() -> None:
    # A Standard-Webhooks-style signature (decoded key) must not pass Stripe verification.
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    sig = _hmac(key, f"{T0}.".encode() + BODY).hex()
    with pytest.raises(SignatureError):
        verify(
            StripeVerifier(secrets=[SECRET], clock=at(T0)),
            {"Stripe-Signature": f"t={T0},v1={sig}"},
        )


def test_hubspot_v3_decodes_the_documented_escapes() -> None:
    encoded = URL + "?a=b%3Ac%2Fd%3Fe%40f%21g%24h%27i%28j%29k%2Al%2Cm%3Bn&s=a%20b%26c"
    decoded = URL + "?a=b:c/d?e@f!g$h'i(j)k*l,m;n&s=a%20b%26c"
    verifier = HubSpotV3Verifier(secrets=[PLAIN_SECRET], clock=at(T0))
    headers = hubspot_v3_headers(uri=decoded)
    delivery = verifier.verify(method="POST", url=encoded, headers=headers, body=BODY)
    assert delivery.scheme == "hubspot-v3"
    assert delivery.timestamp == NOW
    # Lower-case escapes are the same escapes.
    lower = encoded.replace("%3A", "%3a").replace("%2F", "%2f")
    assert verifier.verify(method="POST", url=lower, headers=headers, body=BODY)
    # %20 and %26 are not in the list: decoding them would break the signature.
    with pytest.raises(SignatureError):
        verifier.verify(
            method="POST",
            url=encoded,
            headers=hubspot_v3_headers(uri=decoded.replace("%20", " ")),
            body=BODY,
        )


def test_hubspot_v3_signs_method_and_url() -> None:
    verifier = HubSpotV3Verifier(secrets=[PLAIN_SECRET], clock=at(T0))
    headers = hubspot_v3_headers()
    assert verifier.verify(method="post", url=URL, headers=headers, body=BODY)
    with pytest.raises(SignatureError):
        verifier.verify(method="PUT", url=URL, headers=headers, body=BODY)
    with pytest.raises(SignatureError):
        verifier.verify(method="POST", url=URL + "x", headers=headers, body=BODY)


def test_hubspot_v2_and_v1_check_the_version_header() -> None:
    v2 = hubspot_v2_headers()
    v1 = hubspot_v1_headers()
    with pytest.raises(SignatureError):
        verify(
            HubSpotV2Verifier(secrets=[PLAIN_SECRET]), {**v2, "X-HubSpot-Signature-Version": "v1"}
        )
    with pytest.raises(SignatureError):
        verify(
            HubSpotV1Verifier(secrets=[PLAIN_SECRET]), {**v1, "X-HubSpot-Signature-Version": "v2"}
        )
    del v1["X-HubSpot-Signature-Version"]
    with pytest.raises(SignatureError):
        verify(HubSpotV1Verifier(secrets=[PLAIN_SECRET]), v1)


def test_zendesk_timestamp_that_is_not_iso_still_verifies_without_replay_protection() -> None:
    stamp = "Sat, 25 Mar 2021 05:09:27 GMT"
    verifier = ZendeskVerifier(secrets=[PLAIN_SECRET], clock=at(T0))
    delivery = verify(verifier, zendesk_headers(stamp=stamp))
    assert delivery == VerifiedDelivery(scheme="zendesk", replay_protected=False)


def test_zendesk_iso_timestamp_is_replay_protected() -> None:
    verifier = ZendeskVerifier(secrets=[PLAIN_SECRET], clock=at(T0))
    delivery = verify(verifier, zendesk_headers())
    assert delivery == VerifiedDelivery(scheme="zendesk", timestamp=NOW, replay_protected=True)
    with_offset = (NOW + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00"
    assert verify(verifier, zendesk_headers(stamp=with_offset)).timestamp == NOW


def test_github_style_header_name_is_configurable() -> None:
    verifier = GitHubStyleVerifier(secrets=[PLAIN_SECRET], header="X-Signature")
    value = github_headers()["X-Hub-Signature-256"]
    assert verify(verifier, {"x-signature": value}).scheme == "github-sha256"
    with pytest.raises(SignatureError):
        verify(verifier, {"X-Hub-Signature-256": value})


def test_hex_signatures_accept_upper_case_digits() -> None:
    value = github_headers()["X-Hub-Signature-256"]
    upper = "sha256=" + value.removeprefix("sha256=").upper()
    assert verify(GitHubStyleVerifier(secrets=[PLAIN_SECRET]), {"X-Hub-Signature-256": upper})


# ------------------------------------------------------------------------------------------
# Timestamps: stale and future both fail, the boundary passes

TIMED: dict[str, tuple[Callable[[FixedClock], Verifier], Callable[[int], dict[str, str]]]] = {
    "standard-webhooks": (
        lambda clock: StandardWebhooksVerifier(secrets=[SECRET], clock=clock),
        lambda stamp: sw_headers(stamp=stamp),
    ),
    "stripe": (
        lambda clock: StripeVerifier(secrets=[SECRET], clock=clock),
        lambda stamp: stripe_headers(stamp=stamp),
    ),
    "hubspot-v3": (
        lambda clock: HubSpotV3Verifier(secrets=[PLAIN_SECRET], clock=clock),
        lambda stamp: hubspot_v3_headers(stamp=stamp * 1000),
    ),
    "zendesk": (
        lambda clock: ZendeskVerifier(secrets=[PLAIN_SECRET], clock=clock),
        lambda stamp: zendesk_headers(
            stamp=datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(TIMED))
@pytest.mark.parametrize("offset", [-301, 301, -10_000_000, 10_000_000])
def test_stale_and_future_timestamps_fail(name: str, offset: int) -> None:
    make, sign = TIMED[name]
    with pytest.raises(TimestampError):
        verify(make(at(T0)), sign(T0 + offset))


@pytest.mark.parametrize("name", sorted(TIMED))
@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamps_within_tolerance_pass(name: str, offset: int) -> None:
    make, sign = TIMED[name]
    delivery = verify(make(at(T0)), sign(T0 + offset))
    assert delivery.replay_protected is True
    assert delivery.timestamp == datetime.fromtimestamp(T0 + offset, UTC)


@pytest.mark.parametrize("name", sorted(TIMED))
def test_tolerance_is_configurable(name: str) -> None:
    make, sign = TIMED[name]
    verifier = attrs_evolve(make(at(T0)), tolerance=timedelta(seconds=10))
    verify(verifier, sign(T0 + 10))
    with pytest.raises(TimestampError):
        verify(verifier, sign(T0 - 11))


def attrs_evolve(verifier: Verifier, **changes: Any) -> Verifier:
    import attrs

    evolved: Verifier = attrs.evolve(verifier, **changes)  # type: ignore[misc]
    return evolved


def test_stale_timestamp_with_bad_signature_is_a_signature_error() -> None:
    headers = sw_headers(stamp=T0 - 10_000)
    headers["webhook-signature"] = "v1," + base64.b64encode(b"\0" * 32).decode()
    with pytest.raises(SignatureError):
        verify(StandardWebhooksVerifier(secrets=[SECRET], clock=at(T0)), headers)


def test_naive_clock_is_taken_as_utc() -> None:
    verifier = StandardWebhooksVerifier(
        secrets=[SECRET], clock=FixedClock(NOW.replace(tzinfo=None))
    )
    assert verify(verifier, sw_headers()).timestamp == NOW


def test_system_clock_is_the_default() -> None:
    stamp = int(time.time())
    assert verify(StandardWebhooksVerifier(secrets=[SECRET]), sw_headers(stamp=stamp))


# ------------------------------------------------------------------------------------------
# Malformed headers are SignatureErrors

GOOD_SIG = sw_headers()["webhook-signature"]
#: T0 in Arabic-Indic digits: str.isdigit() and int() accept them, a strict parser must not.
ARABIC_T0 = "".join(chr(0x0660 + int(digit)) for digit in str(T0))
MALFORMED_SW: list[dict[str, Any]] = [
    {},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0)},
    {"webhook-id": "msg_1", "webhook-signature": GOOD_SIG},
    {"webhook-timestamp": str(T0), "webhook-signature": GOOD_SIG},
    {"webhook-id": "", "webhook-timestamp": str(T0), "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": "", "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": ""},
    {"webhook-id": "msg_1", "webhook-timestamp": "abc", "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": f"{T0}.0", "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": f" {T0}", "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": f"+{T0}", "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": "-5", "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": "1e9", "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": ARABIC_T0, "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": "9" * 5000, "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_é", "webhook-timestamp": str(T0), "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_\ud800", "webhook-timestamp": str(T0), "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": "v1"},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": "v1,"},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": "v1,!!!"},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": "v1,é\ud800"},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": " "},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": "v2,abc"},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": "v1a,abc"},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": GOOD_SIG[3:]},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": GOOD_SIG + "="},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": GOOD_SIG[:-1]},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": "V1" + GOOD_SIG[2:]},
    {"webhook-id": b"msg_1", "webhook-timestamp": str(T0), "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": T0, "webhook-signature": GOOD_SIG},
    {"webhook-id": "msg_1", "webhook-timestamp": str(T0), "webhook-signature": [GOOD_SIG]},
]


@pytest.mark.parametrize("headers", MALFORMED_SW)
def test_standard_webhooks_malformed_headers(headers: dict[str, Any]) -> None:
    verifier = StandardWebhooksVerifier(secrets=[SECRET], clock=at(T0))
    with pytest.raises(SignatureError):
        verify(verifier, headers)


GOOD_STRIPE = stripe_headers()["Stripe-Signature"]
GOOD_V1 = GOOD_STRIPE.split(",")[1]
MALFORMED_STRIPE = [
    "",
    "garbage",
    "t=",
    f"t={T0}",
    GOOD_V1,
    f"t=abc,{GOOD_V1}",
    f"t={T0}.5,{GOOD_V1}",
    f"t=-{T0},{GOOD_V1}",
    f"t={ARABIC_T0},{GOOD_V1}",
    f"t={T0},t={T0},{GOOD_V1}",
    f"t={T0},{GOOD_V1},junk",
    f"t={T0},v1=",
    f"t={T0},v1={'z' * 64}",
    f"t={T0},{GOOD_V1[:-1]}",
    f"t={T0},{GOOD_V1}0",
    f"t={T0},v1=é{GOOD_V1[4:]}",
    f"t={T0},v1=\ud800",
    f"t={T0},V1={GOOD_V1[3:]}",
    f"t={T0};{GOOD_V1}",
    f"t={'9' * 5000},{GOOD_V1}",
    f"t={T0},v0={GOOD_V1[3:]}",
]


@pytest.mark.parametrize("header", MALFORMED_STRIPE)
def test_stripe_malformed_headers(header: str) -> None:
    verifier = StripeVerifier(secrets=[SECRET], clock=at(T0))
    with pytest.raises(SignatureError):
        verify(verifier, {"Stripe-Signature": header})
    with pytest.raises(SignatureError):
        verify(verifier, {})


GOOD_V3 = hubspot_v3_headers()
MALFORMED_V3: list[dict[str, str]] = [
    {},
    {"X-HubSpot-Signature-v3": GOOD_V3["X-HubSpot-Signature-v3"]},
    {"X-HubSpot-Request-Timestamp": str(T0 * 1000)},
    {**GOOD_V3, "X-HubSpot-Request-Timestamp": ""},
    {**GOOD_V3, "X-HubSpot-Request-Timestamp": f"{T0}.000"},
    {**GOOD_V3, "X-HubSpot-Request-Timestamp": "now"},
    {**GOOD_V3, "X-HubSpot-Request-Timestamp": ARABIC_T0[:4]},
    {**GOOD_V3, "X-HubSpot-Signature-v3": ""},
    {**GOOD_V3, "X-HubSpot-Signature-v3": "not base64 at all"},
    {**GOOD_V3, "X-HubSpot-Signature-v3": "é" * 44},
    {**GOOD_V3, "X-HubSpot-Signature-v3": GOOD_V3["X-HubSpot-Signature-v3"].rstrip("=")},
    {**GOOD_V3, "X-HubSpot-Signature-v3": base64.b64encode(b"\0" * 32).decode()},
]


@pytest.mark.parametrize("headers", MALFORMED_V3)
def test_hubspot_v3_malformed_headers(headers: dict[str, str]) -> None:
    verifier = HubSpotV3Verifier(secrets=[PLAIN_SECRET], clock=at(T0))
    with pytest.raises(SignatureError):
        verify(verifier, headers)


def test_hubspot_v3_url_or_method_that_is_not_encodable_is_a_signature_error() -> None:
    verifier = HubSpotV3Verifier(secrets=[PLAIN_SECRET], clock=at(T0))
    with pytest.raises(SignatureError):
        verifier.verify(method="POST", url="https://x/\udcff", headers=GOOD_V3, body=BODY)
    with pytest.raises(SignatureError):
        verifier.verify(method="P\ud800", url=URL, headers=GOOD_V3, body=BODY)


@pytest.mark.parametrize(
    "signature",
    ["", "0" * 63, "0" * 65, "g" * 64, "é" * 64, " " + "0" * 63, "sha256=" + "0" * 57, "\ud800"],
)
@pytest.mark.parametrize("name", ["hubspot-v1", "hubspot-v2"])
def test_hubspot_v1_v2_malformed_signatures(name: str, signature: str) -> None:
    make, sign, _ = CASES[name]
    headers = {**sign(PLAIN_SECRET), "X-HubSpot-Signature": signature}
    with pytest.raises(SignatureError):
        verify(make([PLAIN_SECRET]), headers)


GOOD_ZENDESK = zendesk_headers()
MALFORMED_ZENDESK: list[dict[str, str]] = [
    {},
    {"X-Zendesk-Webhook-Signature": GOOD_ZENDESK["X-Zendesk-Webhook-Signature"]},
    {"X-Zendesk-Webhook-Signature-Timestamp": ZENDESK_STAMP},
    {**GOOD_ZENDESK, "X-Zendesk-Webhook-Signature": ""},
    {**GOOD_ZENDESK, "X-Zendesk-Webhook-Signature": "%%%"},
    {**GOOD_ZENDESK, "X-Zendesk-Webhook-Signature": "é\ud800"},
    {**GOOD_ZENDESK, "X-Zendesk-Webhook-Signature-Timestamp": ""},
    {**GOOD_ZENDESK, "X-Zendesk-Webhook-Signature-Timestamp": ZENDESK_STAMP + "é"},
    {**GOOD_ZENDESK, "X-Zendesk-Webhook-Signature-Timestamp": "\ud800"},
    {**GOOD_ZENDESK, "X-Zendesk-Webhook-Signature-Timestamp": "2021-03-25T05:09:28Z"},
]


@pytest.mark.parametrize("headers", MALFORMED_ZENDESK)
def test_zendesk_malformed_headers(headers: dict[str, str]) -> None:
    verifier = ZendeskVerifier(secrets=[PLAIN_SECRET], clock=at(T0))
    with pytest.raises(SignatureError):
        verify(verifier, headers)


GOOD_GITHUB = github_headers()["X-Hub-Signature-256"]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256",
        "sha256=",
        GOOD_GITHUB.removeprefix("sha256="),
        "SHA256=" + GOOD_GITHUB[7:],
        "sha1=" + GOOD_GITHUB[7:],
        "sha256:" + GOOD_GITHUB[7:],
        "sha256= " + GOOD_GITHUB[7:],
        "sha256=" + GOOD_GITHUB[7:] + " ",
        "sha256=" + GOOD_GITHUB[7:-1] + "g",
        "sha256=" + GOOD_GITHUB[7:-1] + "é",
        "sha256=\ud800",
        GOOD_GITHUB + "," + GOOD_GITHUB,
    ],
)
def test_github_malformed_headers(value: str) -> None:
    verifier = GitHubStyleVerifier(secrets=[PLAIN_SECRET])
    with pytest.raises(SignatureError):
        verify(verifier, {"X-Hub-Signature-256": value})


# ------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize("name", sorted(CASES))
def test_empty_secrets_is_a_value_error(name: str) -> None:
    make, _, _ = CASES[name]
    with pytest.raises(ValueError):
        make([])


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("bad", ["whsec_abc", b"abc", [""], [None], [b"abc"], 5])
def test_bad_secrets_are_configuration_errors(name: str, bad: Any) -> None:
    make, _, _ = CASES[name]
    with pytest.raises(ConfigurationError):
        make(bad)


@pytest.mark.parametrize(
    "secret", ["whsec_!!!!", "whsec_", "whsec_abcde", "whsec_é", "whsk_" + "A" * 43 + "="]
)
def test_standard_webhooks_bad_secret_formats(secret: str) -> None:
    with pytest.raises(ConfigurationError):
        StandardWebhooksVerifier(secrets=[secret])


@pytest.mark.parametrize("tolerance", [timedelta(seconds=-1), 300])
def test_bad_tolerance(tolerance: Any) -> None:
    with pytest.raises(ConfigurationError):
        StripeVerifier(secrets=[SECRET], tolerance=tolerance)


def test_bad_clock() -> None:
    with pytest.raises(ConfigurationError):
        StripeVerifier(secrets=[SECRET], clock=object())  # type: ignore[arg-type]


def test_secrets_accept_any_sequence() -> None:
    verifier = StripeVerifier(secrets=(SECRET,), clock=at(T0))
    assert verifier.secrets == (SECRET,)
    assert verify(verifier, stripe_headers())


# ------------------------------------------------------------------------------------------
# ed25519 (v1a)


def _ed25519_pair() -> tuple[Any, str]:
    ed25519 = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return private, "whpk_" + base64.b64encode(raw).decode()


def test_ed25519_v1a_signature() -> None:
    private, public = _ed25519_pair()
    content = f"msg_1.{T0}.".encode() + BODY
    signature = "v1a," + base64.b64encode(private.sign(content)).decode()
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(T0)}
    verifier = StandardWebhooksVerifier(secrets=[SECRET, public], clock=at(T0))

    delivery = verify(verifier, {**headers, "webhook-signature": f"v1,AAAA {signature}"})
    assert delivery.scheme == "standard-webhooks-v1a"
    assert delivery.secret_index == 1
    assert delivery.replay_protected is True

    with pytest.raises(SignatureError):
        verify(verifier, {**headers, "webhook-signature": signature}, BODY + b" ")
    with pytest.raises(SignatureError):
        verify(verifier, {**headers, "webhook-signature": signature[:-2] + "A="})
    # An HMAC entry still works beside the public key.
    assert verify(verifier, sw_headers()).scheme == "standard-webhooks-v1"
    # A public key alone does not accept v1 (HMAC) entries.
    with pytest.raises(SignatureError):
        verify(StandardWebhooksVerifier(secrets=[public], clock=at(T0)), sw_headers())
    with pytest.raises(TimestampError):
        verify(
            StandardWebhooksVerifier(secrets=[public], clock=at(T0 + 301)),
            {**headers, "webhook-signature": signature},
        )


def test_ed25519_key_of_wrong_length() -> None:
    pytest.importorskip("cryptography")
    with pytest.raises(ConfigurationError):
        StandardWebhooksVerifier(secrets=["whpk_" + base64.b64encode(b"short").decode()])
    with pytest.raises(ConfigurationError):
        StandardWebhooksVerifier(secrets=["whpk_"])


def test_ed25519_without_cryptography_is_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in list(sys.modules):
        if module == "cryptography" or module.startswith("cryptography."):
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    public = "whpk_" + base64.b64encode(bytes(32)).decode()
    with pytest.raises(ConfigurationError, match=r"cryptography.*syncrecon\[ed25519\]"):
        StandardWebhooksVerifier(secrets=[public])
    # HMAC-only verifiers never need it.
    assert verify(StandardWebhooksVerifier(secrets=[SECRET], clock=at(T0)), sw_headers())


# ------------------------------------------------------------------------------------------
# Fuzzing: only SignatureError or TimestampError, ever

ALL_HEADER_NAMES = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "Stripe-Signature",
    "X-HubSpot-Signature-v3",
    "X-HubSpot-Request-Timestamp",
    "X-HubSpot-Signature",
    "X-HubSpot-Signature-Version",
    "X-Zendesk-Webhook-Signature",
    "X-Zendesk-Webhook-Signature-Timestamp",
    "X-Hub-Signature-256",
]
any_text = st.text(st.characters(exclude_categories=()), max_size=80)
pieces = st.sampled_from(
    [
        "v1",
        "v1a",
        "v2",
        ",",
        " ",
        "=",
        "t",
        "t=",
        "v1=",
        "sha256=",
        str(T0),
        str(T0 * 1000),
        ZENDESK_STAMP,
        "-",
        ".",
        "0" * 64,
        "A" * 43 + "=",
        "A" * 86 + "==",
        "é",
        "\ud800",
        "٣",
        "9" * 30,
        "v1,",
        "whsec_",
    ]
)
structured_text = st.lists(st.one_of(pieces, any_text), max_size=8).map("".join)
header_value = st.one_of(structured_text, any_text)
header_name = st.one_of(
    st.sampled_from(ALL_HEADER_NAMES),
    st.sampled_from(ALL_HEADER_NAMES).map(str.upper),
    any_text,
)
fuzz_headers = st.dictionaries(header_name, header_value, max_size=8)
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _with_valid(name: str) -> dict[str, str]:
    _, sign, kind = CASES[name]
    return sign(secrets_for(kind)[0])


@pytest.mark.parametrize("name", sorted(CASES))
@FUZZ
@given(
    data=st.data(),
    body=st.one_of(st.just(BODY), st.binary(max_size=64)),
    method=st.one_of(st.just("POST"), any_text),
    url=st.one_of(st.just(URL), any_text),
)
def test_fuzzed_requests_raise_only_webhook_errors(
    name: str, data: st.DataObject, body: bytes, method: str, url: str
) -> None:
    make, _, kind = CASES[name]
    verifier = make(list(secrets_for(kind)))
    # Start from random headers, or from valid ones with some values replaced.
    if data.draw(st.booleans(), label="start from valid headers"):
        headers = _with_valid(name)
        for key in list(headers):
            if data.draw(st.booleans(), label=f"replace {key}"):
                headers[key] = data.draw(header_value, label=key)
        headers.update(data.draw(fuzz_headers, label="extra headers"))
    else:
        headers = data.draw(fuzz_headers, label="headers")
    try:
        delivery = verifier.verify(method=method, url=url, headers=headers, body=body)
    except (SignatureError, TimestampError):
        return
    assert isinstance(delivery, VerifiedDelivery)


# ------------------------------------------------------------------------------------------
# Cross-checks against the providers' packages


def test_standard_webhooks_package_signs_and_we_verify() -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    wh = standardwebhooks.Webhook(SW["secret"])
    now = datetime.now(UTC).replace(microsecond=0)
    body = '{"type":"x","data":{"é":1}}'
    signature = wh.sign("msg_cross", now, body)
    headers = {
        "webhook-id": "msg_cross",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    ours = StandardWebhooksVerifier(secrets=[SW["secret"]], clock=FixedClock(now))
    assert verify(ours, headers, body.encode()).delivery_id == "msg_cross"
    # ...and the package verifies the same request.
    assert wh.verify(body.encode(), headers, json_parse=False) is None


@FUZZ
@given(
    key=st.binary(min_size=24, max_size=64),
    msg_id=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30),
    body=st.text(max_size=200),
    tamper=st.sampled_from(["none", "body", "signature", "id", "secret"]),
)
def test_we_agree_with_the_standard_webhooks_package(
    key: bytes, msg_id: str, body: str, tamper: str
) -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    secret = "whsec_" + base64.b64encode(key).decode()
    stamp = int(time.time())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sw_signature(secret, msg_id, str(stamp), body.encode()),
    }
    raw = body.encode()
    verifier_secret = secret
    if tamper == "body":
        raw += b"!"
    elif tamper == "signature":
        headers["webhook-signature"] = "v1," + base64.b64encode(b"\1" * 32).decode()
    elif tamper == "id":
        headers["webhook-id"] = msg_id + "x"
    elif tamper == "secret":
        verifier_secret = "whsec_" + base64.b64encode(key[::-1] + b"!").decode()

    try:
        standardwebhooks.Webhook(verifier_secret).verify(raw, headers, json_parse=False)
        theirs = True
    except standardwebhooks.WebhookVerificationError:
        theirs = False
    ours_verifier = StandardWebhooksVerifier(secrets=[verifier_secret], clock=at(stamp))
    try:
        verify(ours_verifier, headers, raw)
        ours = True
    except SignatureError:
        ours = False
    assert ours == theirs == (tamper == "none")


def test_stripe_package_signs_and_we_verify() -> None:
    stripe = pytest.importorskip("stripe")
    stamp = int(time.time())
    body = '{"id":"evt_1","object":"event","type":"customer.updated"}'
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET, timestamp=stamp)
    ours = StripeVerifier(secrets=[SECRET], clock=at(stamp))
    assert verify(ours, {"Stripe-Signature": header}, body.encode()).timestamp == (
        datetime.fromtimestamp(stamp, UTC)
    )


@FUZZ
@given(
    secret=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    body=st.text(max_size=200),
    tamper=st.sampled_from(["none", "body", "signature", "timestamp", "secret"]),
)
def test_we_agree_with_stripe(secret: str, body: str, tamper: str) -> None:
    stripe = pytest.importorskip("stripe")
    stamp = int(time.time())
    header = stripe_headers(secret, stamp, body.encode())["Stripe-Signature"]
    raw = body.encode()
    verifier_secret = secret
    if tamper == "body":
        raw += b"!"
    elif tamper == "signature":
        header = header[:-1] + ("0" if header[-1] != "0" else "1")
    elif tamper == "timestamp":
        header = header.replace(f"t={stamp}", f"t={stamp - 1}")
    elif tamper == "secret":
        verifier_secret = secret + "x"

    try:
        stripe.WebhookSignature.verify_header(raw.decode(), header, verifier_secret, tolerance=300)
        theirs = True
    except stripe.SignatureVerificationError:
        theirs = False
    try:
        verify(
            StripeVerifier(secrets=[verifier_secret], clock=at(stamp)),
            {"Stripe-Signature": header},
            raw,
        )
        ours = True
    except SignatureError:
        ours = False
    assert ours == theirs == (tamper == "none")
