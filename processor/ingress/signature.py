"""Verification of Stripe's `Stripe-Signature` header over the raw body bytes.

Accepts and rejects exactly what `stripe.WebhookSignature.verify_header` (stripe-python 16.1) does for any
of the configured secrets, which tests prove against the SDK, and in addition rejects timestamps more than the
tolerance in the future: the SDK only bounds the past, so a leaked signed request dated far ahead would stay
replayable for as long as its date lies in the future.

Header parsing follows the SDK to the letter, because the SDK is the reference: items are separated by ",",
each is split on the first "=" (the value ends at a second "=" if there is one), keys are not trimmed (so
" v1=..." is an unknown scheme, ignored like "v0"), the first "t" wins and is read with `int()`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import NamedTuple

from processor.errors import SignatureError

#: the only scheme Stripe signs with today; "v0" (test-mode legacy) and unknown schemes are ignored
SCHEME = "v1"

# reason codes, used in HTTP error bodies, logs and the outcome metric label
MISSING = "missing_signature"
MALFORMED = "malformed_signature"
NO_V1 = "no_v1_signature"
MISMATCH = "signature_mismatch"
TOO_OLD = "timestamp_too_old"
IN_FUTURE = "timestamp_in_future"


class SignatureHeader(NamedTuple):
    """A parsed `Stripe-Signature`: the signed timestamp and the candidate `v1` signatures."""

    timestamp: int
    signatures: tuple[str, ...]


def parse_header(header: str | None) -> SignatureHeader:
    """Parse the header as the SDK does; raise SignatureError (missing / malformed / no v1) otherwise."""
    if not header:
        raise SignatureError("no Stripe-Signature header", code=MISSING)
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        parts = item.split("=", 2)
        key = parts[0]
        if key not in ("t", SCHEME):
            continue
        if len(parts) < 2:
            raise SignatureError("Stripe-Signature item without a value", code=MALFORMED)
        (timestamps if key == "t" else signatures).append(parts[1])
    if not timestamps:
        raise SignatureError("Stripe-Signature has no timestamp", code=MALFORMED)
    try:
        timestamp = int(timestamps[0])
    except ValueError:
        raise SignatureError("Stripe-Signature timestamp is not an integer", code=MALFORMED) from None
    if not signatures:
        raise SignatureError("Stripe-Signature has no v1 signature", code=NO_V1)
    return SignatureHeader(timestamp, tuple(signatures))


class Verifier:
    """Checks parsed headers against a list of secrets (rotation: any secret may match)."""

    __slots__ = ("_keys", "tolerance_s")

    def __init__(self, secrets: Sequence[str], tolerance_s: int) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is needed")
        # one keyed HMAC per secret, built once; a request copies it (the key schedule is not redone)
        self._keys = tuple(hmac.new(s.encode(), digestmod=hashlib.sha256) for s in secrets)
        self.tolerance_s = tolerance_s

    def verify(self, payload: bytes, header: SignatureHeader, now: float | None = None) -> int:
        """Return the index of the secret whose signature matches; raise SignatureError otherwise."""
        # "%d" re-renders the timestamp like the SDK does, so "t=012" signs "12."
        prefix = b"%d." % header.timestamp
        # non-ASCII candidates cannot equal a hex digest (and compare_digest refuses non-ASCII text)
        candidates = [s for s in header.signatures if s.isascii()]
        matched = -1
        for index, key in enumerate(self._keys):
            mac = key.copy()
            mac.update(prefix)
            mac.update(payload)
            expected = mac.hexdigest()
            # every candidate is compared, in constant time, so timing reveals neither which nor how much
            hit = False
            for candidate in candidates:
                hit |= hmac.compare_digest(expected, candidate)
            if hit and matched < 0:
                matched = index
        if matched < 0:
            raise SignatureError("no signature matches the payload", code=MISMATCH)
        # checked after the signature (as the SDK does) so a timestamp error means an authentic but
        # mistimed delivery: a replay or a clock problem worth an operator's attention
        current = time.time() if now is None else now
        if header.timestamp < current - self.tolerance_s:
            raise SignatureError("signature timestamp is older than the tolerance", code=TOO_OLD)
        if header.timestamp > current + self.tolerance_s:
            raise SignatureError("signature timestamp is in the future beyond the tolerance", code=IN_FUTURE)
        return matched


def verify_header(
    payload: bytes, header: str | None, secrets: Sequence[str], tolerance_s: int, now: float | None = None
) -> int:
    """Parse and verify in one call; return the index of the matching secret."""
    return Verifier(secrets, tolerance_s).verify(payload, parse_header(header), now)


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value as Stripe would send it (for tests, the emulator and benchmarks)."""
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), b"%d." % ts + payload, hashlib.sha256).hexdigest()
    return f"t={ts},{SCHEME}={digest}"
