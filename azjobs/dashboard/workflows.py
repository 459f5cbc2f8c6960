"""The workflow pages: ``/workflows/{id}`` shows what ``azjobs workflow status ID`` shows.

Status, steps done/running/failed with their jobs and results or errors, timers, history
length, and the output or error, from the history the ``azjobs`` worker keeps in Table
Storage (``azjobs.workflows.history.find``, the CLI's reader). The history table is one
partition per workflow with no index by time, so listing recent workflows would scan the
whole table: ``/workflows`` is a box for a workflow id instead. Reading only.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import pages
from .context import _plain, page
from .pages import text

STATE_CLASS = {"done": "ok-text", "failed": "bad", "running": "run"}
STATUS_CLASS = {"Completed": "ok-text", "Failed": "bad", "Running": "run"}
STYLE = ("<style>.ok-text{color:#1a7f37;font-weight:600}.run{color:#0b6bcb;font-weight:600}"
         "td pre{margin:0;border:0;padding:0;background:none}</style>")


def _json(value: Any) -> str:
    return text(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def lookup_form(ctx: pages.Context) -> str:
    return (f'<form method="get" action="{ctx.url("/workflows")}"><label>Workflow id '
            '<input name="id" id="workflow-id" size="40" required></label> <button>Show</button></form>')


def workflows_page(ctx: pages.Context) -> str:
    body = (f'{STYLE}<h1>Workflows</h1>{lookup_form(ctx)}<p class="muted">Workflows run by the <code>azjobs</code> '
            'worker keep their history in Table Storage, one partition per workflow id (<code>handle.id</code>), '
            'with no index by time, so they are looked up by id rather than listed. On Azure Functions, the Durable '
            'HTTP status API shows a workflow.</p>')
    return pages.layout(ctx, "Workflows", body)


def workflow_page(ctx: pages.Context, info: dict[str, Any], table: str) -> str:
    status = info["status"]
    fields = [("Steps", f"{info['done']} done, {info['running']} running, {info['failed']} failed"),
              ("Timers", info["timers"]), ("History", f"{info['history_length']} events"), ("Table", table)]
    dl = (f'<dt>Status</dt><dd id="status"><span class="status {STATUS_CLASS.get(status, "")}">{text(status)}'
          '</span></dd>' + "".join(f"<dt>{text(k)}</dt><dd>{text(v)}</dd>" for k, v in fields))
    rows = []
    for step in info["steps"]:
        state = step["state"]
        if state == "done":
            detail = f'<pre class="result">{_json(step["result"])}</pre>'
        elif state == "failed":
            detail = f'<pre class="error-text">{text(step["error"])}</pre>'
        else:
            detail = '<span class="muted">…</span>'
        rows.append(f'<tr data-task="{step["task"]}"><td>{text(step["step"] or step["task"])}</td>'
                    f'<td class="job">{text(step["job"])}</td><td class="state {STATE_CLASS.get(state, "")}">'
                    f'{text(state)}</td><td>{detail}</td></tr>')
    steps = ('<table id="steps"><thead><tr><th>Step</th><th>Job</th><th>State</th><th>Result or error</th></tr>'
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
    ctx = dash.context(request)
    return dash.respond(ctx, workflows_page(ctx))


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
