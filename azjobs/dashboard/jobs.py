"""The jobs pages, shown when the job state store is on (``azjobs.state``): recent jobs and one job.

``/jobs`` lists the records changed most recently (a status filter, a job-id box) with a
chart of jobs finished per minute over the last half hour (SUCCESSFUL and FAILED or
DEAD_LETTERED), computed from the records' ``finished_at``; ``/jobs/{id}`` shows one record:
times, attempts, workers, arguments, return value and each failed attempt's traceback, and
for a job not finished a Cancel button (``/jobs/{id}/cancel``: a confirmation, then
``azjobs.cancel``'s write, behind the admin key, session, CSRF and origin checks of every
action). Cancelling is the one write the dashboard makes to the state store. Imported by
``create_app`` only when a state store is given.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..model.secrets import get_logger
from . import pages
from .context import _plain, page
from .pages import q, text

log = get_logger("azjobs.dashboard")

RECENT_LIMIT = 200
CHART_MINUTES = 30
STATUS_CLASS = {"SUCCESSFUL": "ok-text", "FAILED": "bad", "DEAD_LETTERED": "bad", "RETRYING": "warn",
                "RUNNING": "run", "READY": "muted", "CANCELLED": "muted"}
JOBS_STYLE = ("<style>.ok-text{color:#1a7f37;font-weight:600}.warn{color:#9a6700;font-weight:600}"
              ".run{color:#0b6bcb;font-weight:600}.filters a{margin-right:10px}.chart .ok{fill:#2da44e}"
              ".chart .failed{fill:#c62828}</style>")


def _when(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _status(value: Any) -> str:
    name = getattr(value, "value", str(value))
    return f'<span class="status {STATUS_CLASS.get(name, "")}">{text(name)}</span>'


def throughput_chart(records: Sequence[Any], now: datetime, minutes: int = CHART_MINUTES,
                     width: int = 560, height: int = 140) -> str:
    """Bars of jobs finished per minute over the last ``minutes``: successful up, failed stacked on top."""
    start = now - timedelta(minutes=minutes)
    ok = [0] * minutes
    failed = [0] * minutes
    for record in records:
        finished = record.finished_at
        if finished is None or not (start <= finished <= now):
            continue
        slot = min(minutes - 1, int((finished - start).total_seconds() // 60))
        name = getattr(record.status, "value", str(record.status))
        if name == "SUCCESSFUL":
            ok[slot] += 1
        elif name in ("FAILED", "DEAD_LETTERED"):
            failed[slot] += 1
    top = max([a + b for a, b in zip(ok, failed)] + [1])
    pad, bottom = 28, height - 20
    slot_w = (width - pad - 8) / minutes
    bars = []
    for i, (good, bad) in enumerate(zip(ok, failed)):
        x = pad + i * slot_w + 1
        h_ok = (bottom - 10) * good / top
        h_bad = (bottom - 10) * bad / top
        if good:
            bars.append(f'<rect class="ok" x="{x:.1f}" y="{bottom - h_ok:.1f}" width="{slot_w - 2:.1f}" '
                        f'height="{h_ok:.1f}"><title>{good} successful</title></rect>')
        if bad:
            bars.append(f'<rect class="failed" x="{x:.1f}" y="{bottom - h_ok - h_bad:.1f}" width="{slot_w - 2:.1f}" '
                        f'height="{h_bad:.1f}"><title>{bad} failed</title></rect>')
    axis = (f'<line class="axis" x1="{pad}" y1="{bottom}" x2="{width - 8}" y2="{bottom}"/>'
            f'<text x="2" y="14" class="tick">{top}</text><text x="2" y="{bottom}" class="tick">0</text>'
            f'<text x="{pad}" y="{height - 4}" class="tick">{minutes} min ago</text>'
            f'<text x="{width - 8}" y="{height - 4}" class="tick" text-anchor="end">now</text>')
    return (f'<svg class="chart" id="throughput" role="img" aria-label="jobs finished per minute" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}">{axis}{"".join(bars)}</svg>')


def jobs_page(ctx: pages.Context, records: Sequence[Any], chart_records: Sequence[Any], status: str | None,
              statuses: Sequence[str], now: datetime) -> str:
    filters = [f'<a href="{ctx.url("/jobs")}">{"<b>all</b>" if status is None else "all"}</a>']
    for name in statuses:
        label = f"<b>{text(name)}</b>" if name == status else text(name)
        filters.append(f'<a href="{ctx.url("/jobs")}?status={q(name)}">{label}</a>')
    rows = []
    for r in records:
        rows.append(
            f'<tr data-job="{text(r.id)}"><td><a href="{ctx.url("/jobs/" + q(r.id))}">{text(r.id[:8])}…</a></td>'
            f'<td>{text(r.job)}</td><td>{text(r.queue or "-")}</td><td>{_status(r.status)}</td>'
            f'<td class="num">{r.attempts}</td><td>{_when(r.enqueued_at)}</td><td>{_when(r.started_at)}</td>'
            f'<td>{_when(r.finished_at)}</td></tr>')
    table = ('<table id="jobs"><thead><tr><th>Job id</th><th>Job</th><th>Queue</th><th>Status</th><th>Attempts</th>'
             '<th>Enqueued (UTC)</th><th>Started</th><th>Finished</th></tr></thead><tbody>' + "".join(rows)
             + '</tbody></table>') if rows else '<p class="note">No job records here yet.</p>'
    finished = sum(1 for r in chart_records if r.finished_at and r.finished_at >= now - timedelta(minutes=CHART_MINUTES))
    body = (f'{JOBS_STYLE}<h1>Jobs</h1><form method="get" action="{ctx.url("/jobs")}"><label>Job id '
            '<input name="id" id="job-id" size="40"></label> <button>Show</button></form>'
            f'<h2>Finished per minute</h2><p class="muted">From the state store: {finished} job(s) finished in the '
            f'last {CHART_MINUTES} minutes (green successful, red failed or dead-lettered).</p>'
            f'{throughput_chart(chart_records, now)}<h2>Recent</h2><p class="filters">{" ".join(filters)}</p>{table}'
            f'<p class="muted">The {RECENT_LIMIT} records changed most recently (the state store keeps them for its '
            'retention period).</p>')
    return pages.layout(ctx, "Jobs", body)


def job_page(ctx: pages.Context, r: Any) -> str:
    fields = [("Job id", r.id), ("Job", r.job), ("Queue", r.queue or "-"), ("Attempts", r.attempts),
              ("Enqueued", _when(r.enqueued_at)), ("Started", _when(r.started_at)),
              ("Last attempt", _when(getattr(r, "last_attempted_at", None))), ("Finished", _when(r.finished_at)),
              ("Workers", ", ".join(r.worker_ids) or "-")]
    dl = f"<dt>Status</dt><dd id=\"status\">{_status(r.status)}</dd>" + "".join(
        f"<dt>{text(k)}</dt><dd>{text(v)}</dd>" for k, v in fields)
    call = {"args": list(getattr(r, "args", []) or []), "kwargs": dict(getattr(r, "kwargs", {}) or {})}
    shown = getattr(r, "arguments_note", "") or json.dumps(call, indent=2, ensure_ascii=False)
    parts = [f'<h2>Arguments</h2><pre id="arguments">{text(shown)}</pre>']
    if getattr(r.status, "value", r.status) == "SUCCESSFUL":
        parts.append(f'<h2>Return value</h2><pre id="return-value">'
                     f'{text(json.dumps(r.return_value, indent=2, ensure_ascii=False, default=str))}</pre>')
    for n, error in enumerate(r.errors, 1):
        parts.append(f'<h2>Failed attempt {n}: {text(error.exception_class_path)}</h2><p>{text(error.message)}</p>'
                     f'<pre class="traceback">{text(error.traceback.rstrip())}</pre>')
    link = ""
    if getattr(r.status, "value", r.status) in ("FAILED", "DEAD_LETTERED") and r.queue:
        link = (f'<p><a class="button" href="{ctx.url("/queues/" + q(r.queue))}">Poison messages of '
                f'{text(r.queue)}</a></p>')
    if getattr(r.status, "value", r.status) in ("READY", "RUNNING", "RETRYING"):
        asked = getattr(r, "cancel_requested", False)
        link += ('<p class="muted" id="cancel-requested">Cancel requested: the run was asked to stop.</p>' if asked else
                 f'<p><a class="button" id="cancel" href="{ctx.url("/jobs/" + q(r.id) + "/cancel")}">Cancel job…</a></p>')
    body = f'{JOBS_STYLE}<h1>Job {text(r.id)}</h1>{link}<dl>{dl}</dl>{"".join(parts)}'
    return pages.layout(ctx, f"Job {r.id}", body)


@page
async def jobs_list(dash, request: Request) -> Response:
    from ..state import JobStatus

    lookup = dash.looked_up(request, "/jobs")
    if lookup is not None:
        return lookup
    status = request.query_params.get("status") or None
    names = [s.value for s in JobStatus]
    if status is not None and status not in names:
        return _plain(dash, request, 404, f"unknown status {status!r}: one of {', '.join(names)}")
    now = datetime.now(timezone.utc)
    records = await run_in_threadpool(lambda: dash.state_store.recent(
        limit=RECENT_LIMIT, status=JobStatus(status) if status else None))
    chart = await run_in_threadpool(lambda: dash.state_store.recent(since=now - timedelta(minutes=CHART_MINUTES),
                                                                    limit=100_000))
    ctx = dash.context(request)
    return dash.respond(ctx, jobs_page(ctx, records, chart, status, names, now))


@page
async def job_detail(dash, request: Request) -> Response:
    job_id = request.path_params["id"]
    record = await run_in_threadpool(dash.state_store.get, job_id)
    if record is None:
        return _plain(dash, request, 404, f"no record of job {job_id} in the state store (not enqueued with state "
                                          "on, pruned after the retention period, or a wrong id)")
    ctx = dash.context(request)
    return dash.respond(ctx, job_page(ctx, record))


@page
async def cancel_job(dash, request: Request) -> Response:
    job_id = request.path_params["id"]
    back = "/jobs/" + q(job_id)
    path = back + "/cancel"
    if request.method == "POST":
        await dash.check_action(request)
        answer = await run_in_threadpool(dash.state_store.cancel, job_id)
        ctx = dash.context(request)
        if answer is None:
            return _plain(dash, request, 404, f"no record of job {job_id} in the state store: nothing was cancelled")
        record, what = answer
        line = {"cancelled": f"job {record.job} {job_id} CANCELLED: it does not run",
                "requested": f"job {record.job} {job_id} is running: asked to stop; it becomes CANCELLED when its "
                             "run ends"}.get(what, f"job {record.job} {job_id} was already {record.status.value}: "
                                                   "nothing changed")
        log.info("dashboard cancelled job %s (%s)", job_id, what,
                 extra={"action": "dashboard_cancel", "job_id": job_id, "what": what})
        return dash.respond(ctx, pages.result_page(ctx, "Cancelled" if what != "finished" else "Nothing to cancel",
                                                   [line], back, "Back to the job", what != "finished"))
    ctx = dash.context(request)
    question = (f"Cancel job <code>{text(job_id)}</code>? Not started, it never runs; running, it is asked to stop "
                "and its result is discarded. It is not retried and not dead-lettered.")
    return dash.respond(ctx, pages.confirm_page(ctx, "Cancel a job", question, path, "Yes, cancel the job", back,
                                                danger=True))


ROUTES = [Route("/jobs", jobs_list), Route("/jobs/{id}", job_detail),
          Route("/jobs/{id}/cancel", cancel_job, methods=["GET", "POST"])]
