"""The dashboard as an HTTP-triggered Azure Function in the azjobs function app.

    app.register_functions(azjobs.dashboard.blueprint())             # the host's admin key
    app.register_functions(azjobs.dashboard.blueprint(entra=True))   # Entra ID sign-in

One function (``azjobs_dashboard``) with the route ``dashboard/{*path}`` hands each request
to the ASGI app through ``azure.functions.AsgiMiddleware``; the pages are then at
``https://<app>.azurewebsites.net/api/dashboard/``.

- Default: ``auth_level=ADMIN``: the host answers 401 to any request without the app's
  master key (``x-functions-key`` header), before azjobs runs. Use it through something
  that adds the header (API Management, a reverse proxy, ``curl``); a ``?code=`` in a
  browser's URL lands in its history, so prefer Entra ID for people.
- ``entra=True``: ``auth_level=ANONYMOUS`` at the host, and the app refuses (401) any
  request without the signed-in user that App Service Authentication (Easy Auth) with
  Entra ID puts in the ``x-ms-client-principal`` header; turn it on with "require
  authentication", so the platform lets only signed-in requests through and sets that
  header itself. While ``WEBSITE_AUTH_ENABLED`` does not say it is on, every request is
  answered 503 (anyone could send the header), and an error is logged when the blueprint
  is built. ``allowed_principals`` (or the app setting ``AZJOBS_DASHBOARD_PRINCIPALS``,
  comma-separated names or object ids) narrows who may read.

Either way, requeue and purge also need the dashboard's own admin key, from the app
setting ``AZJOBS_DASHBOARD_KEY`` (none: read-only). The dashboard answers only requests
whose ``Host`` is ``WEBSITE_HOSTNAME`` (or localhost), or the host of one of
``allowed_origins`` (or the app setting ``AZJOBS_DASHBOARD_ORIGINS``, comma-separated: a
custom domain). Nothing touches storage or reads settings until the first request, so
indexing the app needs neither.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable, Optional, Union

import azure.functions as func

from ..errors import ConfigurationError
from ..model.secrets import get_logger
from ..model.settings import parse_host_json
from ..storage.connection import DEFAULT_SETTING, resolve_connection
from .auth import KEY_ENV, app_service_auth_problem

log = get_logger("azjobs.dashboard")

PRINCIPALS_ENV = "AZJOBS_DASHBOARD_PRINCIPALS"
ORIGINS_ENV = "AZJOBS_DASHBOARD_ORIGINS"
HOSTNAME_ENV = "WEBSITE_HOSTNAME"  # the app's default host name, set by the platform (and by Core Tools)
FUNCTION_NAME = "azjobs_dashboard"


def _listed(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def route_prefix(host_json: Union[str, "os.PathLike[str]", None] = None) -> str:
    """The host's HTTP route prefix: host.json ``extensions.http.routePrefix``, default ``api``."""
    from ..functions.blueprint import host_json_path

    path = host_json_path(host_json)
    if path is None or not Path(path).is_file():
        return "api"
    data = parse_host_json(Path(path).read_text(encoding="utf-8-sig"))
    http = ((data or {}).get("extensions") or {}).get("http") or {}
    prefix = http.get("routePrefix", "api") if isinstance(http, dict) else "api"
    return str(prefix).strip("/")


