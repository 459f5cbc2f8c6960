"""The workflow pages: ``/workflows`` lists recent workflows as ``azjobs workflow list`` does (newest first,
``?status=Failed``, ``?since=1h``), ``/workflows/{id}`` shows what ``azjobs workflow status ID`` shows.

Status, created and finished times, steps done/running/failed with their jobs, attempts and
results or errors, sleeps and retry waits, history length, and the output or error, from the
history the ``azjobs`` worker keeps in Table Storage (``azjobs.workflows.history.find``,
``azjobs.workflows.listing.recent``: the CLI's readers). Reading only.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..workflows.listing import DEFAULT_LIMIT, STATUSES, recent, status_named
from . import pages
from .context import _plain, page
from .pages import text

STATE_CLASS = {"done": "ok-text", "failed": "bad", "running": "run", "retrying": "run"}
SINCE = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400}  # the list's time filters
STATUS_CLASS = {"Completed": "ok-text", "Failed": "bad", "Running": "run"}
STYLE = ("<style>.ok-text{color:#1a7f37;font-weight:600}.run{color:#0b6bcb;font-weight:600}"
         "td pre{margin:0;border:0;padding:0;background:none}</style>")


def _json(value: Any) -> str:
    return text(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def lookup_form(ctx: pages.Context) -> str:
    return (f'<form method="get" action="{ctx.url("/workflows")}"><label>Workflow id '
            '<input name="id" id="workflow-id" size="40" required></label> <button>Show</button></form>')


def _filter_url(ctx: pages.Context, status: str | None, since: str | None) -> str:
    query = "&".join(f"{name}={pages.q(value)}" for name, value in (("status", status), ("since", since)) if value)
    return ctx.url("/workflows") + (f"?{query}" if query else "")


def workflows_page(ctx: pages.Context, items: list[dict[str, Any]], status: str | None, since: str | None,
                   table: str) -> str:
    by_status = [f'<a href="{_filter_url(ctx, None, since)}">{"<b>all</b>" if status is None else "all"}</a>']
    for name in STATUSES:
        label = f"<b>{text(name)}</b>" if name == status else text(name)
        by_status.append(f'<a href="{_filter_url(ctx, name, since)}">{label}</a>')
    by_time = [f'<a href="{_filter_url(ctx, status, None)}">{"<b>any time</b>" if since is None else "any time"}</a>']
    for name in SINCE:
        label = f"<b>last {name}</b>" if name == since else f"last {name}"
        by_time.append(f'<a href="{_filter_url(ctx, status, name)}">{label}</a>')
    rows = [f'<tr data-workflow="{text(item["id"])}"><td><a href="{ctx.url("/workflows/" + pages.q(item["id"]))}">'
            f'{text(item["id"])}</a></td><td><span class="status {STATUS_CLASS.get(item["status"], "")}">'
            f'{text(item["status"])}</span></td><td>{text(item["created_at"] or "-")}</td>'
            f'<td>{text(item["finished_at"] or "-")}</td></tr>' for item in items]
    table_html = ('<table id="workflows"><thead><tr><th>Workflow id</th><th>Status</th><th>Created (UTC)</th>'
                  '<th>Finished</th></tr></thead><tbody>' + "".join(rows) + '</tbody></table>') if rows else (
        '<p class="note">No workflows here.</p>')
    body = (f'{STYLE}<h1>Workflows</h1>{lookup_form(ctx)}<p class="filters">{" ".join(by_status)}</p>'
            f'<p class="filters">{" ".join(by_time)}</p>{table_html}<p class="muted">Workflows run by the '
            f'<code>azjobs</code> worker, newest first (at most {DEFAULT_LIMIT}), from '
            f'table {text(table)}. On Azure Functions, the Durable HTTP status API shows a workflow.</p>')
    return pages.layout(ctx, "Workflows", body)


def workflow_page(ctx: pages.Context, info: dict[str, Any], table: str) -> str:
    status = info["status"]
    fields = [("Created", info.get("created_at") or "-"), ("Finished", info.get("finished_at") or "-"),
              ("Steps", f"{info['done']} done, {info['running']} running, {info['failed']} failed "
                        f"({info.get('attempts', len(info['steps']))} attempts)"),
              ("Sleeps", info.get("sleeps", info["timers"])), ("Retry waits", info.get("retry_waits", 0)),
              ("History", f"{info['history_length']} events"), ("Table", table)]
    dl = (f'<dt>Status</dt><dd id="status"><span class="status {STATUS_CLASS.get(status, "")}">{text(status)}'
          '</span></dd>' + "".join(f"<dt>{text(k)}</dt><dd>{text(v)}</dd>" for k, v in fields))
    rows = []
    for step in info["steps"]:
        state = step["state"]
        if state == "done":
            detail = f'<pre class="result">{_json(step["result"])}</pre>'
        elif state in ("failed", "retrying"):
            detail = f'<pre class="error-text">{text(step["error"])}</pre>'
        else:
            detail = '<span class="muted">…</span>'
        rows.append(f'<tr data-task="{step["task"]}"><td>{text(step["step"] or step["task"])}</td>'
                    f'<td class="job">{text(step["job"])}</td><td class="state {STATE_CLASS.get(state, "")}">'
                    f'{text(state)}</td><td class="num">{step.get("attempts", 1)}</td><td>{detail}</td></tr>')
    steps = ('<table id="steps"><thead><tr><th>Step</th><th>Job</th><th>State</th><th>Attempts</th>'
             '<th>Result or error</th></tr>'
             '</thead><tbody>' + "".join(rows) + '</tbody></table>') if rows else '<p class="note">No step yet.</p>'
    end = ""
    if status == "Completed":
        end = f'<h2>Output</h2><pre id="output">{_json(info["output"])}</pre>'
    elif info["error"]:
        end = f'<h2>Error</h2><pre id="error" class="error">{text(info["error"])}</pre>'
    body = (f'{STYLE}<h1>Workflow {text(info["id"])}</h1><dl>{dl}</dl><h2>Steps</h2>{steps}{end}'
            f'<h2>Another workflow</h2>{lookup_form(ctx)}')
    return pages.layout(ctx, f"Workflow {info['id']}", body)


@page
async def workflows_list(dash, request: Request) -> Response:
    lookup = dash.looked_up(request, "/workflows")
    if lookup is not None:
        return lookup
    status = request.query_params.get("status") or None
    since = request.query_params.get("since") or None
    if status is not None:
        try:
            status = status_named(status)
        except ValueError as exc:
            return _plain(dash, request, 404, str(exc))
    if since is not None and since not in SINCE:
        return _plain(dash, request, 404, f"unknown time filter {since!r}: one of {', '.join(SINCE)}")
    start = datetime.now(timezone.utc) - timedelta(seconds=SINCE[since]) if since else None
    store = dash.workflow_store
    items = await run_in_threadpool(lambda: recent(store, since=start, status=status))
    ctx = dash.context(request)
    return dash.respond(ctx, workflows_page(ctx, items, status, since, store.table))


@page
async def workflow_detail(dash, request: Request) -> Response:
    from ..workflows.handle import WorkflowNotFoundError
    from ..workflows.history import find, id_problem

    workflow_id = request.path_params["id"]
    store = dash.workflow_store
    info = await run_in_threadpool(find, store, workflow_id)  # None for an id no workflow can have: no call made
    if info is None:
        return _plain(dash, request, 404, str(WorkflowNotFoundError(workflow_id, store.table,
                                                                    why=id_problem(workflow_id))))
    ctx = dash.context(request)
    return dash.respond(ctx, workflow_page(ctx, info, store.table))


ROUTES = [Route("/workflows", workflows_list), Route("/workflows/{id}", workflow_detail)]
