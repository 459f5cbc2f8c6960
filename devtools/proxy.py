"""A fault-injecting HTTP proxy on loopback, in front of Azurite's queue port.

The reliability suite points a worker (and an enqueuing client) at the proxy instead of
Azurite, then breaks the path on purpose:

- ``cut()`` drops every open connection and resets new ones until ``restore()``: the
  storage account is unreachable, as in an outage or a network partition;
- ``fail("DELETE", mode=...)`` answers matching requests with an error for a while:
  ``"error"`` answers 500 without forwarding, ``"drop"`` closes the connection without
  forwarding, ``"drop_after"`` forwards the request and then closes the connection without
  passing the answer on (the call happened, the caller cannot know), ``"delay"`` holds the
  request for ``delay_s`` seconds and then forwards it (a slow network or service), ``"stall"`` takes
  the request and never answers it, holding the connection open until the rule ends (storage that
  accepts connections but does not answer, the outage a client sees as timeouts).

It speaks just enough HTTP/1.1 to find request boundaries on keep-alive connections
(Content-Length and chunked bodies), so one rule can hit one kind of call. It runs an
asyncio loop on a daemon thread; every control method is thread-safe. Only loopback
addresses are accepted, on both sides.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Optional

LOOPBACK = ("127.0.0.1", "::1", "localhost")
MODES = ("error", "drop", "drop_after", "delay", "stall")
ERROR_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>InternalError</Code>'
    b"<Message>fault injected by devtools.proxy</Message></Error>"
)


@dataclass(frozen=True)
class Rule:
    """Fail requests whose method is ``method`` (and whose path contains ``path_contains``)."""

    method: str
    mode: str = "error"
    status: int = 500
    path_contains: str = ""
    until: Optional[float] = None  # time.monotonic() after which the rule no longer applies
    delay_s: float = 0.0  # "delay": how long a matching request is held before it is forwarded
    # The answer of an "error" rule (default: a 500 InternalError in the XML of the queue service).
    body: bytes = ERROR_BODY
    content_type: str = "application/xml"
    error_code: str = "InternalError"

    def matches(self, method: str, path: str, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return method == self.method and self.path_contains in path


class _Closed(Exception):
    """The peer went away mid-message."""


def _check_loopback(host: str) -> str:
    if host not in LOOPBACK:
        raise ValueError(f"the fault proxy only listens on and connects to loopback, not {host!r}")
    return host


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), so the other side fails at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
    return lines[0], fields


async def _read_body(reader: asyncio.StreamReader, fields: dict[str, str], until_eof: bool) -> bytes:
    """The message body after a head, raw (chunk framing kept) so it can be forwarded as is."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            parts.append(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    line = await reader.readuntil(b"\r\n")
                    parts.append(line)
                    if line == b"\r\n":
                        return b"".join(parts)
            parts.append(await reader.readexactly(size + 2))
    if "content-length" in fields:
        return await reader.readexactly(int(fields["content-length"]))
    return await reader.read() if until_eof else b""


