"""The dashboard over real HTTP (uvicorn on a free port) against Azurite: pages, actions, refusals, the Host
check, sessions that a logout ends everywhere, the CLI."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from azjobs.storage.connection import AZURITE_KEY
from azjobs.dashboard import create_app
from azjobs.dashboard.auth import COOKIE, SESSION_S
from azjobs.model.envelope import Envelope, decode_body
from tests.conftest import ROOT, unique_queue
from tests.integration.dashboard_support import sessions_table  # noqa: F401 (a fixture)
from tests.integration.dashboard_support import ADMIN_KEY, Browserless, Served, count, poison, route_paths, session_rows
from tests.integration.drivers import drop_queues
from tests.jobs import failure_jobs

pytestmark = pytest.mark.usefixtures("sessions_table")


@pytest.fixture
def queues(client):
    """Two job queues: ``busy`` (3 waiting jobs, 2 dead-lettered) and ``idle`` (empty, never poisoned)."""
    busy, idle = unique_queue("dash"), unique_queue("dash")
    client.ensure_queue(busy)
    client.ensure_queue(idle)
    poison(client, busy, ["dash-a", "dash-b"])
    for n in range(3):
        failure_jobs.flaky.options(queue=busy).enqueue(f"waiting-{n}", 0)
    yield busy, idle
    drop_queues(client, busy)
    drop_queues(client, idle)


@pytest.fixture
def served(client, queues):
    app = create_app(client.connection, admin_key=ADMIN_KEY, queues=list(queues), background_sampling=False)
    with Served(app) as server:
        yield server


def poison_ids(client, queue: str) -> list[str]:
    return [m.id for m in client.queue(queue + "-poison").peek_messages(max_messages=32)]


def test_overview_lists_the_queues_with_their_depths_and_poison_depths(served, queues):
    busy, idle = queues
    page = Browserless(served.port).get("/")
    assert page.status == 200
    rows = dict(re.findall(r'<tr data-queue="([^"]+)">(.*?)</tr>', page.text))
    assert set(rows) == {busy, idle}
    assert re.search(r'class="num depth">3<', rows[busy]) and re.search(r'class="num poison-depth">.*?>2<', rows[busy])
    assert re.search(r'class="num depth">0<', rows[idle]) and "none" in rows[idle]
    assert "Content-Security-Policy" not in page.text and "script-src 'nonce-" in page.headers["content-security-policy"]


def test_a_poison_record_is_listed_and_shown_with_its_traceback(served, client, queues):
    busy, _ = queues
    browser = Browserless(served.port)
    listing = browser.get(f"/queues/{busy}")
    ids = re.findall(r'<tr data-id="([^"]+)">', listing.text)
    assert sorted(ids) == sorted(poison_ids(client, busy))
    assert listing.text.count("azjobs.errors.Fail: cannot ever work for dash-") == 2
    # Each row shows its job's id (what `azjobs status` takes), linking to the poison message.
    from azjobs.model.poison_record import PoisonRecord

    for m in client.queue(busy + "-poison").peek_messages(max_messages=32):
        job_id = PoisonRecord.decode(m.content).envelope_id
        assert re.search(rf'<tr data-id="{m.id}"><td><a href="/queues/{busy}/poison/{m.id}">{job_id}</a></td>',
                         listing.text), job_id
    assert "<th>Job id</th><th>Job</th>" in listing.text
    shown = browser.get(f"/queues/{busy}/poison/{ids[0]}")
    assert shown.status == 200
    traceback = re.search(r'<pre id="traceback">(.*?)</pre>', shown.text, re.S).group(1)
    assert "Traceback (most recent call last)" in traceback and "raise azjobs.Fail(" in traceback
    assert re.search(r"cannot ever work for dash-[ab]", traceback)
    assert browser.get(f"/queues/{busy}/poison/00000000-no-such-message").status == 404


def test_actions_without_the_admin_key_session_are_refused_and_change_nothing(served, client, queues):
    busy, _ = queues
    before = (count(client, busy), sorted(poison_ids(client, busy)))
    target = poison_ids(client, busy)[0]
    anonymous = Browserless(served.port)
    for path in (f"/queues/{busy}/poison/{target}/requeue", f"/queues/{busy}/poison/requeue-all",
                 f"/queues/{busy}/poison/purge"):
        # The confirmation page (GET) changes nothing and offers a login, not a form.
        confirm = anonymous.get(path)
        assert confirm.status == 200 and 'name="csrf"' not in confirm.text and "Log in" in confirm.text
        refused = anonymous.post(path, {"csrf": "guessed"})
        assert refused.status == 403 and "log in with the admin key" in refused.text
    # A wrong key opens no session.
    assert anonymous.login("not-the-admin-key-at-all").status == 403 and not anonymous.cookies
    # A session's actions still need its CSRF token, and a request from the dashboard's own origin.
    operator = Browserless(served.port)
    assert operator.login().status == 303
    token = operator.csrf()
    path = f"/queues/{busy}/poison/purge"
    assert operator.post(path, {}).status == 403
    assert operator.post(path, {"csrf": token[:-1] + ("0" if token[-1] != "0" else "1")}).status == 403
    assert operator.post(path, {"csrf": token}, origin="http://evil.example").status == 403
    assert operator.post(path, {"csrf": token}, origin=None).status == 403
    assert operator.post(path, {"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}).status == 403
    # Another session's token does not fit this one.
    other = Browserless(served.port)
    other.login()
    assert operator.post(path, {"csrf": other.csrf()}).status == 403
    assert (count(client, busy), sorted(poison_ids(client, busy))) == before


def test_a_read_only_dashboard_refuses_every_action(client, queues):
    busy, _ = queues
    before = sorted(poison_ids(client, busy))
    with Served(create_app(client.connection, queues=[busy], background_sampling=False)) as server:
        browser = Browserless(server.port)
        assert "read-only" in browser.get("/").text
        assert browser.login(ADMIN_KEY).status == 403 and not browser.cookies
        refused = browser.post(f"/queues/{busy}/poison/purge", {"csrf": "x"})
        assert refused.status == 403 and "read-only" in refused.text
    assert sorted(poison_ids(client, busy)) == before


def test_requeue_with_the_admin_key_sends_the_job_back_with_attempts_reset(served, client, queues):
    busy, _ = queues
    target, other = poison_ids(client, busy)
    operator = Browserless(served.port)
    operator.login()
    done = operator.post(f"/queues/{busy}/poison/{target}/requeue", {"csrf": operator.csrf()})
    assert done.status == 200 and re.search(rf"requeued job [0-9a-f-]{{36}} \(poison message {target}\) to {busy}",
                                            done.text), done.text
    assert poison_ids(client, busy) == [other]
    bodies = [decode_body(m.content, client.encoding) for m in client.queue(busy).peek_messages(max_messages=32)]
    jobs = [Envelope.from_json(b) for b in bodies]
    back = [j for j in jobs if j.job.endswith("gives_up")]
    assert len(jobs) == 4 and len(back) == 1 and back[0].attempt == 1 and back[0].args[0] in ("dash-a", "dash-b")


def test_purge_with_the_admin_key_empties_the_poison_queue_only(served, client, queues):
    busy, _ = queues
    operator = Browserless(served.port)
    operator.login()
    confirm = operator.get(f"/queues/{busy}/poison/purge")
    assert "about 2" in confirm.text and 'id="confirm"' in confirm.text
    done = operator.post(f"/queues/{busy}/poison/purge", {"csrf": operator.csrf()})
    assert done.status == 200 and f"deleted 2 message(s) from {busy}-poison" in done.text
    assert poison_ids(client, busy) == [] and count(client, busy) == 3


def test_logout_ends_the_session(served, client, queues):
    busy, _ = queues
    operator = Browserless(served.port)
    operator.login()
    token = operator.csrf()
    assert operator.post("/logout", {"csrf": token}).status == 303 and not operator.cookies
    assert operator.post(f"/queues/{busy}/poison/purge", {"csrf": token}).status == 403
    assert len(poison_ids(client, busy)) == 2


def test_no_credential_reaches_a_page_or_a_log_line(client, caplog):
    queue = unique_queue("dash")
    client.ensure_queue(queue)
    # A job failing with the storage key and a SAS signature in its arguments and error message.
    secret_token = f"AccountKey={AZURITE_KEY};sig=abcdefSECRETSIGNATURE123"
    poison(client, queue, [secret_token])
    try:
        with caplog.at_level(logging.DEBUG), Served(create_app(client.connection, admin_key=ADMIN_KEY, queues=[queue],
                                                               background_sampling=False)) as server:
            browser = Browserless(server.port)
            [message_id] = poison_ids(client, queue)
            pages = [browser.get(p).text for p in ("/", f"/queues/{queue}", f"/queues/{queue}/poison/{message_id}",
                                                   "/login")]
            browser.login("wrong-key-wrong-key-wrong")
            browser.login()
            pages += [browser.get(f"/queues/{queue}/poison/{message_id}").text]
        assert "cannot ever work for AccountKey=***" in pages[2]
        for text in pages + [caplog.text]:
            assert AZURITE_KEY not in text and "SECRETSIGNATURE" not in text and ADMIN_KEY not in text
            assert "wrong-key-wrong-key-wrong" not in text
    finally:
        drop_queues(client, queue)


def test_azjobs_dashboard_command_serves_the_pages_and_stops_on_sigterm(connection_string, client, queues, tmp_path):
    busy, _ = queues
    env = dict(os.environ, AzureWebJobsStorage=connection_string, AZJOBS_DASHBOARD_KEY=ADMIN_KEY,
               PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "azjobs", "dashboard", "--port", "0", "--queue", busy],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"azjobs dashboard on http://127\.0\.0\.1:(\d+)/ \(account devstoreaccount1 at http://127\.0\.0\.1:\d+/"
                          r"devstoreaccount1, from AzureWebJobsStorage; "
                          r"actions allowed with the admin key\)", line)
        assert match, line + process.stderr.read() if process.poll() is not None else line
        page = Browserless(int(match.group(1))).get("/")
        assert page.status == 200 and f'data-queue="{busy}"' in page.text
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0
    assert ADMIN_KEY not in line + out + err and AZURITE_KEY not in line + out + err


def test_azjobs_dashboard_on_a_port_in_use_says_so_in_one_line_and_exits_1(connection_string, tmp_path):
    env = dict(os.environ, AzureWebJobsStorage=connection_string, PYTHONPATH=str(ROOT))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "azjobs", "dashboard", "--port", str(port)], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert result.stderr == (f"azjobs dashboard: cannot listen on 127.0.0.1:{port}: the address is already in use "
                             "(another process listens there: stop it or choose --port)\n")
    assert result.stdout == ""


def test_azjobs_dashboard_refuses_a_short_admin_key(connection_string, tmp_path):
    env = dict(os.environ, AzureWebJobsStorage=connection_string, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "azjobs", "dashboard", "--admin-key", "short"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "admin key is too short (5 characters; at least 16)" in result.stderr and "short" not in result.stdout


def test_login_redirects_only_within_the_dashboard(served):
    for target, expected in (("/queues/x", "/queues/x"), ("//evil.example/", "/"), ("https://evil.example/", "/"),
                             ("/\\evil.example", "/")):
        browser = Browserless(served.port)
        reply = browser.post("/login", {"key": ADMIN_KEY, "next": target})
        assert reply.status == 303 and reply.headers["location"] == expected


def test_a_bad_queue_name_is_a_404_and_unreachable_storage_a_503_with_one_clear_line(served):
    from azjobs.storage.connection import azurite_connection_string
    from devtools.azurite import free_port

    browser = Browserless(served.port)
    assert browser.get("/queues/Not_A_Queue").status == 404
    assert browser.get("/queues/not-shown-here").status == 404  # outside --queue
    nowhere = azurite_connection_string(queue_port=free_port(), blob_port=free_port(), table_port=free_port())
    with Served(create_app(nowhere, background_sampling=False)) as server:
        reply = Browserless(server.port).get("/")
    assert reply.status == 503 and "cannot reach the queue service at http://127.0.0.1:" in reply.text
    assert "Traceback" not in reply.text and AZURITE_KEY not in reply.text


def test_azjobs_dashboard_refuses_an_origin_that_is_not_scheme_and_host(connection_string, tmp_path):
    env = dict(os.environ, AzureWebJobsStorage=connection_string, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "azjobs", "dashboard", "--origin", "ops.example.com/path"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--origin 'ops.example.com/path': give scheme and host only" in result.stderr


# -- the Host check (DNS rebinding) -------------------------------------------------------------
@pytest.fixture
def state_table(connection_string):
    table = f"dashstate{uuid.uuid4().hex[:16]}"
    yield table
    from azjobs.storage.connection import connection_from_string

    try:
        connection_from_string(connection_string, "argument").table_service().delete_table(table)
    except Exception:
        pass


def test_every_route_answers_a_foreign_host_400_and_shows_nothing_even_with_a_session(client, queues, state_table):
    busy, _ = queues
    ids = poison_ids(client, busy)
    before = (count(client, busy), sorted(ids))
    app = create_app(client.connection, admin_key=ADMIN_KEY, queues=list(queues), background_sampling=False,
                     state=True, state_table=state_table)
    paths = route_paths(app, {"queue": busy, "id": ids[0]})
    # Every page of the app: overview, login, logout, queue, poison, requeue, purge, jobs and workflows.
    assert {"/", "/login", "/logout", f"/queues/{busy}", f"/queues/{busy}/poison/{ids[0]}", "/jobs", "/workflows",
            f"/queues/{busy}/poison/purge"} <= set(paths) and len(paths) == len(set(paths)) >= 12
    with Served(app) as server:
        operator = Browserless(server.port)
        operator.login()
        token = operator.csrf()
        foreign = f"attacker.example:{server.port}"
        for path in paths + ["/no-such-page"]:
            for method in ("GET", "POST"):
                # What a DNS-rebinding page at http://attacker.example:<port>/ sends: its own Host and Origin (this
                # test even adds the operator's cookie and CSRF token, which the browser would not send there).
                refused = operator.request(method, path, form={"csrf": token} if method == "POST" else None,
                                           headers={"Host": foreign}, origin=f"http://{foreign}")
                assert refused.status == 400, (method, path, refused.status)
                assert "does not answer to Host 'attacker.example:" in refused.text, (method, path)
                assert "set-cookie" not in refused.headers and "dash-" not in refused.text and busy not in refused.text
                # The same request under the dashboard's own name is not refused for its Host (no CSRF token:
                # no action is done).
                own = operator.request(method, path, form={} if method == "POST" else None)
                assert own.status != 400, (method, path, own.status)
    assert (count(client, busy), sorted(poison_ids(client, busy))) == before


def test_a_dns_rebinding_read_of_a_poison_message_gets_400_not_the_message(served, client, queues):
    busy, _ = queues
    message_id = poison_ids(client, busy)[0]
    path = f"/queues/{busy}/poison/{message_id}"
    # curl -H "Host: attacker.example:8080" http://127.0.0.1:8080/queues/<q>/poison/<id>
    reply = Browserless(served.port).get(path, headers={"Host": f"attacker.example:{served.port}"})
    assert reply.status == 400 and reply.headers["content-type"].startswith("text/plain")
    assert "Traceback" not in reply.text and "cannot ever work" not in reply.text
    assert Browserless(served.port).get(path).status == 200


def test_the_dashboards_own_names_are_answered_with_or_without_port_in_any_case(served):
    port = served.port
    browser = Browserless(port)
    for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", f"localhost:{port}", f"LocalHost:{port}",
                 f"localhost.:{port}", "[::1]", f"[::1]:{port}", f"[0:0:0:0:0:0:0:1]:{port}"):
        assert browser.get("/", headers={"Host": host}).status == 200, host
    for host in (f"127.0.0.1.attacker.example:{port}", f"localhost.attacker.example:{port}",
                 f"attacker.example@127.0.0.1:{port}", f"127.0.0.1:{port}@attacker.example",
                 f"attacker.example:{port}#@127.0.0.1", f"127.0.0.2:{port}", "attacker.example", f"::1:{port}"):
        assert browser.get("/", headers={"Host": host}).status == 400, host
    # X-Forwarded-Host is not trusted either way: anyone can send it.
    assert browser.get("/", headers={"Host": f"attacker.example:{port}", "X-Forwarded-Host": f"127.0.0.1:{port}"}
                       ).status == 400
    assert browser.get("/", headers={"X-Forwarded-Host": f"attacker.example:{port}"}).status == 200


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def asgi_get(app, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """One GET / straight into the ASGI app, headers exactly as given (an HTTP server might refuse them first)."""
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/", "raw_path": b"/", "root_path": "", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_request_without_a_host_or_with_two_is_refused(served, client, queues):
    no_host = raw_request(served.port, b"GET / HTTP/1.0\r\n\r\n")  # HTTP/1.0 may omit Host
    assert no_host.startswith(b"HTTP/1.1 400") and b"does not answer to Host None" in no_host
    # Two Host headers (uvicorn's parser refuses them itself; another server might not): refused by the app too.
    app = create_app(client.connection, queues=list(queues), background_sampling=False)
    status, body = asgi_get(app, [(b"host", b"127.0.0.1:8080"), (b"host", b"attacker.example")])
    assert status == 400 and b"does not answer to Host ['127.0.0.1:8080', 'attacker.example']" in body
    assert asgi_get(app, [(b"host", b"127.0.0.1:8080")])[0] == 200


def test_azjobs_dashboard_answers_its_host_and_origin_names_only(connection_string, client, queues, tmp_path):
    busy, _ = queues
    env = dict(os.environ, AzureWebJobsStorage=connection_string, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "azjobs", "dashboard", "--port", "0", "--queue", busy,
                                "--host", "127.0.0.2", "--origin", "https://ops.example.com"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"on http://127\.0\.0\.2:(\d+)/", line)
        assert match, line + (process.stderr.read() if process.poll() is not None else "")
        port = int(match.group(1))
        browser = Browserless(port, address="127.0.0.2")
        for host in (f"127.0.0.2:{port}", "ops.example.com", f"OPS.example.com:{port}", f"localhost:{port}"):
            page = browser.get("/", headers={"Host": host})
            assert page.status == 200 and f'data-queue="{busy}"' in page.text, host
        for host in (f"attacker.example:{port}", f"ops.example.com.attacker.example:{port}", "example.com"):
            assert browser.get("/", headers={"Host": host}).status == 400, host
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "dashboard refused Host 'attacker.example:" in err


def test_a_proxy_name_can_be_allowed_with_an_origin_and_actions_from_it_work(client, queues):
    busy, _ = queues
    app = create_app(client.connection, admin_key=ADMIN_KEY, queues=[busy], background_sampling=False,
                     allowed_origins=["https://ops.example.com"])
    with Served(app) as server:
        # A TLS-terminating proxy that keeps the public Host and sends no X-Forwarded-Proto: the https origin of
        # the login page is what says the browser is on https.
        proxied = {"Host": "ops.example.com"}
        operator = Browserless(server.port)
        login = operator.post("/login", {"key": ADMIN_KEY, "next": "/"}, headers=proxied,
                              origin="https://ops.example.com")
        assert login.status == 303 and "; secure" in login.headers["set-cookie"].lower()
        page = operator.get(f"/queues/{busy}/poison/purge", headers=proxied)
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        done = operator.post(f"/queues/{busy}/poison/purge", {"csrf": token}, headers=proxied,
                             origin="https://ops.example.com")
        assert done.status == 200 and poison_ids(client, busy) == []


# -- sessions: a logout ends every copy of the cookie, on every instance -------------------------------
def test_a_copied_session_cookie_is_refused_after_logout(served, client, queues, sessions_table):
    busy, _ = queues
    operator = Browserless(served.port)
    assert operator.login().status == 303
    copied = dict(operator.cookies)
    token = operator.csrf()
    [row] = session_rows(client, sessions_table)
    assert row["RowKey"] in copied[COOKIE] and ADMIN_KEY not in str(row)
    expires = row["Expires"]
    assert abs((expires - datetime.now(timezone.utc)).total_seconds() - SESSION_S) < 600
    assert operator.post("/logout", {"csrf": token}).status == 303 and not operator.cookies
    assert session_rows(client, sessions_table) == []
    thief = Browserless(served.port, cookies=copied)  # the copy taken before the logout
    confirm = thief.get(f"/queues/{busy}/poison/purge")
    assert confirm.status == 200 and 'name="csrf"' not in confirm.text and "Log in" in confirm.text
    refused = thief.post(f"/queues/{busy}/poison/purge", {"csrf": token})
    assert refused.status == 403 and "log in with the admin key" in refused.text
    assert thief.post("/logout", {"csrf": token}).status == 403
    assert len(poison_ids(client, busy)) == 2


def test_a_logout_on_one_instance_ends_the_session_on_another(client, queues):
    busy, _ = queues

    def instance():
        return Served(create_app(client.connection, admin_key=ADMIN_KEY, queues=[busy], background_sampling=False))

    with instance() as first, instance() as second:
        on_first = Browserless(first.port)
        on_first.login()
        # The same cookie, sent to the other instance (another process, or another Functions instance).
        on_second = Browserless(second.port, cookies=dict(on_first.cookies))
        token = on_second.csrf()
        assert token == on_first.csrf()
        assert on_first.post("/logout", {"csrf": token}).status == 303
        refused = on_second.post(f"/queues/{busy}/poison/purge", {"csrf": token})
        assert refused.status == 403 and "log in with the admin key" in refused.text
        assert 'name="csrf"' not in on_second.get("/").text
    assert len(poison_ids(client, busy)) == 2


def test_expired_sessions_rows_are_deleted_at_the_next_login(served, client, sessions_table):
    Browserless(served.port).login()  # creates the table
    table = client.connection.table_service().get_table_client(sessions_table)
    table.create_entity({"PartitionKey": "session", "RowKey": "expired-long-ago",
                         "Expires": datetime.now(timezone.utc) - timedelta(hours=1)})
    Browserless(served.port).login()
    keys = [r["RowKey"] for r in session_rows(client, sessions_table)]
    assert len(keys) == 2 and "expired-long-ago" not in keys


def test_the_session_cookie_is_secure_only_over_https(client, queues):
    # uvicorn's own X-Forwarded-Proto handling off, as behind a proxy it does not trust (or another ASGI server).
    app = create_app(client.connection, admin_key=ADMIN_KEY, queues=list(queues), background_sampling=False)
    with Served(app, proxy_headers=False) as served:
        plain = Browserless(served.port).login()
        assert plain.status == 303 and "secure" not in plain.headers["set-cookie"].lower()
        forwarded = Browserless(served.port).post("/login", {"key": ADMIN_KEY, "next": "/"},
                                                  headers={"X-Forwarded-Proto": "https"})
        assert forwarded.status == 303 and "; secure" in forwarded.headers["set-cookie"].lower()
        operator = Browserless(served.port)
        operator.login()
        out = operator.post("/logout", {"csrf": operator.csrf()}, headers={"X-Forwarded-Proto": "https"})
        assert out.status == 303 and "; secure" in out.headers["set-cookie"].lower()
        assert "max-age=0" in out.headers["set-cookie"].lower()


def test_a_deleted_sessions_table_ends_every_session(served, client, sessions_table):
    """Sessions fail closed: without its row (here, without the whole table) a signed cookie proves nothing."""
    operator = Browserless(served.port)
    operator.login()
    assert 'name="csrf"' in operator.get("/").text
    client.connection.table_service().delete_table(sessions_table)
    page = operator.get("/")
    assert page.status == 200 and 'name="csrf"' not in page.text and "Log in" in page.text


def test_an_admin_key_without_table_storage_is_a_clear_configuration_error():
    from azjobs.storage.connection import Connection
    from azjobs.errors import ConfigurationError

    queues_only = Connection(queue_service_uri="https://acct.queue.core.windows.net", source="AzureWebJobsStorage")
    with pytest.raises(ConfigurationError, match="admin key needs Table Storage, where logins are kept"):
        create_app(queues_only, admin_key=ADMIN_KEY, background_sampling=False)
    assert create_app(queues_only, background_sampling=False)  # read-only needs no table
