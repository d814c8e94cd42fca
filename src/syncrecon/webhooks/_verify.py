"""Webhook signature verifiers, written from each provider's documented scheme.

Every verifier is a frozen attrs class that takes the request's method, URL, headers and raw
body, and either returns a :class:`VerifiedDelivery` or raises:

* :class:`~syncrecon.SignatureError` when a header is missing or malformed, or no signature
  matches any of the active secrets;
* :class:`~syncrecon.TimestampError` when the signature matches but the signed timestamp is
  further from the clock than the tolerance (in either direction: stale or in the future).

A :class:`~syncrecon.TimestampError` therefore always concerns a genuine but late (replayed,
or clock-skewed) delivery. No other exception escapes ``verify`` for any header value.

Signatures are compared with :func:`hmac.compare_digest`. Header names are matched
case-insensitively. Keys are decoded once, at construction, so ``verify`` does as little work
as it can.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import attrs

from .._clock import Clock, SystemClock
from .._exceptions import ConfigurationError, SignatureError, TimestampError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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

_DEFAULT_TOLERANCE: Final = timedelta(minutes=5)
#: Longest accepted numeric timestamp. Longer values are malformed, not merely out of range;
#: the cap also keeps ``int()`` far from Python's digit limit.
_MAX_DIGITS: Final = 18
_HEX_SHA256: Final = re.compile(r"[0-9a-fA-F]{64}")
#: The escapes HubSpot decodes in the URI before it signs a v3 request.
_HUBSPOT_ESCAPES: Final = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)
_ED25519_MISSING: Final = (
    "a whpk_ (ed25519) key needs the 'cryptography' package: "
    "install it with `pip install syncrecon[ed25519]`"
)


# --------------------------------------------------------------------------------------------
# The value and the protocol


@attrs.frozen(kw_only=True)
class VerifiedDelivery:
    """What a verifier learnt about a webhook request whose signature it accepted.

    ``scheme`` names the signature scheme that matched: ``"standard-webhooks-v1"``,
    ``"standard-webhooks-v1a"``, ``"stripe-v1"``, ``"hubspot-v3"``, ``"hubspot-v2"``,
    ``"hubspot-v1"``, ``"zendesk"`` or ``"github-sha256"``.

    ``delivery_id`` is an identifier of the delivery that the signature covers (Standard
    Webhooks' ``webhook-id``, its idempotency key), or ``None`` when the scheme signs none.
    Unsigned ids such as ``X-GitHub-Delivery`` are deliberately not reported, since a replayed
    body could carry any id: deduplicate on the event id inside the body instead.

    ``timestamp`` is the signed send time as an aware UTC datetime, or ``None`` when the scheme
    signs no time (or Zendesk sent one that is not ISO 8601).

    ``replay_protected`` is ``True`` when that signed time was checked against the verifier's
    tolerance, so a captured request cannot be replayed later. When it is ``False``, the
    request could be a replay of any earlier one: deduplicate on an id in the body.

    ``secret_index`` is the position, in the verifier's ``secrets``, of the secret that
    matched; watch it during a rotation to learn when the old secret stops being used.
    """

    # No validators: only verifiers build these, and on the hot path checking five fields
    # would cost about as much as the HMAC itself.
    scheme: str
    delivery_id: str | None = None
    timestamp: datetime | None = None
    replay_protected: bool = False
    secret_index: int = 0


@runtime_checkable
class Verifier(Protocol):
    """Checks that a webhook request was signed by its provider.

    Implementations match header names case-insensitively, accept any
    :class:`~collections.abc.Mapping` of headers, and raise only
    :class:`~syncrecon.SignatureError` or :class:`~syncrecon.TimestampError` for anything
    wrong with the request, whatever its header values.
    """

    def verify(
        self, *, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedDelivery:
        """Verify one request and describe what its signature vouches for.

        ``method`` is the HTTP method and ``url`` the full URL the provider called, as the
        provider knows it (the public URL, not the one a proxy forwarded to); schemes that do not
        sign them ignore them. ``headers`` are matched case-insensitively. ``body`` is the raw
        request body exactly as received, never re-serialized JSON.

        Raises :class:`~syncrecon.SignatureError` when a header is missing or malformed or no
        signature matches an active secret, and :class:`~syncrecon.TimestampError` when the
        signature matches but its timestamp is outside the tolerance.
        """
        ...


# --------------------------------------------------------------------------------------------
# Helpers shared by the verifiers


def _secrets_tuple(value: Sequence[str]) -> tuple[str, ...]:
    """Freeze and check the ``secrets`` argument (a converter, so it runs first)."""
    if isinstance(value, str | bytes | bytearray):
        raise ConfigurationError("secrets must be a sequence of strings, not a single string")
    try:
        secrets = tuple(value)
    except TypeError:
        raise ConfigurationError("secrets must be a sequence of strings") from None
    if not secrets:
        raise ConfigurationError("secrets must name at least one secret")
    for secret in secrets:
        if not isinstance(secret, str) or not secret:
            raise ConfigurationError("every secret must be a non-empty string")
    return secrets


def _redact(secrets: tuple[str, ...]) -> str:
    """Show how many secrets a verifier holds, never the secrets themselves."""
    return f"<{len(secrets)} secret{'s' if len(secrets) != 1 else ''}>"


def _check_tolerance(_instance: object, _attribute: object, value: timedelta) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ConfigurationError("tolerance must be a non-negative timedelta")


def _check_clock(_instance: object, _attribute: object, value: Clock) -> None:
    if not isinstance(value, Clock):
        raise ConfigurationError("clock must have a now() method returning a datetime")


def _utf8_keys(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    try:
        return tuple(secret.encode("utf-8") for secret in secrets)
    except UnicodeEncodeError:
        raise ConfigurationError("a secret is not encodable as UTF-8") from None


def _hmac_bases(keys: Iterable[bytes]) -> tuple[hmac.HMAC, ...]:
    """Keyed HMAC-SHA256 states; copying one skips the key set-up on every request."""
    return tuple(hmac.new(key, digestmod="sha256") for key in keys)


def _mac(base: hmac.HMAC, *parts: bytes) -> bytes:
    """HMAC-SHA256 of the concatenated ``parts``, without concatenating them."""
    mac = base.copy()
    for part in parts:
        mac.update(part)
    return mac.digest()


def _headers(headers: Mapping[str, str], *names: str) -> list[str]:
    """Return the non-empty text values of the headers ``names`` (given in lower case).

    Tries the exact lower-case keys first (plain dicts from ASGI servers, and case-insensitive
    mappings such as httpx's and Starlette's, answer at once); only when one is missing does
    it lower-case every key, once.
    """
    values: list[str] = []
    lowered: dict[str, object] | None = None
    for name in names:
        value: object = headers.get(name)
        if value is None:
            if lowered is None:
                lowered = {k.lower(): v for k, v in headers.items() if isinstance(k, str)}
            value = lowered.get(name)
            if value is None:
                raise SignatureError(f"missing {name} header")
        if not isinstance(value, str) or not value:
            raise SignatureError(f"empty or non-text {name} header")
        values.append(value)
    return values


def _digits(value: str, name: str) -> int:
    """Parse an unsigned decimal timestamp strictly: ASCII digits only, nothing else."""
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_DIGITS:
        raise SignatureError(f"{name} header is not an unsigned integer")
    return int(value)


def _utf8(value: str, what: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise SignatureError(f"{what} is not encodable as UTF-8") from None


def _check_drift(seconds: float, clock: Clock, tolerance: float, name: str) -> None:
    """Raise TimestampError unless Unix time ``seconds`` is within ``tolerance`` of the clock."""
    now = clock.now()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    drift = seconds - now.timestamp()
    if drift < -tolerance:
        raise TimestampError(f"{name} is {-drift:.0f} s old, beyond the tolerance")
    if drift > tolerance:
        raise TimestampError(f"{name} is {drift:.0f} s in the future, beyond the tolerance")


def _in_window(seconds: float, clock: Clock, tolerance: float, name: str) -> datetime:
    """Check a signed Unix time against the clock and return it as a UTC datetime."""
    _check_drift(seconds, clock, tolerance, name)
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise TimestampError(f"{name} is outside the representable range") from None


def _b64(digest: bytes) -> str:
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


def _same_hex(expected: str, given: str) -> bool:
    """Constant-time comparison of a lower-case hex digest with a given hex string."""
    return _HEX_SHA256.fullmatch(given) is not None and hmac.compare_digest(expected, given.lower())


# --------------------------------------------------------------------------------------------
# Standard Webhooks


@attrs.frozen(kw_only=True)
class StandardWebhooksVerifier:
    """Verifies Standard Webhooks signatures (https://www.standardwebhooks.com).

    The provider signs ``{webhook-id}.{webhook-timestamp}.{body}`` and sends one or more
    space-separated ``version,base64-signature`` entries in ``webhook-signature``. Entries
    with a version other than ``v1`` (HMAC-SHA256) or ``v1a`` (ed25519), and entries that are
    not well formed, are skipped; the request passes when any entry matches any secret.
    ``webhook-timestamp`` (Unix seconds) must be within ``tolerance`` of the ``clock``, in
    either direction. ``webhook-id`` is signed, so it is reported as
    :attr:`VerifiedDelivery.delivery_id`: use it as the idempotency key.

    ``secrets`` are the active keys, several at once during a rotation:

    - ``whsec_`` followed by base64 is an HMAC secret; the base64 text is decoded to the key
      (the prefix and the padding are optional);
    - ``whpk_`` followed by base64 is an ed25519 public key for ``v1a`` signatures. It needs
      the optional ``cryptography`` package (``pip install syncrecon[ed25519]``), imported
      only when such a key is given.

    Construction raises :class:`~syncrecon.ConfigurationError` (a ``ValueError``) for no
    secrets, a key that is not base64, a ``whpk_`` key without ``cryptography``, or a
    ``whsk_`` key (a signing key: give the verifier the matching ``whpk_`` public key).
    """

    secrets: tuple[str, ...] = attrs.field(converter=_secrets_tuple, repr=_redact)
    clock: Clock = attrs.field(factory=SystemClock, validator=_check_clock)
    tolerance: timedelta = attrs.field(default=_DEFAULT_TOLERANCE, validator=_check_tolerance)
    _hmac_keys: tuple[tuple[int, hmac.HMAC], ...] = attrs.field(init=False, repr=False, eq=False)
    _public_keys: tuple[tuple[int, Ed25519PublicKey], ...] = attrs.field(
        init=False, repr=False, eq=False
    )
    _tolerance_s: float = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        hmac_keys: list[tuple[int, hmac.HMAC]] = []
        public_keys: list[tuple[int, Ed25519PublicKey]] = []
        for index, secret in enumerate(self.secrets):
            if secret.startswith("whpk_"):
                public_keys.append((index, _ed25519_public_key(secret[5:])))
            elif secret.startswith("whsk_"):
                raise ConfigurationError(
                    "a whsk_ key is an ed25519 signing key; give the verifier the matching "
                    "whpk_ public key instead"
                )
            else:
                key = _decode_base64_secret(secret.removeprefix("whsec_"))
                hmac_keys.append((index, hmac.new(key, digestmod="sha256")))
        object.__setattr__(self, "_hmac_keys", tuple(hmac_keys))
        object.__setattr__(self, "_public_keys", tuple(public_keys))
        object.__setattr__(self, "_tolerance_s", self.tolerance.total_seconds())

    def verify(
        self, *, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedDelivery:
        """Verify a Standard Webhooks request (see :meth:`Verifier.verify`).

        ``method`` and ``url`` are not signed by this scheme and are ignored. Raises
        :class:`~syncrecon.SignatureError` when ``webhook-id``, ``webhook-timestamp`` or
        ``webhook-signature`` is missing, empty or malformed (the id must be ASCII, the timestamp
        ASCII digits) or no ``v1``/``v1a`` entry matches an active key, and
        :class:`~syncrecon.TimestampError` when one matches but the timestamp is outside the
        tolerance.
        """
        msg_id, stamp, signatures = _headers(
            headers, "webhook-id", "webhook-timestamp", "webhook-signature"
        )
        if not msg_id.isascii():
            raise SignatureError("webhook-id header is not ASCII")
        seconds = _digits(stamp, "webhook-timestamp")

        symmetric: list[str] = []
        asymmetric: list[str] = []
        for entry in signatures.split(" "):
            version, comma, value = entry.partition(",")
            if not comma or not value.isascii():
                continue
            if version == "v1":
                symmetric.append(value)
            elif version == "v1a":
                asymmetric.append(value)
        if not symmetric and not asymmetric:
            raise SignatureError("webhook-signature header has no v1 or v1a entry")

        prefix = f"{msg_id}.{stamp}.".encode("ascii")
        index = self._match(prefix, body, symmetric, asymmetric)
        when = _in_window(seconds, self.clock, self._tolerance_s, "webhook-timestamp")
        return VerifiedDelivery(
            scheme="standard-webhooks-v1" if index >= 0 else "standard-webhooks-v1a",
            delivery_id=msg_id,
            timestamp=when,
            replay_protected=True,
            secret_index=index if index >= 0 else -index - 1,
        )

    def _match(
        self, prefix: bytes, body: bytes, symmetric: list[str], asymmetric: list[str]
    ) -> int:
        """Index of the matching secret; ``-index - 1`` when it is an ed25519 key."""
        if symmetric:
            for index, base in self._hmac_keys:
                mac = base.copy()
                mac.update(prefix)
                mac.update(body)
                expected = _b64(mac.digest())
                for given in symmetric:
                    if hmac.compare_digest(expected, given):
                        return index
        if asymmetric and self._public_keys:
            message = prefix + body
            signatures = [sig for sig in map(_strict_b64decode, asymmetric) if len(sig) == 64]
            if signatures:
                from cryptography.exceptions import InvalidSignature

                for index, public_key in self._public_keys:
                    for signature in signatures:
                        try:
                            public_key.verify(signature, message)
                        except InvalidSignature:
                            continue
                        return -index - 1
        raise SignatureError("webhook-signature matches no active secret")


def _strict_b64decode(value: str) -> bytes:
    """Decode canonical standard base64; return ``b""`` for anything else."""
    if len(value) % 4:
        return b""
    try:
        decoded = binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error:
        return b""
    # Reject encodings whose unused trailing bits are set: only one text per signature.
    return decoded if _b64(decoded) == value else b""


def _decode_base64_secret(text: str, kind: str = "whsec_") -> bytes:
    """Decode the base64 part of a Standard Webhooks key (padding optional)."""
    if not text.isascii():
        raise ConfigurationError(f"a {kind} key must be base64 text")
    padded = text + "=" * (-len(text) % 4)
    try:
        key = binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error:
        raise ConfigurationError(f"a {kind} key must be base64 text") from None
    if not key:
        raise ConfigurationError(f"a {kind} key must not be empty")
    return key


def _ed25519_public_key(text: str) -> Ed25519PublicKey:
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        raise ConfigurationError(_ED25519_MISSING) from None
    raw = _decode_base64_secret(text, "whpk_")
    if len(raw) != 32:
        raise ConfigurationError("a whpk_ key must be 32 bytes of base64 (a raw ed25519 key)")
    return Ed25519PublicKey.from_public_bytes(raw)


# --------------------------------------------------------------------------------------------
# Stripe


@attrs.frozen(kw_only=True)
class StripeVerifier:
    """Verifies Stripe's ``Stripe-Signature`` header.

    The header reads ``t=<unix seconds>,v1=<hex>[,v1=<hex>...]``; other schemes (such as
    ``v0``) are ignored. Each ``v1`` is the hex HMAC-SHA256 of ``{t}.{body}`` keyed with the
    endpoint's whole ``whsec_...`` secret as UTF-8 text (it is *not* base64-decoded, unlike
    Standard Webhooks). ``t`` must be within ``tolerance`` of the ``clock``, either way
    (Stripe's own libraries check only staleness).

    ``secrets`` are the endpoint's active signing secrets, several during a roll. Stripe signs
    no delivery id: deduplicate on the event's ``id`` in the body.
    """

    secrets: tuple[str, ...] = attrs.field(converter=_secrets_tuple, repr=_redact)
    clock: Clock = attrs.field(factory=SystemClock, validator=_check_clock)
    tolerance: timedelta = attrs.field(default=_DEFAULT_TOLERANCE, validator=_check_tolerance)
    _bases: tuple[hmac.HMAC, ...] = attrs.field(init=False, repr=False, eq=False)
    _tolerance_s: float = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_bases", _hmac_bases(_utf8_keys(self.secrets)))
        object.__setattr__(self, "_tolerance_s", self.tolerance.total_seconds())

    def verify(
        self, *, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedDelivery:
        """Verify a Stripe request (see :meth:`Verifier.verify`).

        ``method`` and ``url`` are not signed by this scheme and are ignored. Raises
        :class:`~syncrecon.SignatureError` when ``Stripe-Signature`` is missing or malformed (an
        element without ``=``, no ``t`` or several, a ``t`` that is not ASCII digits, no ``v1``)
        or no ``v1`` matches an active secret, and :class:`~syncrecon.TimestampError` when one
        matches but ``t`` is outside the tolerance.
        """
        (header,) = _headers(headers, "stripe-signature")
        stamp: str | None = None
        candidates: list[str] = []
        for element in header.split(","):
            key, equals, value = element.strip(" \t").partition("=")
            if not equals:
                raise SignatureError("Stripe-Signature element without '='")
            if key == "t":
                if stamp is not None:
                    raise SignatureError("Stripe-Signature has more than one timestamp")
                stamp = value
            elif key == "v1":
                candidates.append(value)
        if stamp is None:
            raise SignatureError("Stripe-Signature has no timestamp")
        seconds = _digits(stamp, "Stripe-Signature timestamp")
        if not candidates:
            raise SignatureError("Stripe-Signature has no v1 signature")

        index = _match_hex(self._bases, candidates, stamp.encode("ascii"), b".", body)
        when = _in_window(seconds, self.clock, self._tolerance_s, "Stripe-Signature timestamp")
        return VerifiedDelivery(
            scheme="stripe-v1", timestamp=when, replay_protected=True, secret_index=index
        )


def _match_hex(bases: tuple[hmac.HMAC, ...], candidates: Sequence[str], *parts: bytes) -> int:
    """Index of the first secret whose hex HMAC of ``parts`` is among ``candidates``."""
    for index, base in enumerate(bases):
        expected = _mac(base, *parts).hex()
        for given in candidates:
            if _same_hex(expected, given):
                return index
    raise SignatureError("signature matches no active secret")


def _match_b64(bases: tuple[hmac.HMAC, ...], given: str, *parts: bytes) -> int:
    """Index of the first secret whose base64 HMAC of ``parts`` is ``given``."""
    if given.isascii():
        for index, base in enumerate(bases):
            if hmac.compare_digest(_b64(_mac(base, *parts)), given):
                return index
    raise SignatureError("signature matches no active secret")


# --------------------------------------------------------------------------------------------
# HubSpot


def _hubspot_uri(url: str) -> str:
    """Decode the escapes HubSpot decodes before signing (``%3A`` to ``:``, and so on)."""
    if "%" not in url:
        return url
    return _HUBSPOT_ESCAPES.sub(lambda match: chr(int(match[1], 16)), url)


@attrs.frozen(kw_only=True)
class HubSpotV3Verifier:
    """Verifies HubSpot's v3 request signature (``X-HubSpot-Signature-v3``).

    The signature is the base64 HMAC-SHA256, keyed with the app's client secret, of
    ``method + uri + body + timestamp``. ``timestamp`` is the ``X-HubSpot-Request-Timestamp``
    header (Unix *milliseconds*) as sent; ``uri`` is the full URL HubSpot called, with these
    escapes decoded first: ``%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`` (to
    ``: / ? @ ! $ ' ( ) * , ;``, in either letter case). Pass the public URL: behind a proxy,
    rebuild it from the forwarded scheme and host.

    ``secrets`` are the app's client secrets (several during a rotation). HubSpot rejects
    timestamps older than five minutes; this verifier applies ``tolerance`` in both
    directions. HubSpot signs no delivery id: deduplicate on ``eventId`` in the body.
    """

    secrets: tuple[str, ...] = attrs.field(converter=_secrets_tuple, repr=_redact)
    clock: Clock = attrs.field(factory=SystemClock, validator=_check_clock)
    tolerance: timedelta = attrs.field(default=_DEFAULT_TOLERANCE, validator=_check_tolerance)
    _bases: tuple[hmac.HMAC, ...] = attrs.field(init=False, repr=False, eq=False)
    _tolerance_s: float = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_bases", _hmac_bases(_utf8_keys(self.secrets)))
        object.__setattr__(self, "_tolerance_s", self.tolerance.total_seconds())

    def verify(
        self, *, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedDelivery:
        """Verify a HubSpot v3 request (see :meth:`Verifier.verify`).

        ``method`` is upper-cased before signing; ``url`` must be the URL HubSpot called. Raises
        :class:`~syncrecon.SignatureError` when ``X-HubSpot-Signature-v3`` or
        ``X-HubSpot-Request-Timestamp`` is missing, empty or malformed (the timestamp must be
        ASCII digits), or the signature matches no active secret, and
        :class:`~syncrecon.TimestampError` when it matches but the timestamp is outside the
        tolerance.
        """
        given, stamp = _headers(headers, "x-hubspot-signature-v3", "x-hubspot-request-timestamp")
        millis = _digits(stamp, "X-HubSpot-Request-Timestamp")
        head = _utf8(method.upper() + _hubspot_uri(url), "method or URL")
        index = _match_b64(self._bases, given, head, body, stamp.encode("ascii"))
        when = _in_window(
            millis / 1000, self.clock, self._tolerance_s, "X-HubSpot-Request-Timestamp"
        )
        return VerifiedDelivery(
            scheme="hubspot-v3", timestamp=when, replay_protected=True, secret_index=index
        )


def _hubspot_signature(headers: Mapping[str, str], expected_version: str) -> str:
    """The ``X-HubSpot-Signature`` value, once the version header says ``expected_version``."""
    given, version = _headers(headers, "x-hubspot-signature", "x-hubspot-signature-version")
    if version.lower() != expected_version:
        raise SignatureError(f"X-HubSpot-Signature-Version is not {expected_version}")
    return given


def _match_sha256_hex(starts: Sequence[hashlib._Hash], given: str, *parts: bytes) -> int:
    """Index of the first secret for which ``sha256(secret + parts)`` is ``given`` (hex)."""
    for index, start in enumerate(starts):
        digest = start.copy()
        for part in parts:
            digest.update(part)
        if _same_hex(digest.hexdigest(), given):
            return index
    raise SignatureError("X-HubSpot-Signature matches no active secret")


@attrs.frozen(kw_only=True)
class HubSpotV2Verifier:
    """Verifies HubSpot's v2 request signature (``X-HubSpot-Signature``, version ``v2``).

    The signature is the hex SHA-256 (a plain hash, not an HMAC) of
    ``client_secret + method + uri + body``, where ``uri`` must match the URL HubSpot called
    exactly, including the scheme and the order of query parameters. The
    ``X-HubSpot-Signature-Version`` header must say ``v2``. ``secrets`` are the app's client
    secrets (several during a rotation).

    v2 signs no timestamp, so it gives **no replay protection**: a captured request verifies
    forever, and :attr:`VerifiedDelivery.replay_protected` is ``False``. Prefer
    :class:`HubSpotV3Verifier`, and deduplicate on ``eventId``.
    """

    secrets: tuple[str, ...] = attrs.field(converter=_secrets_tuple, repr=_redact)
    _starts: tuple[hashlib._Hash, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        starts = tuple(hashlib.sha256(key) for key in _utf8_keys(self.secrets))
        object.__setattr__(self, "_starts", starts)

    def verify(
        self, *, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedDelivery:
        """Verify a HubSpot v2 request (see :meth:`Verifier.verify`).

        ``method`` is upper-cased before hashing; ``url`` must be the URL HubSpot called. Raises
        :class:`~syncrecon.SignatureError` when ``X-HubSpot-Signature`` is missing or not 64 hex
        digits, ``X-HubSpot-Signature-Version`` is missing or not ``v2``, or the signature matches
        no active secret.
        """
        given = _hubspot_signature(headers, "v2")
        head = _utf8(method.upper() + url, "method or URL")
        index = _match_sha256_hex(self._starts, given, head, body)
        return VerifiedDelivery(scheme="hubspot-v2", secret_index=index)


@attrs.frozen(kw_only=True)
class HubSpotV1Verifier:
    """Verifies HubSpot's v1 request signature (``X-HubSpot-Signature``, version ``v1``).

    The signature is the hex SHA-256 (a plain hash, not an HMAC) of ``client_secret + body``;
    HubSpot sends it with CRM webhook subscriptions. The ``X-HubSpot-Signature-Version``
    header must say ``v1``. ``secrets`` are the app's client secrets (several during a
    rotation).

    v1 signs neither a timestamp nor the URL, so it gives **no replay protection**: a captured
    request verifies forever, at any endpoint of the same app, and
    :attr:`VerifiedDelivery.replay_protected` is ``False``. Prefer :class:`HubSpotV3Verifier`
    where HubSpot sends v3, and deduplicate on ``eventId``.
    """

    secrets: tuple[str, ...] = attrs.field(converter=_secrets_tuple, repr=_redact)
    _starts: tuple[hashlib._Hash, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        starts = tuple(hashlib.sha256(key) for key in _utf8_keys(self.secrets))
        object.__setattr__(self, "_starts", starts)

    def verify(
        self, *, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedDelivery:
        """Verify a HubSpot v1 request (see :meth:`Verifier.verify`).

        ``method`` and ``url`` are not signed by this scheme and are ignored. Raises
        :class:`~syncrecon.SignatureError` when ``X-HubSpot-Signature`` is missing or not 64 hex
        digits, ``X-HubSpot-Signature-Version`` is missing or not ``v1``, or the signature matches
        no active secret.
        """
        given = _hubspot_signature(headers, "v1")
        index = _match_sha256_hex(self._starts, given, body)
        return VerifiedDelivery(scheme="hubspot-v1", secret_index=index)


# --------------------------------------------------------------------------------------------
# Zendesk


@attrs.frozen(kw_only=True)
class ZendeskVerifier:
    """Verifies Zendesk's ``X-Zendesk-Webhook-Signature`` header.

    The signature is the base64 HMAC-SHA256, keyed with the webhook's signing secret (as
    UTF-8 text, not decoded), of ``timestamp + body`` with no separator, where ``timestamp`` is
    the ``X-Zendesk-Webhook-Signature-Timestamp`` header as sent. ``secrets`` are the
    webhook's signing secrets (several during a rotation).

    Zendesk sends that timestamp as ISO 8601 (``2021-03-25T05:09:27Z``) and documents no
    replay window. When it parses, ``tolerance`` is applied in both directions and the
    delivery is replay-protected (a naive time is taken to be UTC). A timestamp in another
    form is still signed, so it cannot be forged, but it cannot be checked either:
    :attr:`VerifiedDelivery.replay_protected` is then ``False``.
    """

    secrets: tuple[str, ...] = attrs.field(converter=_secrets_tuple, repr=_redact)
    clock: Clock = attrs.field(factory=SystemClock, validator=_check_clock)
    tolerance: timedelta = attrs.field(default=_DEFAULT_TOLERANCE, validator=_check_tolerance)
    _bases: tuple[hmac.HMAC, ...] = attrs.field(init=False, repr=False, eq=False)
    _tolerance_s: float = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_bases", _hmac_bases(_utf8_keys(self.secrets)))
        object.__setattr__(self, "_tolerance_s", self.tolerance.total_seconds())

    def verify(
        self, *, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedDelivery:
        """Verify a Zendesk request (see :meth:`Verifier.verify`).

        ``method`` and ``url`` are not signed by this scheme and are ignored. Raises
        :class:`~syncrecon.SignatureError` when ``X-Zendesk-Webhook-Signature`` or
        ``X-Zendesk-Webhook-Signature-Timestamp`` is missing, empty or not ASCII, or the signature
        matches no active secret, and :class:`~syncrecon.TimestampError` when it matches, the
        timestamp is ISO 8601, and it is outside the tolerance.
        """
        given, stamp = _headers(
            headers, "x-zendesk-webhook-signature", "x-zendesk-webhook-signature-timestamp"
        )
        if not stamp.isascii():
            raise SignatureError("X-Zendesk-Webhook-Signature-Timestamp is not ASCII")
        index = _match_b64(self._bases, given, stamp.encode("ascii"), body)
        try:
            when: datetime | None = datetime.fromisoformat(stamp)
        except ValueError:
            when = None
        if when is None:
            return VerifiedDelivery(scheme="zendesk", secret_index=index)
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        _check_drift(
            when.timestamp(),
            self.clock,
            self._tolerance_s,
            "X-Zendesk-Webhook-Signature-Timestamp",
        )
        return VerifiedDelivery(
            scheme="zendesk", timestamp=when, replay_protected=True, secret_index=index
        )


# --------------------------------------------------------------------------------------------
# GitHub-style


@attrs.frozen(kw_only=True)
class GitHubStyleVerifier:
    """Verifies a GitHub-style ``sha256=<hex>`` signature of the raw body.

    The ``header`` (``X-Hub-Signature-256`` by default, matched case-insensitively; many
    services copy GitHub's scheme under another name) holds ``sha256=`` followed by the hex
    HMAC-SHA256 of the body, keyed with the webhook secret as UTF-8 text. ``secrets`` are the
    webhook's secrets (several during a rotation).

    The scheme signs neither a timestamp nor a delivery id, so it gives **no replay
    protection** (:attr:`VerifiedDelivery.replay_protected` is ``False``), and the
    ``X-GitHub-Delivery`` header is unsigned: deduplicate on an id in the body.
    """

    secrets: tuple[str, ...] = attrs.field(converter=_secrets_tuple, repr=_redact)
    header: str = attrs.field(
        default="X-Hub-Signature-256",
        validator=[attrs.validators.instance_of(str), attrs.validators.min_len(1)],
    )
    _bases: tuple[hmac.HMAC, ...] = attrs.field(init=False, repr=False, eq=False)
    _header_key: str = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_bases", _hmac_bases(_utf8_keys(self.secrets)))
        object.__setattr__(self, "_header_key", self.header.lower())

    def verify(
        self, *, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> VerifiedDelivery:
        """Verify a GitHub-style request (see :meth:`Verifier.verify`).

        ``method`` and ``url`` are not signed by this scheme and are ignored. Raises
        :class:`~syncrecon.SignatureError` when the signature header is missing, does not start
        with ``sha256=``, is not 64 hex digits after it, or matches no active secret.
        """
        (value,) = _headers(headers, self._header_key)
        scheme, equals, given = value.partition("=")
        if scheme != "sha256" or not equals:
            raise SignatureError(f"{self.header} does not start with 'sha256='")
        index = _match_hex(self._bases, [given], body)
        return VerifiedDelivery(scheme="github-sha256", secret_index=index)
