"""The dashboard's state and its conventions for every request: the Host check, security headers, and
``page``, the one way a page handler answers errors (404 bad queue, 403 refused, 401 not signed in,
503 storage). The page modules (``app``, ``jobs``, ``workflows``) all build on it."""

from __future__ import annotations

import functools
import secrets as _secrets
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..errors import AzjobsError, ConfigurationError
from ..model.secrets import get_logger, redact
from . import pages
from .auth import (
    COOKIE,
    PRINCIPAL_HEADER,
    Guard,
    HostNames,
    Principal,
    Refused,
    Session,
    SignInRequired,
    client_principal,
)
from .history import DepthHistory
from .storage import StorageReader

log = get_logger("azjobs.dashboard")

Handler = Callable[["Dashboard", Request], Awaitable[Response]]


class Dashboard:
    """The dashboard's state: storage reader, depth history and the action guard."""

    def __init__(self, reader: StorageReader, guard: Guard, history: DepthHistory, *, base_path: str = "",
                 require_principal: bool = False, allowed_principals: Iterable[str] | None = None,
                 allowed_origins: Iterable[str] = (), state_store: Any = None,
                 workflows_table: str | None = None) -> None:
        self.reader = reader
        self.guard = guard
        self.history = history
        self.base = base_path.rstrip("/")
        self.require_principal = require_principal
        self.allowed_principals = {p.lower() for p in allowed_principals} if allowed_principals else None
        self.allowed_origins = tuple(allowed_origins)
        self.state_store = state_store
        self.workflows_table = workflows_table
        self._workflow_store = None

    @property
    def workflow_store(self):
        """The workflow history store (``azjobs.workflows.history``), built at first use."""
        if self._workflow_store is None:
            from ..storage.http import table_service
            from ..workflows.history import HistoryStore

            self._workflow_store = HistoryStore(table_service(self.reader.client.connection), self.workflows_table)
        return self._workflow_store

    # -- request plumbing -------------------------------------------------------------
    def principal(self, request: Request) -> Principal | None:
        """The signed-in Entra ID user when sign-in is required (None otherwise: no header is read).

        SignInRequired (401) without a readable ``x-ms-client-principal``; Refused (403) for a
        user outside ``allowed_principals`` or signed in with another provider.
        """
        if not self.require_principal:
            return None
        principal = client_principal(request.headers.get(PRINCIPAL_HEADER))
        if self.allowed_principals is not None and not principal.identities() & self.allowed_principals:
            raise Refused(f"{principal.shown} is not allowed to use this dashboard")
        return principal

    async def resolve_session(self, request: Request) -> None:
        """Look the request's session up once (a table read when it carries a signed cookie): ``context`` uses it."""
        cookie = request.cookies.get(COOKIE)
        request.state.session = await run_in_threadpool(self.guard.session, cookie) if cookie else None

    def context(self, request: Request) -> pages.Context:
        session = getattr(request.state, "session", None)
        principal = getattr(request.state, "principal", None)
        return pages.Context(
            base=self.base, account=self.reader.client.connection.account_name or "?",
            actions_enabled=self.guard.actions_enabled, logged_in=session is not None,
            csrf=self.guard.csrf_token(session) if session else None, nonce=_secrets.token_urlsafe(16),
            principal=principal.shown if principal else None, state_enabled=self.state_store is not None)

    def respond(self, ctx: pages.Context, body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status, headers=security_headers(ctx.nonce))

    def looked_up(self, request: Request, section: str) -> Response | None:
        """A lookup box's ``?id=``, sent on to that id's page under ``section`` (None without one)."""
        wanted = request.query_params.get("id", "").strip()
        if not wanted:
            return None
        return RedirectResponse(f"{self.base}{section}/{pages.q(wanted)}", status_code=303)

    async def sample(self) -> list:
        depths = await run_in_threadpool(self.reader.depths)
        if self.history.due():
            self.history.add(depths)
        return depths

    async def form(self, request: Request) -> dict[str, str]:
        """The posted urlencoded form (first value of each field)."""
        body = (await request.body()).decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    async def check_action(self, request: Request) -> Session:
        """The session allowed to act for this request; Refused (403) otherwise, before anything changes."""
        form = await self.form(request)
        return await run_in_threadpool(self.guard.check_action, request.cookies.get(COOKIE), form.get("csrf"),
                                       request.headers, request.headers.get("host"), self.allowed_origins)


def security_headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
                                    "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
                                    "frame-ancestors 'none'; base-uri 'none'"),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


class HostCheck:
    """ASGI middleware: 400 for a request whose ``Host`` is not one of ``names`` (DNS rebinding), before routing."""

    def __init__(self, app, names: HostNames) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            hosts = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"host"]
            host = hosts[0] if len(hosts) == 1 else None  # none, or two (ambiguous): refused
            if not self.names.allows(host):
                shown = redact(repr(host if len(hosts) < 2 else hosts)[:200])
                log.warning("dashboard refused Host %s on %s (it answers to %s)", shown, scope.get("path"),
                            ", ".join(sorted(self.names.names)), extra={"action": "dashboard_host_refused"})
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = (f"400 Bad Request: this dashboard does not answer to Host {shown} (a guard against DNS "
                        "rebinding). Use the address it was started with, or allow the name: --origin for "
                        "azjobs dashboard, allowed_origins for create_app and the Functions blueprint.\n")
                response = Response(body, status_code=400, media_type="text/plain; charset=utf-8",
                                    headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """One error convention for every page: 404 bad queue, 403 refused, 401 not signed in, 503 storage."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        dash: Dashboard = request.app.state.dashboard
        try:
            # raises when sign-in is required and missing or unreadable, or the user is not allowed
            request.state.principal = dash.principal(request)
        except SignInRequired as exc:
            return _plain(dash, request, 401, str(exc))
        except Refused as exc:
            return _plain(dash, request, 403, str(exc))
        try:
            await dash.resolve_session(request)
            return await handler(dash, request)
        except Refused as exc:
            log.warning("dashboard refused %s %s: %s", request.method, request.url.path, exc,
                        extra={"action": "dashboard_refused", "method": request.method})
            return _plain(dash, request, 403, f"refused: {exc}")
        except ConfigurationError as exc:
            return _plain(dash, request, 404, str(exc))
        except (AzjobsError, Exception) as exc:
            from azure.core.exceptions import AzureError

            if isinstance(exc, AzureError):
                text = dash.reader.error_text(exc)
            elif isinstance(exc, AzjobsError):
                text = str(exc)
            else:
                raise
            log.warning("dashboard storage error on %s: %s", request.url.path, text,
                        extra={"action": "dashboard_storage_error"})
            return _plain(dash, request, 503, text)

    return endpoint


def _plain(dash: Dashboard, request: Request, status: int, message: str) -> HTMLResponse:
    try:
        ctx = dash.context(request)
    except Exception:  # the connection itself is broken: still answer
        ctx = pages.Context(dash.base, "?", dash.guard.actions_enabled, False, None, _secrets.token_urlsafe(16))
    return dash.respond(ctx, pages.error_page(ctx, status, message), status)


__all__ = ["Dashboard", "HostCheck", "page", "security_headers"]
