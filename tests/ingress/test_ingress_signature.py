"""Signature verification: identical to the official stripe SDK, plus the future-timestamp rule it lacks."""

from __future__ import annotations

import time

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.errors import SignatureError
from processor.ingress import signature
from processor.ingress.signature import parse_header, sign, verify_header

SECRETS = ["whsec_current_0123456789abcdef", "whsec_previous_fedcba9876543210"]
TOLERANCE = 300
BODY = b'{"id":"evt_1","object":"v2.core.event","type":"v2.core.claimable_sandbox.claimed"}'


def sdk_index(payload: bytes, header: str, secrets: list[str], tolerance: int) -> int | None:
    """What the SDK says for a list of secrets: the first one it accepts, or None."""
    for index, secret in enumerate(secrets):
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
        except stripe.SignatureVerificationError:
            continue
        return index
    return None


def ours(payload: bytes, header: str, secrets: list[str], tolerance: int, now: float) -> int | SignatureError:
    try:
        return verify_header(payload, header, secrets, tolerance, now=now)
    except SignatureError as exc:
        return exc


def digest(payload: bytes, secret: str, timestamp: int) -> str:
    return sign(payload, secret, timestamp).split("v1=", 1)[1]


# timestamps relative to now, kept 3 s away from the tolerance edges so the SDK's own clock cannot flip a case
OFFSETS = st.one_of(
    st.integers(-TOLERANCE + 3, TOLERANCE - 3),
    st.integers(-10 * TOLERANCE, -TOLERANCE - 3),
    st.integers(TOLERANCE + 3, 10 * TOLERANCE),
)
HEX = st.text("0123456789abcdef", min_size=0, max_size=64)
SPACE = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def signed_headers(draw: st.DrawFn) -> tuple[bytes, str, int]:
    """A header Stripe might send, or a mangled one: extra items, schemes, spaces, duplicates, bad values."""
    payload = draw(st.one_of(st.just(BODY), st.text(max_size=200).map(str.encode)))
    now = int(time.time())
    timestamp = now + draw(OFFSETS)
    signer = draw(st.sampled_from([*SECRETS, "whsec_stranger"]))
    signed_ts = draw(st.sampled_from([timestamp, timestamp, timestamp + 1]))
    good = digest(payload, signer, signed_ts)
    items = draw(
        st.lists(
            st.one_of(
                st.just(f"v1={good}"),
                st.builds(lambda h: f"v1={h}", HEX),
                st.just(f"v0={good}"),
                st.builds(lambda s: f"{s}v1={good}", SPACE),
                st.builds(lambda s: f"v1={good}{s}", SPACE),
                st.just(f"v1={good}=extra"),
                st.sampled_from(["v2=abc", "scheme=x", "", "v1", "garbage", "t=", "=v1"]),
                st.builds(lambda h: f"t={h}", st.sampled_from([str(timestamp), "x", " " + str(timestamp)])),
            ),
            max_size=5,
        )
    )
    t_item = draw(st.sampled_from([f"t={timestamp}", f"t={timestamp:012d}", f"t= {timestamp}", "", "t=abc"]))
    position = draw(st.integers(0, len(items)))
    items.insert(position, t_item)
    return payload, ",".join(items), timestamp


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=signed_headers(), secret_count=st.integers(1, 2))
def test_same_verdict_as_the_sdk_on_generated_headers(case: tuple[bytes, str, int], secret_count: int) -> None:
    """Over many generated headers we accept exactly when the SDK accepts (and the timestamp is not ahead)."""
    payload, header, _ = case
    secrets = SECRETS[:secret_count]
    now = time.time()
    expected = sdk_index(payload, header, secrets, TOLERANCE)
    got = ours(payload, header, secrets, TOLERANCE, now)
    try:
        parsed_ts = parse_header(header).timestamp
    except SignatureError:
        parsed_ts = None
    if expected is not None and parsed_ts is not None and parsed_ts > now + TOLERANCE:
        assert isinstance(got, SignatureError) and got.code == signature.IN_FUTURE
    elif expected is None:
        assert isinstance(got, SignatureError), header
    else:
        assert got == expected, header


@settings(max_examples=400, deadline=None)
@given(header=st.text(alphabet="tv01=, x-9abcdef\t", max_size=40))
def test_same_verdict_as_the_sdk_on_arbitrary_header_text(header: str) -> None:
    """Random header text never makes us accept what the SDK rejects, nor reject what it accepts."""
    expected = sdk_index(BODY, header, SECRETS, TOLERANCE)
    got = ours(BODY, header, SECRETS, TOLERANCE, time.time())
    assert isinstance(got, SignatureError) if expected is None else got == expected


async def test_sdk_construct_event_accepts_what_we_sign() -> None:
    """Our `sign` produces headers the SDK's construct_event accepts for v1 snapshot payloads."""
    body = b'{"id":"evt_9","object":"event","type":"account.application.authorized","data":{"object":{}}}'
    event = stripe.Webhook.construct_event(body, sign(body, SECRETS[0]), SECRETS[0])
    assert event.id == "evt_9"
    assert verify_header(body, sign(body, SECRETS[0]), SECRETS, TOLERANCE) == 0


async def test_rotation_reports_which_secret_matched() -> None:
    """With two configured secrets, a delivery signed by the second one passes and reports index 1."""
    assert verify_header(BODY, sign(BODY, SECRETS[1]), SECRETS, TOLERANCE) == 1
    both = f"{sign(BODY, SECRETS[1])},v1={digest(BODY, SECRETS[0], int(time.time()))}"
    assert verify_header(BODY, both, SECRETS, TOLERANCE) == 0


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, signature.MISSING),
        ("", signature.MISSING),
        ("v1=abc", signature.MALFORMED),
        ("t=soon,v1=abc", signature.MALFORMED),
        ("t=1,v1", signature.MALFORMED),
        ("t=1,v0=abc", signature.NO_V1),
        ("t=1, v1=abc", signature.NO_V1),
    ],
)
async def test_unusable_headers_are_refused_with_a_reason(header: str | None, code: str) -> None:
    """Missing, malformed and v0-only headers are refused with a reason code naming the problem."""
    with pytest.raises(SignatureError) as caught:
        verify_header(BODY, header, SECRETS, TOLERANCE)
    assert caught.value.code == code


async def test_tampered_body_and_wrong_secret_do_not_match() -> None:
    """One changed byte, or a signature made with another secret, is a mismatch."""
    header = sign(BODY, SECRETS[0])
    for payload, head in [(BODY.replace(b"evt_1", b"evt_2"), header), (BODY, sign(BODY, "whsec_other"))]:
        with pytest.raises(SignatureError) as caught:
            verify_header(payload, head, SECRETS, TOLERANCE)
        assert caught.value.code == signature.MISMATCH


async def test_timestamps_beyond_the_tolerance_either_way_are_refused() -> None:
    """Signed 301 s ago or 301 s ahead is refused; 299 s either way passes."""
    now = int(time.time())
    for offset, code in [(-301, signature.TOO_OLD), (301, signature.IN_FUTURE)]:
        with pytest.raises(SignatureError) as caught:
            verify_header(BODY, sign(BODY, SECRETS[0], now + offset), SECRETS, TOLERANCE, now=now)
        assert caught.value.code == code
    for offset in (-299, 299):
        assert verify_header(BODY, sign(BODY, SECRETS[0], now + offset), SECRETS, TOLERANCE, now=now) == 0
    # the SDK itself accepts the future one: the rule is ours
    stripe.WebhookSignature.verify_header(BODY, sign(BODY, SECRETS[0], now + 301), SECRETS[0], TOLERANCE)
