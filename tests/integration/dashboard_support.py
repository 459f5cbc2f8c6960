"""Helpers for the dashboard tests: serve the ASGI app on a real port, speak HTTP to it, make poison records,
list the app's routes, give each test its own sessions table."""

from __future__ import annotations

import http.client
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import pytest

from azjobs.dashboard.sessions import TABLE_ENV
from tests.integration.drivers import RunnerDriver
from tests.jobs import failure_jobs

ADMIN_KEY = "dashboard-test-admin-key-0123456789"


@pytest.fixture
def sessions_table(client, monkeypatch):
    """A sessions table of this test's own (``$AZJOBS_DASHBOARD_TABLE``, so served apps and commands use it)."""
    table = f"dashsess{uuid.uuid4().hex[:16]}"
    monkeypatch.setenv(TABLE_ENV, table)
    yield table
    try:
        client.connection.table_service().delete_table(table)
    except Exception:
        pass


def session_rows(client, table: str) -> list[dict]:
    """The rows of a sessions table (none when it does not exist yet)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return list(client.connection.table_service().get_table_client(table).list_entities())
    except ResourceNotFoundError:
        return []


def route_paths(app, values: dict[str, str]) -> list[str]:
    """Every route of a Starlette app (mounts walked) as a concrete path, each ``{param}`` filled from ``values``:
    a page added later is covered without touching the test (a new parameter name fails it, asking for a value)."""
    from starlette.routing import Mount, Route

    found: list[str] = []

    def walk(routes, prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(route.routes, prefix + route.path)
            elif isinstance(route, Route):
                def fill(match, path=route.path) -> str:
                    name = match.group(1).split(":")[0]
                    assert name in values, f"route {path} has a parameter {name!r} the test gives no value for"
                    return quote(values[name], safe="")

                found.append(prefix + re.sub(r"\{([^}]+)\}", fill, route.path))
            else:
                raise AssertionError(f"a route of a kind the test does not know: {route!r}")

    walk(app.routes, "")
    return found


class Served:
    """An ASGI app served by uvicorn on 127.0.0.1 (a free port) in a thread, lifespan included."""

    def __init__(self, app, **config) -> None:
        """``config``: more ``uvicorn.Config`` options (``proxy_headers=False``: X-Forwarded-* left to the app)."""
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    access_log=False, lifespan="on", **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str


@dataclass
class Browserless:
    """A minimal HTTP client for the dashboard: keeps its session cookie, sends an Origin on POST like a browser."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    address: str = "127.0.0.1"

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None,
                origin: str | None = "same") -> Reply:
        """``headers`` may set ``Host`` (http.client then sends that one instead of its own)."""
        conn = http.client.HTTPConnection(self.address, self.port, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if method == "POST" and origin is not None:
            sent["Origin"] = f"http://{self.address}:{self.port}" if origin == "same" else origin
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    cookie_name, _, rest = value.partition("=")
                    cookie_value = rest.split(";", 1)[0].strip('"')
                    if "max-age=0" in value.lower() or not cookie_value:
                        self.cookies.pop(cookie_name, None)
                    else:
                        self.cookies[cookie_name] = cookie_value
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
        finally:
            conn.close()

    def get(self, path: str, **kwargs) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict | None = None, **kwargs) -> Reply:
        return self.request("POST", path, form=form or {}, **kwargs)

    def login(self, key: str = ADMIN_KEY) -> Reply:
        return self.post("/login", {"key": key, "next": "/"})

    def csrf(self, path: str = "/") -> str:
        """The CSRF token the dashboard puts in its forms for this session."""
        match = re.search(r'name="csrf" value="([^"]+)"', self.get(path).text)
        assert match, "no CSRF token on the page: not logged in?"
        return match.group(1)


def poison(client, queue: str, tokens: list[str]) -> RunnerDriver:
    """Dead-letter one ``failure_jobs.gives_up`` job per token on ``queue`` (run by the real core)."""
    driver = RunnerDriver(client, queue, failure_jobs.registry_for(queue))
    for token in tokens:
        failure_jobs.gives_up.options(queue=queue).enqueue(token)
    driver.run_until(lambda: all(failure_jobs.calls(t) for t in tokens))
    return driver


def count(client, name: str) -> int:
    return int(client.queue(name).get_queue_properties().approximate_message_count or 0)
