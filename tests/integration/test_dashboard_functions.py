"""The dashboard as an HTTP-triggered Azure Function: indexed and invoked with the real azure-functions library."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from urllib.parse import urlencode

import azure.functions as func
import pytest

import azjobs
import azjobs.dashboard
from azjobs.dashboard import create_app
from azjobs.errors import ConfigurationError
from tests.conftest import unique_queue
from tests.integration.dashboard_support import sessions_table  # noqa: F401 (a fixture)
from tests.integration.dashboard_support import ADMIN_KEY, count, poison, route_paths
from tests.integration.drivers import drop_queues

HOST = "myapp.azurewebsites.net"
OBJECT_ID = "5b5450db-eb26-4c1a-981c-ba1d25f0483d"


@pytest.fixture
def busy(client, monkeypatch, sessions_table):
    """A job queue with one waiting job and two dead-lettered ones; the admin key and the app's host name in the app
    settings (as the platform sets WEBSITE_HOSTNAME); App Service Authentication on."""
    monkeypatch.setenv("AZJOBS_DASHBOARD_KEY", ADMIN_KEY)
    monkeypatch.setenv("WEBSITE_HOSTNAME", HOST)
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
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
    """Invoke the function as the Python worker does, with a real ``func.HttpRequest`` (``headers`` may set ``host``)."""
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


def test_a_logout_through_the_function_ends_every_copy_of_the_cookie(client, busy):
    """Each call below could be served by another instance: the session lives in the table, not in the process."""
    origin = {"origin": f"https://{HOST}"}
    login = call(the_dashboard(indexed(azjobs.dashboard.blueprint(queues=[busy]))), "POST", "/api/dashboard/login",
                 headers=origin, form={"key": ADMIN_KEY, "next": "/api/dashboard/"})
    cookie = login.headers["set-cookie"].split(";", 1)[0]
    other_instance = the_dashboard(indexed(azjobs.dashboard.blueprint(queues=[busy])))
    page = call(other_instance, "GET", "/api/dashboard/", cookie=cookie).get_body().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    out = call(the_dashboard(indexed(azjobs.dashboard.blueprint(queues=[busy]))), "POST", "/api/dashboard/logout",
               headers=origin, cookie=cookie, form={"csrf": token})
    assert out.status_code == 303 and "Secure" in out.headers["set-cookie"]
    refused = call(other_instance, "POST", f"/api/dashboard/queues/{busy}/poison/purge", headers=origin,
                   cookie=cookie, form={"csrf": token})
    assert refused.status_code == 403 and "log in with the admin key" in refused.get_body().decode()
    assert count(client, busy + "-poison") == 2


def test_the_function_answers_400_to_a_foreign_host_on_every_route(client, busy, monkeypatch):
    message_id = client.queue(busy + "-poison").peek_messages()[0].id
    function = the_dashboard(indexed(azjobs.dashboard.blueprint(queues=[busy], state=True)))
    # The routes of the app the blueprint serves (the same create_app, under the route prefix).
    paths = route_paths(create_app(client.connection, queues=[busy], background_sampling=False, state=True,
                                   base_path="/api/dashboard"), {"queue": busy, "id": message_id})
    assert "/api/dashboard/" in paths and f"/api/dashboard/queues/{busy}/poison/{message_id}" in paths
    for path in paths:
        for method in ("GET", "POST"):
            form = {} if method == "POST" else None
            refused = call(function, method, path, headers={"host": "attacker.example", "origin": "https://attacker.example"},
                           form=form)
            assert refused.status_code == 400, (method, path)
            assert "cannot ever work" not in refused.get_body().decode()
            assert call(function, method, path, form=form).status_code != 400, (method, path)
    # A custom domain is answered once named (blueprint(allowed_origins=...) or AZJOBS_DASHBOARD_ORIGINS).
    assert call(function, "GET", "/api/dashboard/", headers={"host": "ops.contoso.com"}).status_code == 400
    monkeypatch.setenv("AZJOBS_DASHBOARD_ORIGINS", "https://ops.contoso.com, https://jobs.contoso.com")
    custom = the_dashboard(indexed(azjobs.dashboard.blueprint(queues=[busy])))
    for host in ("ops.contoso.com", "JOBS.contoso.com:443", HOST, "localhost:7071"):
        assert call(custom, "GET", "/api/dashboard/", headers={"host": host}).status_code == 200, host
    assert call(custom, "GET", "/api/dashboard/", headers={"host": "contoso.com"}).status_code == 400
    named = the_dashboard(indexed(azjobs.dashboard.blueprint(queues=[busy], allowed_origins=["https://ops.contoso.com"])))
    assert call(named, "GET", "/api/dashboard/", headers={"host": "ops.contoso.com"}).status_code == 200
    assert call(named, "GET", "/api/dashboard/", headers={"host": "jobs.contoso.com"}).status_code == 400


def principal_header(name: str = "ops@contoso.com", object_id: str = OBJECT_ID, auth_typ: str = "aad") -> str:
    """``x-ms-client-principal`` as App Service Authentication sends it for an Entra ID user: base64 of its JSON."""
    info = {"auth_typ": auth_typ, "claims": [
        {"typ": "aud", "val": "0d6b9c4e-8a4a-4c7b-9a57-3f1c3c1f2a10"},
        {"typ": "iss", "val": "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"},
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": object_id},
        {"typ": "name", "val": "Ops Person"},
        {"typ": "preferred_username", "val": name},
        {"typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress", "val": name},
        {"typ": "groups", "val": "f08bbbea-b793-4a36-a5fc-136c18d8aa8f"}],
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}
    return base64.b64encode(json.dumps(info).encode()).decode()


def test_with_entra_id_the_function_is_anonymous_at_the_host_and_needs_the_signed_in_user(busy):
    function = the_dashboard(indexed(azjobs.dashboard.blueprint(entra=True, allowed_principals=["ops@contoso.com"],
                                                                queues=[busy])))
    assert function.get_trigger().get_dict_repr()["authLevel"] == func.AuthLevel.ANONYMOUS
    unsigned = call(function, "GET", "/api/dashboard/")
    assert unsigned.status_code == 401 and "sign-in required" in unsigned.get_body().decode()
    allowed = call(function, "GET", "/api/dashboard/", headers={"x-ms-client-principal": principal_header()})
    assert allowed.status_code == 200 and "ops@contoso.com" in allowed.get_body().decode()
    stranger = call(function, "GET", "/api/dashboard/",
                    headers={"x-ms-client-principal": principal_header("eve@contoso.com", "0000-eve")})
    assert stranger.status_code == 403 and "eve@contoso.com is not allowed" in stranger.get_body().decode()
    # The loose name/id headers alone are not a sign-in, whatever they say.
    loose = call(function, "GET", "/api/dashboard/", headers={"x-ms-client-principal-name": "ops@contoso.com",
                                                              "x-ms-client-principal-id": OBJECT_ID})
    assert loose.status_code == 401
    # ... nor do they override the principal header's user.
    mixed = call(function, "GET", "/api/dashboard/", headers={
        "x-ms-client-principal": principal_header("eve@contoso.com", "0000-eve"),
        "x-ms-client-principal-name": "ops@contoso.com"})
    assert mixed.status_code == 403
    # Another provider's user with an allowed-looking name is not an Entra ID user.
    google = call(function, "GET", "/api/dashboard/", headers={"x-ms-client-principal": principal_header(auth_typ="google")})
    assert google.status_code == 403 and "not Microsoft Entra ID" in google.get_body().decode()


def test_with_entra_id_an_allowed_object_id_is_enough(busy):
    function = the_dashboard(indexed(azjobs.dashboard.blueprint(entra=True, allowed_principals=[OBJECT_ID.upper()],
                                                                queues=[busy])))
    renamed = call(function, "GET", "/api/dashboard/",
                   headers={"x-ms-client-principal": principal_header("renamed@contoso.com")})
    assert renamed.status_code == 200 and "renamed@contoso.com" in renamed.get_body().decode()


@pytest.mark.parametrize("value, message", [
    ("%%% not base64 %%%", "is not base64-encoded JSON"),
    (base64.b64encode(b"{\"auth_typ\": \"aad\", \"claims\": [").decode(), "is not base64-encoded JSON"),
    (base64.b64encode(b"{\"auth_typ\": \"aad\"}").decode(), "has no claims list"),
])
def test_with_entra_id_a_malformed_principal_header_is_a_clear_401(busy, value, message):
    function = the_dashboard(indexed(azjobs.dashboard.blueprint(entra=True, queues=[busy])))
    reply = call(function, "GET", "/api/dashboard/", headers={"x-ms-client-principal": value})
    assert reply.status_code == 401 and message in reply.get_body().decode()


@pytest.mark.parametrize("setting", [None, "False", "false", ""])
def test_with_entra_id_and_app_service_authentication_off_the_dashboard_refuses_to_serve(busy, monkeypatch, caplog,
                                                                                         setting):
    if setting is None:
        monkeypatch.delenv("WEBSITE_AUTH_ENABLED")
    else:
        monkeypatch.setenv("WEBSITE_AUTH_ENABLED", setting)
    with caplog.at_level(logging.ERROR, logger="azjobs.dashboard"):
        function = the_dashboard(indexed(azjobs.dashboard.blueprint(entra=True, queues=[busy])))
    # Said when the function app starts (the blueprint is built) ...
    assert "App Service Authentication is off (WEBSITE_AUTH_ENABLED" in caplog.text
    # ... and to every request, even one with a well-formed principal (anyone could have sent it).
    for path in ("/api/dashboard/", f"/api/dashboard/queues/{busy}", "/api/dashboard/login"):
        reply = call(function, "GET", path, headers={"x-ms-client-principal": principal_header()})
        text = reply.get_body().decode()
        assert reply.status_code == 503 and "App Service Authentication is off" in text, path
        assert busy not in text and "cannot ever work" not in text
    # The admin-key dashboard (the host's master key in front) does not depend on it.
    plain = the_dashboard(indexed(azjobs.dashboard.blueprint(queues=[busy])))
    assert call(plain, "GET", "/api/dashboard/").status_code == 200


def test_create_app_refuses_to_require_a_principal_without_app_service_authentication(client, monkeypatch):
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    with pytest.raises(ConfigurationError, match="WEBSITE_AUTH_ENABLED is not set"):
        create_app(client.connection, require_principal=True, background_sampling=False)
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    create_app(client.connection, require_principal=True, background_sampling=False)


def test_an_anonymous_dashboard_without_entra_id_is_refused():
    with pytest.raises(ConfigurationError, match="open to anyone"):
        azjobs.dashboard.blueprint(auth_level=func.AuthLevel.ANONYMOUS)
