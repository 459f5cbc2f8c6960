"""Who may do what on the dashboard: read freely, act only with the operator's admin key.

Reading needs nothing beyond reaching the dashboard (bind it to 127.0.0.1, or put it behind
the Functions host's admin key or Entra ID sign-in). Actions (requeue, purge) need a
session opened by posting the admin key to the login form:

- the key is compared with ``hmac.compare_digest`` (of digests, so its length is not timed);
- the session cookie is ``v1.<expiry>.<nonce>.<signature>``, signed with a key derived from
  the admin key (no server-side state, so several Functions instances agree); it is
  HttpOnly and SameSite=Strict, and never holds the admin key itself;
- every action is a POST that must carry the session's CSRF token (an HMAC of the nonce) in
  its form, and an ``Origin`` (or, lacking one, ``Referer``) of the dashboard's own origin.

Anything else is refused with 403 before storage is touched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ..secrets import remember

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
    """Signs and checks sessions and CSRF tokens for one admin key (None: actions are off)."""

    def __init__(self, admin_key: str | None, *, session_s: int = SESSION_S, clock=time.time) -> None:
        self.admin_key = check_admin_key(admin_key)
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
        body = f"v1.{session.expires_at}.{session.nonce}"
        return session, f"{body}.{self._sign(body)}"

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie value proves, or None (missing, forged, expired, or actions off)."""
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
