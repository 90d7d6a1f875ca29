"""Webhook signatures and the replay guard: pure functions, an explicit clock."""

from __future__ import annotations

import pytest

from app.security.webhook_auth import (
    BadSignature,
    MalformedSignature,
    MissingSignature,
    ReplayedSignature,
    ReplayGuard,
    StaleTimestamp,
    Verified,
    sign_header,
    signature,
    verify,
)

NOW = 1_714_557_600
BODY = b'{"id":"e1"}'


def check(header: str | None, secrets: tuple[str, ...] = ("s1",), now: float = NOW) -> Verified:
    return verify(header, BODY, secrets, now=now, tolerance=300)


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"s1", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signature("s1", NOW, BODY) == expected
    assert sign_header(["s1"], NOW, BODY) == f"t={NOW},v1={expected}"


def test_valid_and_rotated_secrets() -> None:
    assert check(sign_header(["s1"], NOW, BODY)).timestamp == NOW
    assert check(sign_header(["s2"], NOW, BODY), secrets=("s1", "s2")).timestamp == NOW
    assert check(sign_header(["old", "s1"], NOW, BODY)).signature == signature("s1", NOW, BODY)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, MissingSignature),
        ("", MissingSignature),
        ("t=1", MalformedSignature),
        ("v1=ab", MalformedSignature),
        ("t=1,t=2,v1=ab", MalformedSignature),
        ("t=-5,v1=ab", MalformedSignature),
        ("garbage", MalformedSignature),
        (f"t={NOW}," + ",".join([f"v1={'0' * 64}"] * 9), MalformedSignature),
        # Attack: a v1 that is not hex (non-ASCII, short) once made compare_digest raise TypeError: a 500
        # any unauthenticated client could cause. Every v1 must be 64 hex digits.
        (f"t={NOW},v1=\xe9", MalformedSignature),
        (f"t={NOW},v1=" + "\xe9" * 64, MalformedSignature),
        (f"t={NOW},v1={'g' * 64}", MalformedSignature),
        (f"t={NOW},v1={'0' * 63}", MalformedSignature),
        (f"t={NOW},v1={signature('s1', NOW, BODY)},v1=zz", MalformedSignature),
        (f"t={NOW},v1={'0' * 64}", BadSignature),
        (f"t={NOW},v0={signature('s1', NOW, BODY)}", MalformedSignature),  # only v1 counts
    ],
)
def test_bad_headers(header: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        check(header)


def test_wrong_secret_and_tampered_body() -> None:
    with pytest.raises(BadSignature):
        check(sign_header(["other"], NOW, BODY))
    with pytest.raises(BadSignature):
        verify(sign_header(["s1"], NOW, BODY), BODY + b" ", ("s1",), now=NOW, tolerance=300)


def test_signature_for_another_timestamp_is_refused() -> None:
    # Attack: keep a valid v1 but move t forward to stretch the replay window.
    v1 = signature("s1", NOW - 200, BODY)
    with pytest.raises(BadSignature):
        check(f"t={NOW},v1={v1}")


@pytest.mark.parametrize(("offset", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_tolerance_window(offset: int, ok: bool) -> None:
    header = sign_header(["s1"], NOW + offset, BODY)
    if ok:
        check(header)
    else:
        with pytest.raises(StaleTimestamp):
            check(header)


def test_replay_guard_rejects_a_second_use_until_the_window_ends() -> None:
    guard = ReplayGuard(tolerance=300)
    seen = Verified(NOW, "sig", "abc")
    guard.check(seen, NOW)
    with pytest.raises(ReplayedSignature):
        guard.check(seen, NOW + 10)
    guard.check(Verified(NOW + 400, "sig", "later"), NOW + 400)  # expires "abc" (its t is out of the window)
    assert len(guard) == 1
    guard.check(seen, NOW + 400)  # verify() refuses that old t anyway


def test_replay_guard_is_bounded_and_forgets_on_request() -> None:
    guard = ReplayGuard(tolerance=300, capacity=3)
    for i in range(10):
        guard.check(Verified(NOW, "sig", f"s{i}"), NOW)
    assert len(guard) == 3
    guard.forget(Verified(NOW, "sig", "s9"))
    guard.check(Verified(NOW, "sig", "s9"), NOW)  # a retry after a failed (not acknowledged) request


def test_uppercase_hex_is_accepted() -> None:
    assert check(f"t={NOW},v1={signature('s1', NOW, BODY).upper()}").timestamp == NOW


def test_replay_with_the_other_or_reordered_signatures_is_refused() -> None:
    # Attack: a sender mid-rotation signs t=..,v1=A,v1=B. Replaying it as v1=B,v1=A, or as v1=B alone,
    # once matched a different v1 than the guard remembered, so the same request was accepted twice.
    secrets = ("s1", "s2")
    a, b = signature("s1", NOW, BODY), signature("s2", NOW, BODY)
    guard = ReplayGuard(tolerance=300)
    guard.check(check(f"t={NOW},v1={a},v1={b}", secrets), NOW)
    for replay in (f"t={NOW},v1={b},v1={a}", f"t={NOW},v1={b}", f"t={NOW},v1={a}"):
        with pytest.raises(ReplayedSignature):
            guard.check(check(replay, secrets), NOW)
    guard.check(check(sign_header(["s2"], NOW + 1, BODY), secrets), NOW)  # signed anew: accepted
