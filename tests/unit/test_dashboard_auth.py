"""The dashboard's guard (admin key, signed and revocable sessions, CSRF tokens, Origin and Host checks, the
Entra ID principal header) and its depth history and chart."""

from __future__ import annotations

import base64
import json

import pytest

from azjobs.dashboard.auth import (Guard, HostNames, Principal, Refused, SignInRequired, app_service_auth_enabled,
                                   check_origin, client_principal, host_name, require_app_service_auth,
                                   served_over_https)
from azjobs.dashboard.chart import depth_chart
from azjobs.dashboard.history import DepthHistory, Point
from azjobs.dashboard.storage import QueueDepth
from azjobs.errors import ConfigurationError
from azjobs.model.secrets import redact

KEY = "unit-test-admin-key-abcdefgh"
SAME = {"Origin": "http://127.0.0.1:8080"}
HOST = "127.0.0.1:8080"


class Sessions:
    """``SessionStore`` over a dict, shared by Guards like the table is shared by instances (the table itself is
    tested against Azurite in tests/integration/test_dashboard.py)."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}

    def add(self, nonce: str, expires_at: int) -> None:
        self.rows[nonce] = expires_at

    def alive(self, nonce: str) -> bool:
        return nonce in self.rows

    def remove(self, nonce: str) -> None:
        self.rows.pop(nonce, None)


def make_guard(key: str | None = KEY, sessions: Sessions | None = None, **kwargs) -> Guard:
    return Guard(key, sessions if sessions is not None else Sessions(), **kwargs)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_admin_key_matches_only_itself():
    guard = make_guard()
    assert guard.key_matches(KEY)
    assert not guard.key_matches(KEY[:-1]) and not guard.key_matches(KEY + "x") and not guard.key_matches("")
    assert not guard.key_matches(None)


def test_a_short_admin_key_is_refused_and_a_good_one_is_redacted_everywhere():
    with pytest.raises(ConfigurationError, match="too short"):
        Guard("short-key")
    make_guard()
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
    guard = make_guard(session_s=60, clock=clock)
    session, cookie = guard.new_session()
    assert KEY not in cookie
    assert guard.session(cookie) == session
    clock.now += 61
    assert guard.session(cookie) is None


def test_a_forged_or_foreign_cookie_proves_nothing():
    guard = make_guard()
    _, cookie = guard.new_session()
    version, expiry, nonce, signature = cookie.split(".")
    assert guard.session(f"{version}.{int(expiry) + 3600}.{nonce}.{signature}") is None  # extended expiry
    assert guard.session(f"{version}.{expiry}.other.{signature}") is None
    assert guard.session(cookie + "0") is None and guard.session("") is None and guard.session("garbage") is None
    other = make_guard("another-admin-key-0123456789")
    assert other.session(cookie) is None  # signed with another key


def test_an_action_needs_the_sessions_own_csrf_token_and_the_same_origin():
    guard = make_guard()
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


def test_a_copy_of_the_cookie_proves_nothing_once_the_session_is_logged_out_on_any_instance():
    sessions = Sessions()  # what the instances share
    here, there = make_guard(sessions=sessions), make_guard(sessions=sessions)
    session, cookie = here.new_session()
    copied = str(cookie)
    token = here.csrf_token(session)
    assert there.session(copied) == session and there.check_action(copied, token, SAME, HOST) == session
    here.end_session(session)
    assert here.session(cookie) is None and there.session(copied) is None
    with pytest.raises(Refused, match="log in"):
        there.check_action(copied, token, SAME, HOST)
    _, other = here.new_session()  # other sessions live on
    assert there.session(other) is not None


def test_an_admin_key_without_a_session_store_is_refused():
    with pytest.raises(ConfigurationError, match="session store"):
        Guard(KEY)
    assert not Guard(None).actions_enabled  # read-only needs none


@pytest.mark.parametrize("host, name", [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.1:8080", "127.0.0.1"), ("localhost:8080", "localhost"),
    ("LocalHost:8080", "localhost"), ("localhost.:8080", "localhost"), ("[::1]", "[::1]"), ("[::1]:8080", "[::1]"),
    ("[0:0:0:0:0:0:0:1]:8080", "[::1]"), ("Ops.Example.COM", "ops.example.com"), ("127.0.0.1:", "127.0.0.1"),
    ("127.0.0.1.attacker.example:8080", "127.0.0.1.attacker.example"),
    # not a host[:port]: user info, paths, bare IPv6, stray characters, two ports, a non-numeric port
    ("attacker.example@127.0.0.1", None), ("127.0.0.1@attacker.example", None), ("localhost:8080@attacker.example", None),
    ("127.0.0.1/evil", None), ("127.0.0.1\\evil", None), ("::1", None), ("[::1", None), ("[::1]x", None),
    ("[not-ipv6]", None), ("127.0.0.1:8080:8080", None), ("127.0.0.1:80a", None), ("127.0.0.1:123456", None),
    ("127.0.0.1 ", None), (" localhost", None), ("local host", None), ("localhost\x00", None), ("", None),
    (None, None), ("xn--caf-dma.example", "xn--caf-dma.example"), ("café.example", None), ("a..b", None),
])
def test_host_name_of_a_host_header(host, name):
    assert host_name(host) == name


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "127.0.0.1", "localhost:8080", "LOCALHOST", "[::1]:8080",
                                  "[::1]", "dash.internal:8080", "ops.example.com", "OPS.example.com:443",
                                  "myapp.azurewebsites.net"])
def test_the_dashboard_answers_its_own_names(host):
    names = HostNames(["dash.internal", "myapp.azurewebsites.net:7071"], ["https://ops.example.com"])
    assert names.allows(host)


@pytest.mark.parametrize("host", ["attacker.example:8080", "attacker.example", "127.0.0.1.attacker.example",
                                  "localhost.attacker.example:8080", "attacker.example@127.0.0.1",
                                  "127.0.0.1@attacker.example", "attacker.example:8080@localhost", "127.0.0.2:8080",
                                  "ops.example.com.attacker.example", "[::2]:8080", "::1", "", None])
def test_the_dashboard_refuses_any_other_host(host):
    names = HostNames(["dash.internal"], ["https://ops.example.com"])
    assert not names.allows(host)


def test_configured_host_names_take_the_forms_they_are_given_in():
    assert HostNames(["::1", "0.0.0.0", "My-Box", "localhost:7071"]).names == {
        "127.0.0.1", "localhost", "[::1]", "0.0.0.0", "my-box"}
    assert "[::]" in HostNames(["::"]).names
    assert "ops.example.com" in HostNames(origins=["https://OPS.example.com:8443"]).names
    with pytest.raises(ConfigurationError, match="not a host name"):
        HostNames(["evil@127.0.0.1"])
    with pytest.raises(ConfigurationError, match="not a host name"):
        HostNames(origins=["https://user@ops.example.com"])
    with pytest.raises(ConfigurationError, match="scheme and host"):
        HostNames(origins=["ops.example.com"])


@pytest.mark.parametrize("headers, scheme, secure", [
    ({}, "http", False),
    ({}, "https", True),
    ({"X-Forwarded-Proto": "https"}, "http", True),
    ({"x-forwarded-proto": "HTTPS, http"}, "http", True),
    ({"X-Forwarded-Proto": "http"}, "http", False),
    ({"Origin": "https://ops.example.com"}, "http", True),
    ({"Origin": "http://127.0.0.1:8080"}, "http", False),
    ({"Referer": "https://ops.example.com/login"}, "http", True),
])
def test_the_cookie_is_secure_when_the_browser_came_over_https(headers, scheme, secure):
    assert served_over_https(headers, scheme) is secure


OBJECT_ID = "5b5450db-eb26-4c1a-981c-ba1d25f0483d"


def principal_header(claims: list[dict] | None = None, **fields) -> str:
    """``x-ms-client-principal`` as App Service Authentication sends it: base64 of its JSON."""
    info = {"auth_typ": "aad", "claims": claims if claims is not None else [
        {"typ": "aud", "val": "0d6b9c4e-8a4a-4c7b-9a57-3f1c3c1f2a10"},
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": OBJECT_ID},
        {"typ": "name", "val": "Ops Person"},
        {"typ": "preferred_username", "val": "ops@contoso.com"},
        {"typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress", "val": "ops@contoso.com"},
        {"typ": "groups", "val": "f08bbbea-b793-4a36-a5fc-136c18d8aa8f"},
        {"typ": "groups", "val": "14a87ffa-0801-49bf-a515-3d259a2a9f8f"}],
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role", **fields}
    return base64.b64encode(json.dumps(info).encode()).decode()


def test_the_entra_principal_is_read_from_the_base64_json_header():
    principal = client_principal(principal_header())
    assert principal == Principal("ops@contoso.com", OBJECT_ID)  # name_typ's claim, not "name"
    assert principal.identities() == {"ops@contoso.com", OBJECT_ID}
    unpadded = principal_header().rstrip("=")
    assert client_principal(unpadded) == principal
    # Without a name_typ, the standard name claim names the user.
    only_name = principal_header([{"typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
                                   "val": "ops@contoso.com"}], name_typ=None)
    assert client_principal(only_name) == Principal("ops@contoso.com", None)


@pytest.mark.parametrize("value, error, message", [
    (None, SignInRequired, "sign-in required"),
    ("", SignInRequired, "sign-in required"),
    ("not base64!", SignInRequired, "not base64-encoded JSON"),
    (base64.b64encode(b"{not json").decode(), SignInRequired, "not base64-encoded JSON"),
    (base64.b64encode(b"\xff\xfe").decode(), SignInRequired, "not base64-encoded JSON"),
    (base64.b64encode(b'["a list"]').decode(), SignInRequired, "no claims list"),
    (base64.b64encode(b'{"auth_typ": "aad"}').decode(), SignInRequired, "no claims list"),
    (base64.b64encode(b'{"auth_typ": "aad", "claims": [{"typ": "aud", "val": "x"}, 7]}').decode(), SignInRequired,
     "names no user"),
    (principal_header(auth_typ="google"), Refused, "not Microsoft Entra ID"),
])
def test_a_missing_malformed_or_foreign_principal_header_is_refused_clearly(value, error, message):
    with pytest.raises(error, match=message):
        client_principal(value)


@pytest.mark.parametrize("value, enabled", [("True", True), ("true", True), (" TRUE ", True), ("False", False),
                                            ("false", False), ("", False), ("1", False), (None, False)])
def test_app_service_authentication_is_on_only_when_website_auth_enabled_is_true(value, enabled):
    environ = {} if value is None else {"WEBSITE_AUTH_ENABLED": value}
    assert app_service_auth_enabled(environ) is enabled
    if not enabled:
        with pytest.raises(ConfigurationError, match="App Service Authentication is off"):
            require_app_service_auth(environ)


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
