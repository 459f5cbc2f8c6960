"""A "stall" fault for the fault proxy: hold matching requests for a while, then forward them.

``StallProxy`` is a ``devtools.proxy.FaultProxy`` that can also make storage slow instead of
broken: ``stall("PUT", seconds=2.0, path_contains="visibilitytimeout=3", for_s=10)`` holds
every matching request for 2 s before forwarding it. The request still reaches storage
and is applied there; a client whose own timeout ran out meanwhile never sees the answer
(as with a slow or congested storage account). Other requests, on other connections, are
not held.

Options narrow what is stalled: ``for_s`` (a time window), ``count`` (at most that many
requests), ``once_per_target`` (at most one request per path without its query string,
e.g. one renewal per message: the first call to a message stalls, the caller's retry
does not). ``stalled`` counts held requests by method; ``stall_log`` lists when and what.

Kept apart from ``devtools/proxy.py``: it wraps the client side of each proxied connection
so the request head is held once read, leaving the proxy's own forwarding untouched.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from devtools.proxy import FaultProxy

REQUEST_HEAD_END = b"\r\n\r\n"


@dataclass
class StallRule:
    """Hold ``method`` requests whose path contains ``path_contains`` for ``seconds``."""

    method: str
    seconds: float
    path_contains: str = ""
    until: Optional[float] = None  # time.monotonic() after which the rule no longer applies
    remaining: Optional[int] = None  # requests still to stall (None: no limit)
    once_per_target: bool = False
    targets: set[str] = field(default_factory=set)  # paths (no query) already stalled

    def take(self, method: str, path: str, now: float) -> bool:
        """True if this request is to be stalled (and counts it against the rule's limits)."""
        if self.until is not None and now >= self.until:
            return False
        if method != self.method or self.path_contains not in path:
            return False
        if self.remaining is not None and self.remaining <= 0:
            return False
        target = path.split("?", 1)[0]
        if self.once_per_target:
            if target in self.targets:
                return False
            self.targets.add(target)
        if self.remaining is not None:
            self.remaining -= 1
        return True


class _StallingReader:
    """The client side of one connection: a request head that matches a stall rule is held, then returned."""

    def __init__(self, reader: asyncio.StreamReader, proxy: "StallProxy") -> None:
        self._reader = reader
        self._proxy = proxy

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        data = await self._reader.readuntil(separator)
        if separator == REQUEST_HEAD_END:
            delay = self._proxy._stall_for(data)
            if delay > 0:
                await asyncio.sleep(delay)
        return data

    def __getattr__(self, name: str) -> Any:  # readexactly, read, at_eof ...
        return getattr(self._reader, name)


class StallProxy(FaultProxy):
    """A ``FaultProxy`` that can also hold requests (``stall``) before forwarding them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stalled: Counter[str] = Counter()  # requests held, by method
        self.stall_log: list[tuple[float, str]] = []  # (time.time(), path without query) of each held request
        self._stall_rules: tuple[StallRule, ...] = ()
        self._stall_lock = threading.Lock()

    def stall(self, method: str, seconds: float, *, path_contains: str = "", for_s: float | None = None,
              count: int | None = None, once_per_target: bool = False) -> None:
        """Hold matching ``method`` requests ``seconds`` before forwarding them, until ``unstall``.

        ``for_s``: only requests arriving in the next ``for_s`` seconds; ``count``: at most that
        many requests; ``once_per_target``: at most one request per path (query string ignored).
        Replaces an earlier stall of the same method.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be zero or more, got {seconds}")
        if count is not None and count < 0:
            raise ValueError(f"count must be zero or more, got {count}")
        until = None if for_s is None else time.monotonic() + for_s
        rule = StallRule(method.upper(), seconds, path_contains, until, count, once_per_target)
        with self._stall_lock:
            self._stall_rules = tuple(r for r in self._stall_rules if r.method != rule.method) + (rule,)

    def unstall(self, method: str | None = None) -> None:
        """Stop stalling ``method`` (every method if None); requests already held still wait their time."""
        with self._stall_lock:
            self._stall_rules = tuple(r for r in self._stall_rules
                                      if method is not None and r.method != method.upper())

    def _stall_for(self, head: bytes) -> float:
        """Seconds to hold the request whose head is ``head`` (0: forward at once)."""
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, path = (request_line.split(" ") + ["", ""])[:2]
        now = time.monotonic()
        with self._stall_lock:
            for rule in self._stall_rules:
                if rule.take(method, path, now):
                    self.stalled[method] += 1
                    self.stall_log.append((time.time(), path.split("?", 1)[0]))
                    return rule.seconds
        return 0.0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await super()._serve(_StallingReader(reader, self), writer)  # type: ignore[arg-type]


__all__ = ["StallProxy", "StallRule"]
