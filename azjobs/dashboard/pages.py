"""The dashboard's HTML: plain server-rendered pages, inline CSS and SVG, no external asset.

Every value shown goes through ``text()`` (credentials redacted, then HTML-escaped), so a
connection string or SAS signature inside an error message or a job's arguments never
reaches a page.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence
from urllib.parse import quote

from ..poison.queue import PoisonMessage
from ..model.poison_record import PoisonRecord
from ..model.secrets import redact
from .chart import depth_chart
from .history import DepthHistory
from .storage import QueueDepth

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}
header{background:#0b3d91;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}header .who{margin-left:auto;font-size:13px}
header form{display:inline}header button{font-size:12px}
main{padding:16px 20px;max-width:1200px}h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:18px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:12px}
th,td{border:1px solid #d0d7de;padding:5px 8px;text-align:left;vertical-align:top}th{background:#eaeef2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#fff;border:1px solid #d0d7de;padding:10px;overflow:auto;white-space:pre-wrap;font-size:12px}
.chart{background:#fff;border:1px solid #d0d7de}.chart .depth{stroke:#0b6bcb;stroke-width:2}
.chart .poison{stroke:#c62828;stroke-width:2;stroke-dasharray:4 3}.chart .axis{stroke:#8c959f}
.chart .tick,.chart .empty{font-size:11px;fill:#57606a}
.legend span{display:inline-block;width:18px;height:3px;margin:0 4px 3px 10px;vertical-align:middle}
.bad{color:#c62828;font-weight:600}.muted{color:#57606a}.note{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px}
.error{background:#ffebe9;border:1px solid #cf222e;padding:8px 12px}.ok{background:#dafbe1;border:1px solid #2da44e;padding:8px 12px}
button,.button{background:#0b3d91;color:#fff;border:0;padding:6px 12px;border-radius:4px;cursor:pointer;
text-decoration:none;display:inline-block;font-size:13px}
.danger{background:#c62828}.secondary{background:#6e7781}.actions{display:flex;gap:8px;margin:10px 0}
dl{display:grid;grid-template-columns:160px 1fr;gap:4px 12px;background:#fff;border:1px solid #d0d7de;padding:10px}
dt{color:#57606a}dd{margin:0;word-break:break-all}
"""

# Refreshes the live part of the overview in place every few seconds (the page works without it).
REFRESH_SCRIPT = """
setInterval(function(){fetch(location.href,{headers:{"X-Requested-With":"refresh"},credentials:"same-origin"})
.then(function(r){return r.ok?r.text():null}).then(function(t){if(!t)return;
var d=new DOMParser().parseFromString(t,"text/html"),n=d.getElementById("live");
if(n)document.getElementById("live").replaceWith(n)}).catch(function(){})},%d);
"""


def text(value: Any) -> str:
    """A value as safe page text: credentials redacted, HTML escaped."""
    return html.escape(redact("" if value is None else str(value)), quote=True)


@dataclass
class Context:
    """What every page needs: where the dashboard lives and who is looking."""

    base: str  # URL path prefix ("" locally, "/api/dashboard" under Functions)
    account: str
    actions_enabled: bool
    logged_in: bool
    csrf: str | None
    nonce: str  # the Content-Security-Policy nonce for this response's script
    principal: str | None = None  # the Entra ID user, under Functions with sign-in required
    state_enabled: bool = False

    def url(self, path: str) -> str:
        return (self.base + path) if path.startswith("/") else path


def q(value: str) -> str:
    """A path segment, percent-encoded."""
    return quote(value, safe="")


def layout(ctx: Context, title: str, body: str, *, script: str = "") -> str:
    if ctx.logged_in:
        who = (f'<form method="post" action="{ctx.url("/logout")}"><input type="hidden" name="csrf" '
               f'value="{text(ctx.csrf)}"><span>actions allowed</span> <button class="secondary">Log out</button></form>')
    elif ctx.actions_enabled:
        who = f'<a href="{ctx.url("/login")}">Log in to act</a>'
    else:
        who = '<span>read-only</span>'
    if ctx.principal:
        who = f'<span>{text(ctx.principal)}</span> ' + who
    nav = [f'<a href="{ctx.url("/")}">azjobs</a>', f'<a href="{ctx.url("/")}">Queues</a>']
    if ctx.state_enabled:
        nav.append(f'<a href="{ctx.url("/jobs")}">Jobs</a>')
    nav.append(f'<a href="{ctx.url("/workflows")}">Workflows</a>')
    tag = f'<script nonce="{ctx.nonce}">{script}</script>' if script else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{text(title)} · azjobs</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head>'
            f'<body><header>{"".join(nav)}<span class="muted" style="color:#c9d6f0">account {text(ctx.account)}'
            f'</span><span class="who">{who}</span></header><main>{body}</main>{tag}</body></html>')


