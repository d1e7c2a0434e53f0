"""The pieces of the auth rule with their clocks injected: sessions, the failure throttle, forwarded headers, body pace.

The real-process tests (tests/test_security.py, test_security_limits.py) show
each at work once; these walk the edges that would take minutes of real time
(a window ending, a session expiring at its second) or many addresses.
"""

from __future__ import annotations

import pytest

from common.auth import (
    FailureThrottle,
    Sessions,
    TooManyFailures,
    parse_networks,
    request_origin,
)
from producer.limits import BodyPace


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_is_valid_until_its_expiry_and_not_after() -> None:
    clock = Clock()
    sessions = Sessions("token", 60, clock)
    cookie = sessions.issue()
    assert sessions.expiry(cookie) == int(clock.now + 60)
    clock.now += 59
    assert sessions.expiry(cookie) is not None
    clock.now += 1
    assert sessions.expiry(cookie) is None


def test_a_session_cannot_be_forged_extended_or_moved_to_another_token() -> None:
    clock = Clock()
    sessions = Sessions("token", 60, clock)
    cookie = sessions.issue()
    session_id, expires, signature = cookie.split(".")
    assert sessions.expiry(f"{session_id}.{int(expires) + 3600}.{signature}") is None, "a longer expiry"
    assert sessions.expiry(f"other.{expires}.{signature}") is None, "another id"
    assert sessions.expiry(f"{session_id}.{expires}.{'0' * 64}") is None
    assert sessions.expiry("not a cookie") is None
    assert Sessions("rotated token", 60, clock).expiry(cookie) is None, "changing the token ends every session"
    assert "token" not in cookie and sessions.issue().split(".")[0] != session_id, "random ids, never the token"


def test_a_revoked_session_stays_revoked_and_the_list_forgets_it_after_expiry() -> None:
    clock = Clock()
    sessions = Sessions("token", 60, clock)
    revoked, kept = sessions.issue(), sessions.issue()
    sessions.revoke(revoked)
    assert sessions.expiry(revoked) is None and sessions.expiry(kept) is not None
    clock.now += 61
    sessions.revoke(sessions.issue())  # a later logout sweeps entries past their expiry: memory stays bounded
    assert len(sessions._revoked) == 1


def test_the_throttle_locks_a_client_for_the_rest_of_its_window_only() -> None:
    clock = Clock()
    throttle = FailureThrottle(limit=2, window_seconds=10, clock=clock)
    throttle.failed("a")
    clock.now += 4
    throttle.failed("a")
    with pytest.raises(TooManyFailures) as locked:
        throttle.check("a")
    assert locked.value.retry_after == pytest.approx(6)
    throttle.check("b")  # another client is not affected
    clock.now += 6
    throttle.check("a")  # the window is over
    throttle.failed("a")
    throttle.check("a")  # a new window starts with one failure


TRUSTED = parse_networks("AUTH_TRUSTED_PROXIES", "10.0.0.0/8, ::1")


@pytest.mark.parametrize(
    ("peer", "headers", "client", "scheme", "host"),
    [
        # Not a trusted proxy: its headers change nothing.
        ("203.0.113.1", {"x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "https"}, "203.0.113.1", "http", "app"),
        ("10.0.0.5", {"x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "https"}, "1.2.3.4", "https", "app"),
        # A client's own X-Forwarded-For (left of the proxy's entry) cannot choose its address.
        ("10.0.0.5", {"x-forwarded-for": "127.0.0.1, 198.51.100.7"}, "198.51.100.7", "http", "app"),
        # Two trusted hops: the first untrusted address from the right.
        ("10.0.0.5", {"x-forwarded-for": "198.51.100.7, 10.0.0.9"}, "198.51.100.7", "http", "app"),
        ("10.0.0.5", {"x-forwarded-host": "dash.example"}, "10.0.0.5", "http", "dash.example"),
        (
            "::1",
            {"forwarded": 'for="[2001:db8::7]:4711";proto=HTTPS;host=dash.example'},
            "[2001:db8::7]:4711",
            "https",
            "dash.example",
        ),
    ],
)
def test_forwarded_headers_are_believed_only_from_trusted_proxies(
    peer: str, headers: dict[str, str], client: str, scheme: str, host: str
) -> None:
    origin = request_origin({"client": (peer, 1234), "scheme": "http"}, {"host": "app", **headers}, TRUSTED)
    assert (origin.client, origin.scheme, origin.host) == (client, scheme, host)


@pytest.mark.parametrize(
    ("elapsed", "received", "allowed", "which"),
    [
        (0, 0, 30, "PRODUCER_BODY_TIMEOUT_SECONDS"),  # the start: the stall timeout
        (30, 16 * 1024 * 5, 5, "PRODUCER_MIN_BODY_BYTES_PER_SECOND"),  # past the grace: 5 s of rate credit left
        (40, 16 * 1024 * 5, -5, "PRODUCER_MIN_BODY_BYTES_PER_SECOND"),  # behind: cut off now
        (1790, 1024**3, 10, "PRODUCER_BODY_DEADLINE_SECONDS"),  # fast, but the deadline is near
    ],
)
def test_body_pace_waits_for_the_first_limit_to_come(elapsed: float, received: int, allowed: float, which: str) -> None:
    wait, limit = BodyPace().wait_allowed(elapsed, received)
    assert wait == pytest.approx(allowed) and which in limit