class FaultProxy:
    """Forwards loopback HTTP to ``upstream_port`` and breaks it on request."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1", listen_host: str = "127.0.0.1",
                 listen_port: int = 0, reconnect_upstream: bool = False) -> None:
        self.upstream = (_check_loopback(upstream_host), upstream_port)
        # Azurite closes a keep-alive connection after 5 s idle. By default the next request on the
        # client's connection is forwarded on that closed upstream connection and fails (dropped).
        # With reconnect_upstream (settable at any time) it goes on a new upstream connection, as it
        # would without the proxy: a client notices a closed pooled connection before reusing it.
        self.reconnect_upstream = reconnect_upstream
        self.listen_host = _check_loopback(listen_host)
        self.port = listen_port
        self.requests: Counter[str] = Counter()  # forwarded requests by method
        self.faults: Counter[str] = Counter()  # requests a rule failed, by method
        self.resets = 0  # connections reset while cut
        self._rules: tuple[Rule, ...] = ()
        self._remaining: dict[str, int] = {}  # rules limited to a number of requests: how many are left
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()  # connections being served, ended by stop() before the loop closes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "FaultProxy":
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, self.listen_host, self.port))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported by start()
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        """Close every connection and the listener; the thread ends."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
            # End every connection's coroutine now: one left pending is destroyed after the loop
            # closed, and its cleanup then raises inside the garbage collector.
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # the loop already stopped
            pass
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    def connection_string(self, connection_string: str) -> str:
        """``connection_string`` with its QueueEndpoint pointed at this proxy (other endpoints unchanged)."""
        pattern = re.compile(r"(QueueEndpoint=https?://)([^/;]+)")
        if not pattern.search(connection_string):
            raise ValueError("the connection string has no explicit QueueEndpoint to redirect")
        return pattern.sub(lambda m: f"{m.group(1)}{self.listen_host}:{self.port}", connection_string)

    # -- faults --------------------------------------------------------------
    def cut(self) -> None:
        """Make storage unreachable: reset open connections now and every new one until ``restore``."""
        self._cut = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._reset_all)

    def restore(self) -> None:
        """Forward again after ``cut``."""
        self._cut = False

    @property
    def is_cut(self) -> bool:
        return self._cut

    def fail(self, method: str, mode: str = "error", *, for_s: float | None = None, status: int = 500,
             path_contains: str = "", times: int | None = None, delay_s: float = 0.0, body: bytes = ERROR_BODY,
             content_type: str = "application/xml", error_code: str = "InternalError") -> None:
        """Fail ``method`` requests (optionally only paths containing ``path_contains``) for ``for_s`` s, or until
        ``heal``; with ``times``, only the next ``times`` of them. ``mode="delay"`` holds each for ``delay_s``.
        ``body``, ``content_type`` and ``error_code`` make the answer of an "error" rule look as the service's
        would (e.g. a Table JSON error)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, got {times!r}")
        if (mode == "delay") != (delay_s > 0):
            raise ValueError(f"delay_s goes with mode='delay' and must be positive, got {mode!r} and {delay_s!r}")
        until = None if for_s is None else time.monotonic() + for_s
        rule = Rule(method.upper(), mode, status, path_contains, until, delay_s, body, content_type, error_code)
        with self._lock:
            self._rules = tuple(r for r in self._rules if r.method != rule.method) + (rule,)
            self._remaining.pop(rule.method, None)
            if times is not None:
                self._remaining[rule.method] = times

    def heal(self, method: str | None = None) -> None:
        """Stop failing ``method`` (every method if None)."""
        with self._lock:
            self._rules = tuple(r for r in self._rules if method is not None and r.method != method.upper())
            self._remaining = {m: n for m, n in self._remaining.items() if method is not None and m != method.upper()}

    # -- serving -------------------------------------------------------------
    def _reset_all(self) -> None:
        for writer in list(self._writers):
            self.resets += 1
            _reset(writer)
        self._writers.clear()

    def _rule_for(self, method: str, path: str) -> Rule | None:
        now = time.monotonic()
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path, now):
                    left = self._remaining.get(rule.method)
                    if left is not None:
                        if left <= 0:
                            continue
                        self._remaining[rule.method] = left - 1
                    return rule
        return None

    def _in_force(self, rule: Rule) -> bool:
        """Whether ``rule`` still applies (not healed, replaced or past its time)."""
        with self._lock:
            return rule in self._rules and (rule.until is None or time.monotonic() < rule.until)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.resets += 1
            _reset(writer)
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while not self._cut:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    request_line, fields = _headers(head)
                    body = await _read_body(reader, fields, until_eof=False)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
                    return
                if self._cut:
                    self.resets += 1
                    return
                method, path = (request_line.split(" ") + ["", ""])[:2]
                rule = self._rule_for(method, path)
                if rule is not None and rule.mode == "delay":
                    self.faults[method] += 1
                    await asyncio.sleep(rule.delay_s)
                    rule = None  # then forwarded and answered as usual
                if rule is not None and rule.mode == "stall":
                    self.faults[method] += 1
                    while self._in_force(rule) and not writer.transport.is_closing():
                        await asyncio.sleep(0.05)
                    return
                if rule is not None and rule.mode in ("error", "drop"):
                    self.faults[method] += 1
                    if rule.mode == "drop":
                        return
                    writer.write(
                        f"HTTP/1.1 {rule.status} Injected Fault\r\nContent-Type: {rule.content_type}\r\n"
                        f"x-ms-error-code: {rule.error_code}\r\nContent-Length: {len(rule.body)}\r\n\r\n"
                        .encode("latin-1") + rule.body)
                    await writer.drain()
                    continue
                if upstream is not None and self.reconnect_upstream and upstream[0].at_eof():
                    upstream[1].transport.abort()  # closed by the server while idle
                    upstream = None
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.upstream)
                up_reader, up_writer = upstream
                up_writer.write(head + body)
                await up_writer.drain()
                self.requests[method] += 1
                try:
                    response_head = await up_reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                status_line, response_fields = _headers(response_head)
                status = int(status_line.split(" ")[1])
                has_body = method != "HEAD" and status not in (204, 304) and not 100 <= status < 200
                response_body = await _read_body(up_reader, response_fields, until_eof=True) if has_body else b""
                if rule is not None:  # drop_after: the call happened, its answer is lost
                    self.faults[method] += 1
                    return
                if self._cut:
                    return
                writer.write(response_head + response_body)
                await writer.drain()
                if "close" in response_fields.get("connection", "").lower():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            if upstream is not None:
                upstream[1].transport.abort()
            if not writer.transport.is_closing():
                if self._cut:
                    _reset(writer)
                else:
                    writer.transport.abort()


__all__ = ["FaultProxy", "Rule", "MODES"]