class _LazyApp:
    """Builds the dashboard ASGI app at the first request (settings read then, as the host sets them)."""

    def __init__(self, **options) -> None:
        self._options = options
        self._app = None
        self._lock = threading.Lock()
        self._refusal_logged = False

    def get(self):
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from .app import create_app

                    options = dict(self._options)
                    setting = options.pop("connection")
                    key_setting = options.pop("admin_key_setting")
                    if options.get("state") is None:
                        from ..state import enabled

                        options["state"] = enabled()
                    principals = options.pop("allowed_principals")
                    from ..functions.blueprint import host_json_path

                    found = host_json_path(options.pop("host_json"))
                    options["host_json"] = str(found) if found is not None else None
                    if principals is None and os.environ.get(PRINCIPALS_ENV):
                        principals = _listed(os.environ[PRINCIPALS_ENV])
                    if options.get("allowed_origins") is None:
                        options["allowed_origins"] = _listed(os.environ.get(ORIGINS_ENV))
                    hostname = os.environ.get(HOSTNAME_ENV, "").strip()
                    self._app = create_app(resolve_connection(setting), admin_key=os.environ.get(key_setting) or None,
                                           allowed_principals=principals, background_sampling=False,
                                           allowed_hosts=[hostname] if hostname else [], **options)
        return self._app

    async def __call__(self, scope, receive, send):
        problem = app_service_auth_problem() if self._options.get("require_principal") else None
        if problem is not None and scope["type"] == "http":
            # 503 with the reason: the Entra ID dashboard does not serve while anyone could forge the sign-in header.
            from starlette.responses import PlainTextResponse

            if not self._refusal_logged:
                self._refusal_logged = True
                log.error("azjobs dashboard: %s", problem, extra={"action": "dashboard_auth_off"})
            response = PlainTextResponse(f"503 Service Unavailable: {problem}\n", status_code=503,
                                         headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
            await response(scope, receive, send)
            return
        await self.get()(scope, receive, send)


def blueprint(*, route: str = "dashboard", entra: bool = False, auth_level: Optional[func.AuthLevel] = None,
              allowed_principals: Optional[Iterable[str]] = None, connection: str = DEFAULT_SETTING,
              admin_key_setting: str = KEY_ENV, queues: Optional[Iterable[str]] = None,
              host_json: Union[str, "os.PathLike[str]", None] = None, prefix: Optional[str] = None,
              function_name: str = FUNCTION_NAME, state: Optional[bool] = None,
              allowed_origins: Optional[Iterable[str]] = None) -> func.Blueprint:
    """A Blueprint with one HTTP function serving the dashboard under ``/<prefix>/<route>/``.

    ``auth_level`` defaults to ADMIN, or ANONYMOUS with ``entra=True`` (the app then
    requires the Entra ID user, and App Service Authentication: ``WEBSITE_AUTH_ENABLED``).
    ANONYMOUS without ``entra`` is refused: the pages would be open to the internet.
    ``state``: show the jobs pages (default: when the ``AZJOBS_STATE`` app setting is on).
    ``allowed_origins``: origins besides ``https://$WEBSITE_HOSTNAME`` the dashboard is
    served at, such as a custom domain (default: the app setting ``AZJOBS_DASHBOARD_ORIGINS``).
    """
    level = auth_level if auth_level is not None else (func.AuthLevel.ANONYMOUS if entra else func.AuthLevel.ADMIN)
    if level == func.AuthLevel.ANONYMOUS and not entra:
        raise ConfigurationError("an anonymous dashboard would be open to anyone: use the default "
                                 "auth_level=ADMIN, or entra=True with App Service Authentication")
    problem = app_service_auth_problem() if entra else None
    if problem is not None:  # said at start-up; not raised: the function app (its job triggers too) must still load
        log.error("azjobs dashboard: %s", problem, extra={"action": "dashboard_auth_off"})
    route = route.strip("/")
    base_prefix = (prefix if prefix is not None else route_prefix(host_json)).strip("/")
    base_path = "/" + "/".join(p for p in (base_prefix, route) if p)
    lazy = _LazyApp(connection=connection, admin_key_setting=admin_key_setting, allowed_principals=allowed_principals,
                    queues=list(queues) if queues else None, base_path=base_path,
                    host_json=host_json, require_principal=entra, state=state,
                    allowed_origins=list(allowed_origins) if allowed_origins is not None else None)
    middleware = func.AsgiMiddleware(lazy)
    bp = func.Blueprint()

    @bp.function_name(name=function_name)
    @bp.route(route=route + "/{*path}", methods=[func.HttpMethod.GET, func.HttpMethod.POST], auth_level=level)
    async def dashboard(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return await middleware.handle_async(req, context)

    return bp
