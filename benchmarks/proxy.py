"""A counting HTTP proxy on loopback: every storage call a client makes, by kind.

Put between any client (azjobs, the raw SDK, Celery/kombu, a subprocess worker) and
Azurite by pointing the client's queue endpoint at ``proxy.port``. Requests are parsed only
far enough to classify them (method, path, query, Content-Length); bytes pass unchanged.
The SDKs send one request at a time per connection (no pipelining), which is all it needs.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from urllib.parse import parse_qs, urlsplit

# Kinds of Azure Queue REST calls, named after what they do.
SEND, RECEIVE, PEEK, DELETE, UPDATE, CREATE, PROPERTIES, LIST, CLEAR, OTHER = (
    "send", "receive", "peek", "delete", "update", "create_queue", "queue_properties", "list_queues",
    "clear", "other",
)


def classify(method: str, target: str) -> str:
    """The kind of one request, from its method and request target (path and query)."""
    parts = urlsplit(target)
    segments = [s for s in parts.path.split("/") if s]
    query = {k.lower(): v for k, v in parse_qs(parts.query).items()}
    # /account[/queue[/messages[/id]]]
    if len(segments) >= 3 and segments[2] == "messages":
        if len(segments) == 3:
            if method == "POST":
                return SEND
            if method == "GET":
                return PEEK if query.get("peekonly", ["false"])[0].lower() == "true" else RECEIVE
            if method == "DELETE":
                return CLEAR
        elif method == "DELETE":
            return DELETE
        elif method == "PUT":
            return UPDATE
    elif len(segments) == 2:
        if method == "PUT" and "comp" not in query:
            return CREATE
        if method in ("GET", "HEAD") and query.get("comp") == ["metadata"]:
            return PROPERTIES
    elif len(segments) == 1 and query.get("comp") == ["list"]:
        return LIST
    return OTHER


class CountingProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port`` and counts requests by kind."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-proxy", daemon=True)
        self.port = 0

    def start(self) -> "CountingProxy":
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def reset(self) -> Counter[str]:
        """Return the counts so far and start again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
            return counts

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._requests(client_reader, server_writer), self._pipe(server_reader, client_writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        body_left = 0
        try:
            while data := await reader.read(65536):
                writer.write(data)
                buffer += data
                while True:
                    if body_left:
                        taken = min(body_left, len(buffer))
                        buffer = buffer[taken:]
                        body_left -= taken
                        if body_left:
                            break
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head, buffer = buffer[:end].decode("latin-1"), buffer[end + 4:]
                    body_left = self._count(head)
                await writer.drain()
        finally:
            writer.close()

    def _count(self, head: str) -> int:
        lines = head.split("\r\n")
        method, target = (lines[0].split(" ") + ["", ""])[:2]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        with self._lock:
            self.counts[self._kind(method, target)] += 1
        return length

    def _kind(self, method: str, target: str) -> str:
        """What one request counts as: a queue operation (send, receive, delete, update, other)."""
        return classify(method, target)


def total(counts: Counter[str]) -> int:
    return sum(counts.values())
