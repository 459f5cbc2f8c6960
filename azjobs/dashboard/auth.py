"""Who may do what on the dashboard: read freely, act only with the operator's admin key.

Reading needs nothing beyond reaching the dashboard (bind it to 127.0.0.1, or put it behind
the Functions host's admin key or Entra ID sign-in), by one of the names it answers to
(``HostNames``: a page fetched under any other ``Host`` is a DNS-rebinding attempt). Actions
(requeue, purge) need a session opened by posting the admin key to the login form:

- the key is compared with ``hmac.compare_digest`` (of digests, so its length is not timed);
- the session cookie is ``v1.<expiry>.<nonce>.<signature>``, signed with a key derived from
  the admin key; it is HttpOnly and SameSite=Strict, and never holds the admin key itself;
- a session is alive only while its nonce is in the ``SessionStore`` (a table every instance
  reads, ``azjobs.dashboard.sessions``): logging out deletes it, so a copy of the cookie stops
  working everywhere at once;
- every action is a POST that must carry the session's CSRF token (an HMAC of the nonce) in
  its form, and an ``Origin`` (or, lacking one, ``Referer``) of the dashboard's own origin.

Anything else is refused with 403 before storage is touched.

With Entra ID sign-in (``client_principal``) the user comes from the ``x-ms-client-principal``
header that App Service Authentication sets (and strips from incoming requests); it is
trusted only when ``WEBSITE_AUTH_ENABLED`` says that feature is on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ..model.secrets import remember

COOKIE = "azjobs_dashboard_session"
SESSION_S = 8 * 3600  # how long a login lasts
MIN_KEY_CHARS = 16
KEY_ENV = "AZJOBS_DASHBOARD_KEY"  # the environment variable / app setting holding the admin key


@dataclass(frozen=True)
class Session:
    nonce: str
    expires_at: int


class Refused(Exception):
    """An action refused before anything was changed; ``str`` says why (safe to show)."""


class SessionStore(Protocol):
    """Where live sessions are kept (by nonce), seen by every instance serving the dashboard."""

    def add(self, nonce: str, expires_at: int) -> None: ...

    def alive(self, nonce: str) -> bool: ...

    def remove(self, nonce: str) -> None: ...


def check_admin_key(key: str | None) -> str | None:
    """The admin key, checked: None (read-only) or at least MIN_KEY_CHARS characters.

    Raises ConfigurationError for a key too short to resist guessing.
    """
    if key is None or key == "":
        return None
    if len(key) < MIN_KEY_CHARS:
        raise ConfigurationError(f"the dashboard admin key is too short ({len(key)} characters; at least "
                                 f"{MIN_KEY_CHARS}): generate one with `python -c \"import secrets; "
                                 "print(secrets.token_urlsafe(32))\"`")
    remember([key])  # hidden wherever azjobs writes text
    return key


class Guard:
    """Signs and checks sessions and CSRF tokens for one admin key (None: actions are off).

    ``sessions`` keeps the live sessions (required with an admin key): a signed cookie whose
    nonce is not there (logged out) proves nothing. Its calls do storage I/O: call ``session``,
    ``new_session``, ``end_session`` and ``check_action`` from a worker thread in async code.
    """

    def __init__(self, admin_key: str | None, sessions: SessionStore | None = None, *, session_s: int = SESSION_S,
                 clock=time.time) -> None:
        self.admin_key = check_admin_key(admin_key)
        if self.admin_key is not None and sessions is None:
            raise ConfigurationError("the dashboard's admin key needs a session store (where logins are kept, so a "
                                     "logout ends the session everywhere)")
        self.sessions = sessions
        self.session_s = session_s
        self.clock = clock
        self._signing = (hmac.new(self.admin_key.encode("utf-8"), b"azjobs-dashboard-session-v1", hashlib.sha256)
                         .digest() if self.admin_key else None)

    @property
    def actions_enabled(self) -> bool:
        return self.admin_key is not None

    def key_matches(self, offered: str | None) -> bool:
        if self.admin_key is None or not offered:
            return False
        return hmac.compare_digest(hashlib.sha256(offered.encode("utf-8")).digest(),
                                   hashlib.sha256(self.admin_key.encode("utf-8")).digest())

    def _sign(self, text: str) -> str:
        assert self._signing is not None
        return hmac.new(self._signing, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def new_session(self) -> tuple[Session, str]:
        """A fresh session and its cookie value."""
        if self._signing is None:
            raise Refused("actions are off: the dashboard has no admin key")
        session = Session(secrets.token_urlsafe(18), int(self.clock()) + self.session_s)
        assert self.sessions is not None
        self.sessions.add(session.nonce, session.expires_at)
        body = f"v1.{session.expires_at}.{session.nonce}"
        return session, f"{body}.{self._sign(body)}"

    def end_session(self, session: Session) -> None:
        """Log ``session`` out: its cookie (and every copy of it) proves nothing from now on, on every instance."""
        assert self.sessions is not None
        self.sessions.remove(session.nonce)

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie value proves, or None (missing, forged, expired, logged out, or actions off)."""
        if self._signing is None or not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != "v1":
            return None
        body = ".".join(parts[:3])
        if not hmac.compare_digest(self._sign(body), parts[3]):
            return None
        try:
            expires_at = int(parts[1])
        except ValueError:
            return None
        if expires_at <= self.clock():
            return None
        assert self.sessions is not None
        if not self.sessions.alive(parts[2]):  # logged out (here or on another instance)
            return None
        return Session(parts[2], expires_at)

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf.{session.nonce}")

    def check_action(self, cookie: str | None, token: str | None, headers: Mapping[str, str], host: str | None,
                     extra_origins: tuple[str, ...] = ()) -> Session:
        """The session allowed to act, or Refused saying why (nothing has been changed)."""
        if self._signing is None:
            raise Refused("actions are off: the dashboard was started without an admin key (read-only)")
        check_origin(headers, host, extra_origins)
        session = self.session(cookie)
        if session is None:
            raise Refused("log in with the admin key to do this")
        if not token or not hmac.compare_digest(self.csrf_token(session), token):
            raise Refused("the form's CSRF token is missing or wrong: reload the page and try again")
        return session


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(headers: Mapping[str, str], host: str | None, extra_origins: tuple[str, ...] = ()) -> None:
    """Raise Refused unless the request came from a page of this dashboard.

    The browser's ``Origin`` must name the host the request was sent to (or one of
    ``extra_origins``); without an ``Origin``, the ``Referer``'s origin is used; a POST
    with neither is refused. ``Sec-Fetch-Site: cross-site`` is refused outright.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("sec-fetch-site", "").lower() == "cross-site":
        raise Refused("cross-site request refused")
    origin = lowered.get("origin")
    if origin is None or origin == "null":
        referer = lowered.get("referer")
        origin = _origin_of(referer) if referer else None
    if origin is None:
        raise Refused("the request has no Origin or Referer header: actions are accepted only from the dashboard's "
                      "own pages")
    origin = origin.lower().rstrip("/")
    allowed = {o.lower().rstrip("/") for o in extra_origins}
    netloc = urlsplit(origin).netloc
    if (host and netloc == host.lower()) or origin in allowed:
        return
    raise Refused(f"request from another origin ({origin}) refused")


def served_over_https(headers: Mapping[str, str], scheme: str) -> bool:
    """Whether the browser reached the dashboard over https (then its cookie is ``Secure``).

    True when the request itself is https, when a TLS-terminating proxy says so
    (``X-Forwarded-Proto: https``), or when the page that posted it is an https origin (an
    ``--origin https://...`` behind a proxy that sends neither). A client that lies here only
    makes its own cookie stricter.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if scheme == "https" or lowered.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https":
        return True
    origin = lowered.get("origin")
    if origin is None or origin == "null":
        origin = _origin_of(lowered.get("referer") or "")
    return bool(origin) and origin.lower().startswith("https://")


# -- which Host names the dashboard answers to ----------------------------------------------
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_REG_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def host_name(value: str | None) -> str | None:
    """The name in a ``Host`` header value: lowercased, port dropped, IP addresses in their usual
    form (IPv6 in brackets), one trailing dot dropped; None when it is not a valid ``host[:port]``
    (no user info, path, spaces, bare IPv6 or stray characters)."""
    if not value:
        return None
    value = value.lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        rest = value[end + 1:]
        try:
            address = ipaddress.IPv6Address(value[1:end])
        except ValueError:
            return None
        name = f"[{address.compressed}]"
    else:
        name, colon, rest = value.partition(":")
        rest = colon + rest
        try:
            name = str(ipaddress.IPv4Address(name))
        except ValueError:
            name = name[:-1] if name.endswith(".") else name
            if not _REG_NAME.fullmatch(name):
                return None
    if rest and not re.fullmatch(r":[0-9]{0,5}", rest):
        return None
    return name


def configured_name(value: str) -> str:
    """A name given in the configuration (``--host``, ``WEBSITE_HOSTNAME``, an origin's host), as
    ``host_name`` gives it; a bare IPv6 address is accepted. ConfigurationError when it is no host name."""
    text = value.strip()
    try:
        return f"[{ipaddress.IPv6Address(text).compressed}]"
    except ValueError:
        pass
    name = host_name(text)
    if name is None:
        raise ConfigurationError(f"{value!r} is not a host name (give a name or an IP address, optionally with :port)")
    return name


class HostNames:
    """The ``Host`` names the dashboard answers to: this machine's loopback names, the names it
    was told (``--host``, ``WEBSITE_HOSTNAME``) and the hosts of its extra origins.

    A DNS-rebinding page reaches the dashboard's address under the attacker's own name and
    reads it as same-origin; refusing every other ``Host`` takes that away. Ports are not
    compared (the connection reached the dashboard's port anyway). ``X-Forwarded-Host`` is
    never consulted: any client can send it.
    """

    def __init__(self, names: Iterable[str] = (), origins: Iterable[str] = ()) -> None:
        allowed = set(LOOPBACK_NAMES)
        allowed.update(configured_name(n) for n in names if n and n.strip())
        for origin in origins:
            netloc = urlsplit(origin.strip()).netloc
            if not netloc:
                raise ConfigurationError(f"origin {origin!r}: give scheme and host, like https://ops.example.com")
            allowed.add(configured_name(netloc))
        self.names = frozenset(allowed)

    def allows(self, host: str | None) -> bool:
        name = host_name(host)
        return name is not None and name in self.names


# -- Entra ID sign-in through App Service Authentication ------------------------------------
AUTH_ENABLED_ENV = "WEBSITE_AUTH_ENABLED"  # "True" when App Service Authentication is on
PRINCIPAL_HEADER = "x-ms-client-principal"
NAME_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")


class SignInRequired(Exception):
    """No usable signed-in user on the request (a 401); ``str`` says why (safe to show)."""


@dataclass(frozen=True)
class Principal:
    """The user App Service Authentication signed in: the name claim (``name_typ``) and the object id."""

    name: str | None
    object_id: str | None

    @property
    def shown(self) -> str:
        return self.name or self.object_id or "?"

    def identities(self) -> set[str]:
        return {v.lower() for v in (self.name, self.object_id) if v}


def app_service_auth_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether App Service Authentication (Easy Auth) is on for this app: ``WEBSITE_AUTH_ENABLED`` is true.

    Only then does the platform strip ``x-ms-client-principal*`` from incoming requests and set
    them itself; without it anyone can send them.
    """
    value = (os.environ if environ is None else environ).get(AUTH_ENABLED_ENV, "")
    return value.strip().lower() == "true"


def app_service_auth_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the Entra ID dashboard cannot trust the sign-in headers (App Service Authentication is off), or None."""
    if app_service_auth_enabled(environ):
        return None
    value = (os.environ if environ is None else environ).get(AUTH_ENABLED_ENV)
    said = "is not set" if value is None else f"is {value!r}"
    return (f"the dashboard requires Entra ID sign-in, but App Service Authentication is off ({AUTH_ENABLED_ENV} "
            f"{said}): without it anyone can send the sign-in headers. Turn on Authentication with Microsoft "
            "(Entra ID) and \"require authentication\" for the function app; the dashboard refuses to serve until then")


def require_app_service_auth(environ: Mapping[str, str] | None = None) -> None:
    """ConfigurationError unless App Service Authentication is on (see ``app_service_auth_enabled``)."""
    problem = app_service_auth_problem(environ)
    if problem is not None:
        raise ConfigurationError(problem)


def client_principal(value: str | None) -> Principal:
    """The user in App Service Authentication's ``x-ms-client-principal`` header (base64 of JSON with
    ``auth_typ``, ``claims`` [{``typ``, ``val``}], ``name_typ``).

    SignInRequired (401) when the header is missing or not that; Refused (403) when the user
    signed in with another provider than Entra ID (``aad``).
    """
    if not value:
        raise SignInRequired("sign-in required: this dashboard expects App Service Authentication (Entra ID) in "
                             "front of it, and the request carries no signed-in user")
    try:
        raw = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), validate=True)
        info = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError):  # not base64, not UTF-8, not JSON
        raise SignInRequired(f"the {PRINCIPAL_HEADER} header is not base64-encoded JSON: sign in again") from None
    claims = info.get("claims") if isinstance(info, dict) else None
    if not isinstance(claims, list):
        raise SignInRequired(f"the {PRINCIPAL_HEADER} header has no claims list: sign in again")
    provider = info.get("auth_typ")
    if not isinstance(provider, str) or provider.lower() != "aad":
        raise Refused(f"signed in with {provider!r}, not Microsoft Entra ID (aad)")
    name_typ = info.get("name_typ") if isinstance(info.get("name_typ"), str) else NAME_CLAIM
    pairs = [(c.get("typ"), c.get("val")) for c in claims if isinstance(c, dict)]
    pairs = [(t, v) for t, v in pairs if isinstance(t, str) and isinstance(v, str) and v]
    name = next((v for t, v in pairs if t == name_typ), None)
    object_id = next((v for t, v in pairs if t in OBJECT_ID_CLAIMS), None)
    if name is None and object_id is None:
        raise SignInRequired(f"the {PRINCIPAL_HEADER} header names no user (no {name_typ} or object id claim)")
    return Principal(name, object_id)
