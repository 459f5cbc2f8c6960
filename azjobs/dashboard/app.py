"""The dashboard as an ASGI (Starlette) app: ``create_app(...)``.

Pages: the queues with their depths and a depth-over-time chart; one queue with its poison
messages; one poison message with its traceback; confirmation pages for requeue and purge
(their POSTs need the admin-key session, its CSRF token and a same-origin request, see
``auth``); the jobs of the state store when one is given; and a workflow's status from the
worker's workflow history (``workflows``). Every request, to a page or not, is answered 400
unless its ``Host`` is one the dashboard answers to (``auth.HostNames``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Iterable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from ..errors import ConfigurationError
from ..model.secrets import describe, get_logger
from ..model.settings import QueueSettings
from ..storage.client import Client
from ..storage.connection import Connection, resolve_connection
from . import pages
from .auth import (
    COOKIE,
    Guard,
    HostNames,
    check_origin,
    require_app_service_auth,
    served_over_https,
)
from .context import Dashboard, HostCheck, _plain, page
from .history import DEFAULT_INTERVAL_S, DepthHistory
from .sessions import TableSessions
from .storage import StorageReader

log = get_logger("azjobs.dashboard")

REFRESH_S = 5.0














# -- pages -------------------------------------------------------------------------------
@page
async def overview(dash: Dashboard, request: Request) -> Response:
    ctx = dash.context(request)
    depths = await dash.sample()
    throttled = await run_in_threadpool(dash.reader.throttled)
    return dash.respond(ctx, pages.overview(ctx, depths, dash.history, REFRESH_S, throttled=throttled))


@page
async def queue_detail(dash: Dashboard, request: Request) -> Response:
    ctx = dash.context(request)
    queue = dash.reader.allowed(request.path_params["queue"])
    depth = await run_in_threadpool(dash.reader.depth, queue)
    messages = await run_in_threadpool(dash.reader.poison_messages, queue)
    return dash.respond(ctx, pages.queue_page(ctx, depth, messages, dash.history))


@page
async def poison_detail(dash: Dashboard, request: Request) -> Response:
    ctx = dash.context(request)
    queue = dash.reader.allowed(request.path_params["queue"])
    wanted = request.path_params["id"]

    def load():
        message = dash.reader.poison_message(queue, wanted)
        return (message, dash.reader.poison(queue).full(message)) if message else (None, None)

    message, record = await run_in_threadpool(load)
    if message is None:
        return _plain(dash, request, 404, f"no poison message {wanted} among the first 32 of {queue}-poison")
    return dash.respond(ctx, pages.poison_page(ctx, queue, message, record))


@page
async def requeue_one(dash: Dashboard, request: Request) -> Response:
    queue = dash.reader.allowed(request.path_params["queue"])
    wanted = request.path_params["id"]
    path = f"/queues/{pages.q(queue)}/poison/{pages.q(wanted)}/requeue"
    if request.method == "POST":
        await dash.check_action(request)
        report = await run_in_threadpool(dash.reader.requeue, queue, [wanted])
        return _report(dash, request, queue, report)
    ctx = dash.context(request)
    question = (f"Send poison message <code>{pages.text(wanted)}</code> back to queue <b>{pages.text(queue)}</b> "
                "with its attempts reset? It is deleted from the poison queue once its copy is on the queue.")
    return dash.respond(ctx, pages.confirm_page(ctx, "Requeue a poison message", question, path, "Yes, requeue it",
                                                f"/queues/{pages.q(queue)}/poison/{pages.q(wanted)}"))


@page
async def requeue_all(dash: Dashboard, request: Request) -> Response:
    queue = dash.reader.allowed(request.path_params["queue"])
    path = f"/queues/{pages.q(queue)}/poison/requeue-all"
    if request.method == "POST":
        await dash.check_action(request)
        report = await run_in_threadpool(dash.reader.requeue, queue, None)
        return _report(dash, request, queue, report)
    ctx = dash.context(request)
    depth = await run_in_threadpool(dash.reader.depth, queue)
    question = (f"Send every poison message of <b>{pages.text(queue)}</b> (about {depth.poison_depth or 0}) back to "
                "the queue with attempts reset?")
    return dash.respond(ctx, pages.confirm_page(ctx, "Requeue all poison messages", question, path,
                                                "Yes, requeue them all", f"/queues/{pages.q(queue)}"))


@page
async def purge(dash: Dashboard, request: Request) -> Response:
    queue = dash.reader.allowed(request.path_params["queue"])
    path = f"/queues/{pages.q(queue)}/poison/purge"
    if request.method == "POST":
        await dash.check_action(request)
        deleted = await run_in_threadpool(dash.reader.purge, queue)
        ctx = dash.context(request)
        return dash.respond(ctx, pages.result_page(ctx, "Purged", [f"deleted {deleted} message(s) from {queue}-poison"],
                                                   f"/queues/{pages.q(queue)}", f"Back to {queue}"))
    ctx = dash.context(request)
    depth = await run_in_threadpool(dash.reader.depth, queue)
    question = (f"Delete every message of <b>{pages.text(queue)}-poison</b> (about {depth.poison_depth or 0})? "
                "They cannot be brought back.")
    return dash.respond(ctx, pages.confirm_page(ctx, "Purge the poison queue", question, path, "Yes, delete them",
                                                f"/queues/{pages.q(queue)}", danger=True))


def _report(dash: Dashboard, request: Request, queue: str, report) -> Response:
    ctx = dash.context(request)
    lines = [f"requeued {report.name(m)} to {queue}" + (f" ({report.notes[m]})" if m in report.notes else "")
             for m in report.requeued]
    lines += [f"failed {report.name(m)}: {error}" for m, error in report.failed]
    lines += [f"refused {report.name(m)}: {why}" for m, why in report.refused]  # a workflow's record (azjobs/poison_cli.py)
    lines += [f"not found: {w}" for w in report.not_found]
    lines.append(f"{len(report.requeued)} requeued, {len(report.failed)} failed, {len(report.not_found)} not found"
                 + (f", {len(report.refused)} refused" if report.refused else ""))
    ok = not report.failed and not report.not_found and not report.refused
    return dash.respond(ctx, pages.result_page(ctx, "Requeued" if ok else "Requeue incomplete", lines,
                                               f"/queues/{pages.q(queue)}", f"Back to {queue}", ok),
                        200 if ok else 502 if report.failed else 404 if report.not_found else 409)


def _safe_next(dash: Dashboard, value: str | None) -> str:
    """Where to go after logging in: a path of this dashboard only (no open redirect)."""
    home = dash.base + "/"
    if not value or not value.startswith(home) or value.startswith("//") or "\\" in value:
        return home
    return value


@page
async def login(dash: Dashboard, request: Request) -> Response:
    ctx = dash.context(request)
    if request.method == "GET":
        return dash.respond(ctx, pages.login_page(ctx, _safe_next(dash, request.query_params.get("next"))))
    form = await dash.form(request)
    check_origin(request.headers, request.headers.get("host"), dash.allowed_origins)
    target = _safe_next(dash, form.get("next"))
    if not dash.guard.key_matches(form.get("key")):
        log.warning("dashboard login refused: wrong admin key", extra={"action": "dashboard_login_failed"})
        await asyncio.sleep(0.5)  # slows guessing
        return dash.respond(ctx, pages.login_page(ctx, target, "That is not the admin key."), 403)
    _, cookie = await run_in_threadpool(dash.guard.new_session)  # recorded in the sessions table
    log.info("dashboard login", extra={"action": "dashboard_login"})
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, cookie, max_age=dash.guard.session_s, path=home_path(dash), httponly=True,
                        samesite="strict", secure=served_over_https(request.headers, request.url.scheme))
    return response


@page
async def logout(dash: Dashboard, request: Request) -> Response:
    session = await dash.check_action(request)
    await run_in_threadpool(dash.guard.end_session, session)  # every copy of the cookie stops working, everywhere
    log.info("dashboard logout", extra={"action": "dashboard_logout"})
    response = RedirectResponse(dash.base + "/", status_code=303)
    response.delete_cookie(COOKIE, path=home_path(dash), httponly=True, samesite="strict",
                           secure=served_over_https(request.headers, request.url.scheme))
    return response


def home_path(dash: Dashboard) -> str:
    return dash.base + "/" if dash.base else "/"


ROUTES = [
    Route("/", overview),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/queues/{queue}", queue_detail),
    Route("/queues/{queue}/poison/requeue-all", requeue_all, methods=["GET", "POST"]),
    Route("/queues/{queue}/poison/purge", purge, methods=["GET", "POST"]),
    Route("/queues/{queue}/poison/{id}", poison_detail),
    Route("/queues/{queue}/poison/{id}/requeue", requeue_one, methods=["GET", "POST"]),
]


def create_app(connection: Connection | str | None = None, *, admin_key: str | None = None,
               queues: Iterable[str] | None = None, base_path: str = "", host_json: str | None = None,
               sample_interval_s: float = DEFAULT_INTERVAL_S, background_sampling: bool = True,
               require_principal: bool = False, allowed_principals: Iterable[str] | None = None,
               allowed_origins: Iterable[str] = (), allowed_hosts: Iterable[str] = (), client: Client | None = None,
               state: Any = None, state_table: str | None = None, workflows_table: str | None = None,
               sessions_table: str | None = None) -> Starlette:
    """The dashboard ASGI app.

    ``connection``: a Connection, a connection string, or None for the AzureWebJobsStorage
    convention. ``admin_key``: the key that allows actions (None: read-only). ``queues``:
    show only these job queues (default: every queue in the account). ``base_path``: the URL
    prefix it is served under. ``require_principal``: refuse requests without the Entra ID
    user that App Service Authentication adds (``allowed_principals`` narrows who); refused
    with ConfigurationError unless ``WEBSITE_AUTH_ENABLED`` says App Service Authentication is on.
    ``allowed_origins``: other origins (``https://ops.example.com``) whose pages may post actions;
    their hosts and ``allowed_hosts`` are answered besides 127.0.0.1, localhost and [::1] (any other
    ``Host`` gets 400). ``state``: True (or a ``StateStore``) adds the jobs pages over the job state
    store (``state_table`` names its table; default the store's). ``workflows_table``: the workflow
    history table for the workflow pages (default ``$AZJOBS_WORKFLOWS_TABLE`` or ``azjobsworkflows``).
    ``sessions_table``: where logins are kept (default ``$AZJOBS_DASHBOARD_TABLE`` or ``azjobsdashboard``).
    """
    if base_path and (not base_path.startswith("/") or base_path.endswith("/")):
        raise ConfigurationError(f"base_path must start with '/' and not end with one, got {base_path!r}")
    if require_principal:
        require_app_service_auth()
    allowed_origins = tuple(allowed_origins)
    host_names = HostNames(allowed_hosts, allowed_origins)
    if client is None:
        if isinstance(connection, str):
            from ..storage.connection import connection_from_string

            connection = connection_from_string(connection, "argument")
        client = Client(connection or resolve_connection(), settings=QueueSettings.load(host_json),
                        create_queues=False)
    state_store = state if state not in (None, False, True) else None
    if state is True:
        from ..state import DEFAULT_TABLE, StateStore

        state_store = StateStore.from_connection(client.connection, state_table or DEFAULT_TABLE)
    sessions = TableSessions.for_connection(client.connection, sessions_table) if admin_key else None
    dash = Dashboard(StorageReader(client, queues), Guard(admin_key, sessions), DepthHistory(sample_interval_s),
                     base_path=base_path, require_principal=require_principal,
                     allowed_principals=allowed_principals, allowed_origins=allowed_origins,
                     state_store=state_store, workflows_table=workflows_table)
    from .workflows import ROUTES as WORKFLOW_ROUTES

    routes = list(ROUTES) + WORKFLOW_ROUTES
    if state_store is not None:
        from .jobs import ROUTES as JOB_ROUTES

        routes += JOB_ROUTES

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        task = asyncio.create_task(_sample_forever(dash)) if background_sampling else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = Starlette(routes=[Mount(base_path, routes=routes)] if base_path else routes, lifespan=lifespan,
                    middleware=[Middleware(HostCheck, names=host_names)])
    app.state.dashboard = dash
    app.state.host_names = host_names
    return app


async def _sample_forever(dash: Dashboard) -> None:
    """Sample the depths every interval while served (the chart needs points between page views)."""
    while True:
        try:
            if dash.history.due():
                dash.history.add(await run_in_threadpool(dash.reader.depths))
        except Exception as exc:  # storage down: the pages say so; keep sampling
            log.debug("dashboard sample failed: %s", describe(exc), extra={"action": "dashboard_sample_failed"})
        await asyncio.sleep(min(dash.history.interval_s, 5.0))
