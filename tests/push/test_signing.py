"""Signatures of push messages: HMAC over timestamp, request id and body; rotation; replay."""

from __future__ import annotations

import pytest

from conveyor.errors import ConfigError
from conveyor.push.signing import SignatureError, Verifier, check_keys, parse, sign

KEY = "k" * 32
OLD = "o" * 32
BODY = b'{"v":1}'


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_signed_body_verifies_and_carries_its_request_id() -> None:
    clock = Clock()
    header = sign(BODY, [KEY], request_id="req-1", timestamp=clock.now)
    signed = Verifier([KEY], clock=clock).verify(header, BODY)
    assert (signed.request_id, signed.timestamp) == ("req-1", int(clock.now))


@pytest.mark.parametrize("header", [None, "", "garbage", "t=1,id=x", "t=abc,id=x,v1=" + "0" * 64])
def test_missing_or_malformed_headers_are_refused(header: str | None) -> None:
    with pytest.raises(SignatureError):
        Verifier([KEY]).verify(header, BODY)


def test_another_key_or_an_altered_body_is_refused() -> None:
    header = sign(BODY, ["x" * 32], request_id="r")
    with pytest.raises(SignatureError, match="does not match"):
        Verifier([KEY]).verify(header, BODY)
    with pytest.raises(SignatureError, match="does not match"):
        Verifier([KEY]).verify(sign(BODY, [KEY], request_id="r"), BODY + b" ")


def test_a_stale_or_future_timestamp_is_refused() -> None:
    clock = Clock()
    verifier = Verifier([KEY], clock=clock, tolerance=300)
    with pytest.raises(SignatureError, match="stale"):
        verifier.verify(sign(BODY, [KEY], request_id="a", timestamp=clock.now - 301), BODY)
    with pytest.raises(SignatureError, match="stale"):
        verifier.verify(sign(BODY, [KEY], request_id="b", timestamp=clock.now + 301), BODY)
    verifier.verify(sign(BODY, [KEY], request_id="c", timestamp=clock.now - 299), BODY)


def test_a_request_id_is_accepted_once_within_the_window() -> None:
    clock = Clock()
    verifier = Verifier([KEY], clock=clock)
    header = sign(BODY, [KEY], request_id="once", timestamp=clock.now)
    verifier.verify(header, BODY)
    with pytest.raises(SignatureError, match="replayed"):
        verifier.verify(header, BODY)
    clock.now += 400  # the old signature is stale now anyway; the guard forgot it
    with pytest.raises(SignatureError, match="stale"):
        verifier.verify(header, BODY)


def test_rotation_either_side_may_move_first() -> None:
    """The new key with the old one as fallback accepts both; a signer with both keys is
    accepted by a verifier that knows only one of them."""
    rotated = Verifier([KEY, OLD], replay_guard=False)
    rotated.verify(sign(BODY, [OLD], request_id="r1"), BODY)
    rotated.verify(sign(BODY, [KEY], request_id="r2"), BODY)
    both = sign(BODY, [KEY, OLD], request_id="r3")
    assert len(parse(both)[2]) == 2
    Verifier([OLD], replay_guard=False).verify(both, BODY)
    Verifier([KEY], replay_guard=False).verify(both, BODY)


def test_an_answer_must_carry_the_requests_id() -> None:
    verifier = Verifier([KEY], replay_guard=False)
    with pytest.raises(SignatureError, match="another request"):
        verifier.verify(sign(BODY, [KEY], request_id="other"), BODY, request_id="mine")


def test_keys_are_checked_and_never_echoed() -> None:
    with pytest.raises(ConfigError, match="needs a signing key"):
        check_keys([None, None])
    with pytest.raises(ConfigError, match="at least 16") as info:
        check_keys(["short-secret"])
    assert "short-secret" not in str(info.value)
    assert check_keys([KEY, None]) == (KEY,)
    with pytest.raises(SignatureError) as bad:
        Verifier([KEY]).verify(sign(BODY, [OLD], request_id="r"), BODY)
    assert KEY not in str(bad.value) and OLD not in str(bad.value)


def test_a_header_with_many_signatures_is_refused_before_any_hmac() -> None:
    """Each v1 would cost a comparison against a MAC of the whole body: a signer holds one key
    (two while rotating), so a header with more is refused as malformed."""
    body = b'{"x": 1}'
    good = sign(body, [KEY], request_id="r-many")
    padded = good + "".join(f",v1={'0' * 64}" for _ in range(4))
    with pytest.raises(SignatureError, match="more than 4"):
        Verifier([KEY]).verify(padded, body)
    rotated = sign(body, [KEY, "another-key-of-32-characters-xx"], request_id="r-two")
    assert Verifier([KEY]).verify(rotated, body).request_id == "r-two"


def test_a_body_nested_too_deeply_is_invalid_input_not_a_crash() -> None:
    from conveyor.errors import InvalidInput
    from conveyor.push.protocol import decode

    with pytest.raises(InvalidInput, match="nested too deeply"):
        decode(b'{"v": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
