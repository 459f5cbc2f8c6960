"""The dashboard as an HTTP-triggered Azure Function: indexed and invoked with the real azure-functions library."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlencode

import azure.functions as func
import pytest

import azjobs
import azjobs.dashboard
from azjobs.errors import ConfigurationError
from tests.conftest import unique_queue
from tests.integration.dashboard_support import ADMIN_KEY, count, poison
from tests.integration.drivers import drop_queues

HOST = "myapp.azurewebsites.net"


@pytest.fixture
def busy(client, monkeypatch):
    """A job queue with one waiting job and two dead-lettered ones; the admin key in the app settings."""
    monkeypatch.setenv("AZJOBS_DASHBOARD_KEY", ADMIN_KEY)
    queue = unique_queue("dashf")
    client.ensure_queue(queue)
    poison(client, queue, ["fn-a", "fn-b"])
    from tests.jobs import failure_jobs

    failure_jobs.flaky.options(queue=queue).enqueue("waiting", 0)
    yield queue
    drop_queues(client, queue)


def indexed(*blueprints) -> list:
    app = func.FunctionApp()
    for bp in blueprints:
        app.register_functions(bp)
    return app.get_functions()


def call(function, method: str, path: str, *, headers: dict | None = None, form: dict | None = None,
         cookie: str | None = None) -> func.HttpResponse:
    """Invoke the function as the Python worker does, with a real ``func.HttpRequest``."""
    sent = {"host": HOST, **(headers or {})}
    if cookie:
        sent["cookie"] = cookie
    body = b""
    if form is not None:
        body = urlencode(form).encode()
        sent["content-type"] = "application/x-www-form-urlencoded"
    request = func.HttpRequest(method=method, url=f"https://{HOST}{path}", headers=sent, body=body,
                               route_params={"path": path.split("/api/dashboard/", 1)[-1]})
    return asyncio.run(function.get_user_function()(req=request, context=None))


def the_dashboard(functions) -> object:
    [function] = [f for f in functions if f.get_function_name() == "azjobs_dashboard"]
    return function


def test_the_blueprint_indexes_as_one_admin_level_http_function_beside_the_queue_triggers(busy):
    from tests.jobs import failure_jobs

    functions = indexed(azjobs.blueprint([busy], registry=failure_jobs.registry_for(busy), workflows=False),
                        azjobs.dashboard.blueprint())
    trigger = the_dashboard(functions).get_trigger().get_dict_repr()
    assert trigger["type"] == "httpTrigger" and trigger["route"] == "dashboard/{*path}"
    assert trigger["authLevel"] == func.AuthLevel.ADMIN
    assert sorted(str(m.value) for m in trigger["methods"]) == ["GET", "POST"]
    assert len(functions) == 2  # the queue trigger and the dashboard


def test_the_function_serves_the_queue_depths_and_a_poison_traceback(client, busy):
    function = the_dashboard(indexed(azjobs.dashboard.blueprint(queues=[busy])))
    home = call(function, "GET", "/api/dashboard/")
    assert home.status_code == 200 and home.mimetype.startswith("text/html")
    text = home.get_body().decode()
    row = re.search(rf'<tr data-queue="{busy}">(.*?)</tr>', text).group(1)
    assert 'class="num depth">1<' in row and ">2<" in row
    assert f'href="/api/dashboard/queues/{busy}"' in text  # links keep the route prefix
    message_id = client.queue(busy + "-poison").peek_messages()[0].id
    shown = call(function, "GET", f"/api/dashboard/queues/{busy}/poison/{message_id}").get_body().decode()
    assert "Traceback (most recent call last)" in shown and re.search(r"cannot ever work for fn-[ab]", shown)


def test_an_action_without_a_session_is_refused_and_one_with_the_admin_key_session_is_done(client, busy):
    function = the_dashboard(indexed(azjobs.dashboard.blueprint(queues=[busy])))
    origin = {"origin": f"https://{HOST}"}
    refused = call(function, "POST", f"/api/dashboard/queues/{busy}/poison/requeue-all", headers=origin,
                   form={"csrf": "forged"})
    assert refused.status_code == 403
    assert count(client, busy + "-poison") == 2 and count(client, busy) == 1

    login = call(function, "POST", "/api/dashboard/login", headers=origin,
                 form={"key": ADMIN_KEY, "next": "/api/dashboard/"})
    assert login.status_code == 303 and login.headers["location"] == "/api/dashboard/"
    set_cookie = login.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Secure" in set_cookie
    assert "Path=/api/dashboard/" in set_cookie and ADMIN_KEY not in set_cookie
    cookie = set_cookie.split(";", 1)[0]
    page = call(function, "GET", f"/api/dashboard/queues/{busy}/poison/requeue-all", cookie=cookie).get_body().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    done = call(function, "POST", f"/api/dashboard/queues/{busy}/poison/requeue-all", headers=origin, cookie=cookie,
                form={"csrf": token})
    assert done.status_code == 200 and "2 requeued, 0 failed, 0 not found" in done.get_body().decode()
    assert count(client, busy + "-poison") == 0 and count(client, busy) == 3


def test_with_entra_id_the_function_is_anonymous_at_the_host_and_needs_the_signed_in_user(busy):
    function = the_dashboard(indexed(azjobs.dashboard.blueprint(entra=True, allowed_principals=["ops@contoso.com"],
                                                                queues=[busy])))
    assert function.get_trigger().get_dict_repr()["authLevel"] == func.AuthLevel.ANONYMOUS
    assert call(function, "GET", "/api/dashboard/").status_code == 401
    stranger = call(function, "GET", "/api/dashboard/", headers={"x-ms-client-principal-name": "eve@contoso.com"})
    assert stranger.status_code == 403
    allowed = call(function, "GET", "/api/dashboard/", headers={"x-ms-client-principal-name": "ops@contoso.com"})
    assert allowed.status_code == 200 and "ops@contoso.com" in allowed.get_body().decode()


def test_an_anonymous_dashboard_without_entra_id_is_refused():
    with pytest.raises(ConfigurationError, match="open to anyone"):
        azjobs.dashboard.blueprint(auth_level=func.AuthLevel.ANONYMOUS)
