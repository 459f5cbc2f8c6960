"""The dashboard's guard (admin key, signed sessions, CSRF tokens, Origin checks) and its depth history and chart."""

from __future__ import annotations

import pytest

from azjobs.dashboard.auth import Guard, Refused, check_origin
from azjobs.dashboard.chart import depth_chart
from azjobs.dashboard.history import DepthHistory, Point
from azjobs.dashboard.storage import QueueDepth
from azjobs.errors import ConfigurationError
from azjobs.secrets import redact

KEY = "unit-test-admin-key-abcdefgh"
SAME = {"Origin": "http://127.0.0.1:8080"}
HOST = "127.0.0.1:8080"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_admin_key_matches_only_itself():
    guard = Guard(KEY)
    assert guard.key_matches(KEY)
    assert not guard.key_matches(KEY[:-1]) and not guard.key_matches(KEY + "x") and not guard.key_matches("")
    assert not guard.key_matches(None)


def test_a_short_admin_key_is_refused_and_a_good_one_is_redacted_everywhere():
    with pytest.raises(ConfigurationError, match="too short"):
        Guard("short-key")
    Guard(KEY)
    assert KEY not in redact(f"the key is {KEY}")


def test_without_an_admin_key_nothing_can_act():
    guard = Guard(None)
    assert not guard.actions_enabled and not guard.key_matches(KEY)
    with pytest.raises(Refused, match="read-only"):
        guard.check_action("v1.1.2.3", "token", SAME, HOST)
    with pytest.raises(Refused):
        guard.new_session()


def test_a_session_cookie_proves_a_session_until_it_expires():
    clock = Clock()
    guard = Guard(KEY, session_s=60, clock=clock)
    session, cookie = guard.new_session()
    assert KEY not in cookie
    assert guard.session(cookie) == session
    clock.now += 61
    assert guard.session(cookie) is None


def test_a_forged_or_foreign_cookie_proves_nothing():
    guard = Guard(KEY)
    _, cookie = guard.new_session()
    version, expiry, nonce, signature = cookie.split(".")
    assert guard.session(f"{version}.{int(expiry) + 3600}.{nonce}.{signature}") is None  # extended expiry
    assert guard.session(f"{version}.{expiry}.other.{signature}") is None
    assert guard.session(cookie + "0") is None and guard.session("") is None and guard.session("garbage") is None
    other = Guard("another-admin-key-0123456789")
    assert other.session(cookie) is None  # signed with another key


def test_an_action_needs_the_sessions_own_csrf_token_and_the_same_origin():
    guard = Guard(KEY)
    session, cookie = guard.new_session()
    token = guard.csrf_token(session)
    assert guard.check_action(cookie, token, SAME, HOST) == session
    _, other_cookie = guard.new_session()
    with pytest.raises(Refused, match="CSRF"):
        guard.check_action(other_cookie, token, SAME, HOST)
    with pytest.raises(Refused, match="CSRF"):
        guard.check_action(cookie, None, SAME, HOST)
    with pytest.raises(Refused, match="log in"):
        guard.check_action(None, token, SAME, HOST)
    with pytest.raises(Refused, match="another origin"):
        guard.check_action(cookie, token, {"Origin": "http://evil.example"}, HOST)


@pytest.mark.parametrize("headers, allowed", [
    ({"Origin": "http://127.0.0.1:8080"}, True),
    ({"origin": "HTTP://127.0.0.1:8080/"}, True),
    ({"Referer": "http://127.0.0.1:8080/queues/q"}, True),
    ({"Origin": "null", "Referer": "http://127.0.0.1:8080/"}, True),
    ({"Origin": "http://127.0.0.1:9999"}, False),
    ({"Origin": "http://127.0.0.1:8080.evil.example"}, False),
    ({"Referer": "http://evil.example/?http://127.0.0.1:8080"}, False),
    ({"Origin": "null"}, False),
    ({}, False),
    ({"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "cross-site"}, False),
])
def test_origin_check(headers, allowed):
    if allowed:
        check_origin(headers, HOST)
    else:
        with pytest.raises(Refused):
            check_origin(headers, HOST)


def test_an_extra_origin_is_accepted_when_configured():
    check_origin({"Origin": "https://ops.example.com"}, "internal:8080", ("https://ops.example.com",))
    with pytest.raises(Refused):
        check_origin({"Origin": "https://ops.example.com"}, "internal:8080")


def test_history_samples_at_the_interval_and_computes_the_change_per_minute():
    clock = Clock(0)
    history = DepthHistory(interval_s=10, keep=3, clock=clock)
    assert history.due() and history.rate_per_min("q") is None
    for t, depth in ((0, 100), (30, 70), (60, 40), (90, 10)):
        clock.now = t
        history.add([QueueDepth("q", depth, None, t)])
        assert not history.due()
    assert [p.depth for p in history.series("q")] == [70, 40, 10]  # keeps the last 3
    assert history.rate_per_min("q") == pytest.approx(-60.0)
    assert history.series("q")[-1].poison_depth == 0  # no poison queue counts as 0 on the chart
    clock.now = 100
    assert history.due()


def test_the_chart_draws_both_series_or_says_it_is_collecting():
    assert "Collecting samples" in depth_chart([Point(0, 1, 0)], "q")
    svg = depth_chart([Point(0, 10, 0), Point(60, 5, 2), Point(120, 0, 2)], "depth of <q>", now=120)
    assert svg.count("<polyline") == 2 and "&lt;q&gt;" in svg and "<q>" not in svg
    assert 'class="tick">10<' in svg and "2.0 min ago" in svg