def _when(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _count(value: int | None, missing: str) -> str:
    return f'<span class="muted">{missing}</span>' if value is None else str(value)


def legend() -> str:
    return ('<div class="legend muted">depth<span style="background:#0b6bcb"></span> poison depth'
            '<span style="background:#c62828"></span></div>')


def overview(ctx: Context, depths: Sequence[QueueDepth], history: DepthHistory, refresh_s: float,
             error: str | None = None, throttled: dict[str, int] | None = None) -> str:
    rows = []
    # Deliveries a limit sent on (azjobs.limits), shown only when some queue had any.
    throttled = throttled if throttled and any(throttled.get(d.name) for d in depths) else None
    for d in depths:
        rate = history.rate_per_min(d.name)
        poison = _count(d.poison_depth, "none")
        if d.poison_depth:
            poison = f'<span class="bad">{d.poison_depth}</span>'
        rows.append(
            f'<tr data-queue="{text(d.name)}"><td><a href="{ctx.url("/queues/" + q(d.name))}">{text(d.name)}</a></td>'
            f'<td class="num depth">{_count(d.depth, "missing")}</td><td class="num poison-depth">{poison}</td>'
            f'<td class="num">{"-" if rate is None else f"{rate:+.1f}"}</td>'
            + (f'<td class="num throttled">{throttled.get(d.name, 0)}</td>' if throttled else "") + '</tr>')
    throttled_head = '<th>Throttled (5 min)</th>' if throttled else ""
    table = ('<table id="queues"><thead><tr><th>Queue</th><th>Depth (approx.)</th><th>Poison depth</th>'
             f'<th>Change per min</th>{throttled_head}</tr></thead><tbody>' + "".join(rows) + '</tbody></table>'
             ) if rows else (
        '<p class="note">No queues in this account yet: they are created when the first job is enqueued.</p>')
    charts = "".join(
        f'<figure><figcaption><a href="{ctx.url("/queues/" + q(d.name))}">{text(d.name)}</a></figcaption>'
        f'{depth_chart(history.series(d.name), f"depth of {d.name} over time")}</figure>' for d in depths)
    banner = f'<p class="error">{text(error)}</p>' if error else ""
    live = (f'<div id="live">{banner}{table}<h2>Depth over time</h2>'
            f'<p class="muted">Sampled by this dashboard every {history.interval_s:g} s since it started '
            f'(storage keeps no history); a falling line is jobs being worked.</p>{legend()}{charts}</div>')
    body = f'<h1>Queues</h1>{live}'
    return layout(ctx, "Queues", body, script=REFRESH_SCRIPT % int(refresh_s * 1000))


def _error_line(record: PoisonRecord) -> str:
    error = record.error
    line = f"{error.type}: {error.message}" if error.type else error.message
    line = " ".join(line.split())
    return line if len(line) <= 120 else line[:119] + "…"


def queue_page(ctx: Context, depth: QueueDepth, messages: Sequence[PoisonMessage], history: DepthHistory,
               flash: str | None = None) -> str:
    name = depth.name
    base = "/queues/" + q(name)
    rows = []
    for m in messages:
        r = m.record
        rows.append(
            f'<tr data-id="{text(m.message_id)}"><td><a href="{ctx.url(base + "/poison/" + q(m.message_id))}">'
            f'{text(r.envelope_id or "message " + m.message_id)}</a></td><td>{text(r.job or "-")}</td>'
            f'<td>{text(r.error.reason or "-")}</td>'
            f'<td class="num">{r.attempts}</td><td>{text(r.last_failed_at or "-")}</td><td>{text(_error_line(r))}</td></tr>')
    shown = len(messages)
    total = depth.poison_depth or 0
    if rows:
        more = (f'<p class="muted">Showing the first {shown} of about {total} (the service shows at most 32 '
                'without receiving them; `azjobs poison list` pages through all).</p>') if total > shown else ""
        poison = ('<table id="poison"><thead><tr><th>Job id</th><th>Job</th><th>Reason</th><th>Attempts</th>'
                  '<th>Last failed</th><th>Error</th></tr></thead><tbody>' + "".join(rows) + '</tbody></table>' + more)
        buttons = (f'<div class="actions"><a class="button" href="{ctx.url(base + "/poison/requeue-all")}">Requeue all…'
                   f'</a><a class="button danger" href="{ctx.url(base + "/poison/purge")}">Purge…</a></div>')
    else:
        poison = '<p class="ok">No poison messages.</p>'
        buttons = ""
    banner = f'<p class="ok">{text(flash)}</p>' if flash else ""
    body = (f'<h1>Queue {text(name)}</h1>{banner}<dl><dt>Depth (approx.)</dt><dd id="depth">'
            f'{_count(depth.depth, "the queue does not exist")}</dd><dt>Poison queue</dt><dd>{text(name)}-poison</dd>'
            f'<dt>Poison depth</dt><dd id="poison-depth">{_count(depth.poison_depth, "none yet")}</dd></dl>'
            f'<h2>Depth over time</h2>{legend()}{depth_chart(history.series(name), f"depth of {name} over time")}'
            f'<h2>Poison messages</h2>{buttons}{poison}')
    return layout(ctx, f"Queue {name}", body)


def poison_page(ctx: Context, queue: str, message: PoisonMessage, record: PoisonRecord) -> str:
    base = "/queues/" + q(queue)
    e = record.error
    fields = [
        ("Job id", record.envelope_id or "-"), ("Job", record.job or "-"), ("Queue", record.queue or queue),
        ("Poison message", message.message_id), ("Record", record.id), ("Failed message", record.message_id or "-"),
        ("Reason", e.reason or "-"), ("Error", f"{e.type}: {e.message}" if e.type else e.message),
        ("Attempts", record.attempts), ("First failed", record.first_failed_at or record.last_failed_at or "-"),
        ("Last failed", record.last_failed_at or "-"), ("Host", record.host or "-"),
        ("Poisoned at", _when(message.inserted_on)),
    ]
    if record.from_host:
        fields.append(("Source", "poisoned by the Functions host (no error recorded by azjobs)"))
    dl = "".join(f"<dt>{text(k)}</dt><dd>{text(v)}</dd>" for k, v in fields)
    if record.envelope is not None:
        env = record.envelope.to_dict()
        payload = f'<h2>Job</h2><pre id="envelope">{text(json.dumps(env, indent=2, ensure_ascii=False))}</pre>'
    elif record.raw_body is not None:
        payload = (f'<h2>Raw body ({text(record.raw_form)}, {text(record.raw_body_encoding)})</h2>'
                   f'<pre id="raw">{text(record.raw_body[:4000])}</pre>')
    else:
        payload = ""
    trace = (f'<h2>Traceback</h2><pre id="traceback">{text(e.traceback.rstrip())}</pre>' if e.traceback
             else '<p class="muted">No traceback recorded.</p>')
    actions = (f'<div class="actions"><a class="button" id="requeue" href="'
               f'{ctx.url(base + "/poison/" + q(message.message_id) + "/requeue")}">Requeue…</a>'
               f'<a class="button secondary" href="{ctx.url(base)}">Back to {text(queue)}</a></div>')
    body = f'<h1>Poison message in {text(queue)}</h1>{actions}<dl>{dl}</dl>{trace}{payload}'
    return layout(ctx, "Poison message", body)


def confirm_page(ctx: Context, title: str, question: str, action_path: str, button: str, cancel_path: str,
                 *, danger: bool = False, hidden: dict[str, str] | None = None) -> str:
    """A confirmation step: nothing changes until its form is posted (with the CSRF token)."""
    if not ctx.actions_enabled:
        form = ('<p class="note">This dashboard is read-only: it was started without an admin key '
                '(--admin-key or AZJOBS_DASHBOARD_KEY).</p>')
    elif not ctx.logged_in:
        form = (f'<p class="note">Log in with the admin key to do this.</p><a class="button" '
                f'href="{ctx.url("/login")}?next={q(ctx.url(action_path))}">Log in</a>')
    else:
        fields = "".join(f'<input type="hidden" name="{text(k)}" value="{text(v)}">' for k, v in (hidden or {}).items())
        form = (f'<form method="post" action="{ctx.url(action_path)}"><input type="hidden" name="csrf" '
                f'value="{text(ctx.csrf)}">{fields}<div class="actions"><button id="confirm" '
                f'class="{"danger" if danger else ""}">{text(button)}</button><a class="button secondary" '
                f'href="{ctx.url(cancel_path)}">Cancel</a></div></form>')
    return layout(ctx, title, f'<h1>{text(title)}</h1><p id="question">{question}</p>{form}')


def result_page(ctx: Context, title: str, lines: Sequence[str], back_path: str, back_label: str,
                ok: bool = True) -> str:
    items = "".join(f"<li>{text(line)}</li>" for line in lines)
    body = (f'<h1>{text(title)}</h1><div id="result" class="{"ok" if ok else "error"}"><ul>{items}</ul></div>'
            f'<p><a class="button" href="{ctx.url(back_path)}">{text(back_label)}</a></p>')
    return layout(ctx, title, body)


def login_page(ctx: Context, next_path: str, error: str | None = None) -> str:
    if not ctx.actions_enabled:
        body = ('<h1>Log in</h1><p class="note">This dashboard is read-only: it was started without an admin key, '
                'so there is nothing to log in to.</p>')
        return layout(ctx, "Log in", body)
    problem = f'<p class="error">{text(error)}</p>' if error else ""
    body = (f'<h1>Log in to act</h1>{problem}<p class="muted">Requeue and purge need the dashboard\'s admin key. '
            'Reading needs none.</p>'
            f'<form method="post" action="{ctx.url("/login")}"><input type="hidden" name="next" value="{text(next_path)}">'
            '<p><label>Admin key <input type="password" name="key" id="key" autocomplete="current-password" '
            'required size="40"></label></p><button id="login">Log in</button></form>')
    return layout(ctx, "Log in", body)


def error_page(ctx: Context, status: int, message: str) -> str:
    return layout(ctx, f"{status}", f'<h1>{status}</h1><p class="error" id="problem">{text(message)}</p>'
                                    f'<p><a href="{ctx.url("/")}">Back to the queues</a></p>')
