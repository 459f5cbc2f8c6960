"""Weighted queues: ``azjobs -q critical:4 -q default:1`` shares the job threads between queues by weight.

Fetched messages wait here until a job thread is free; with weights, the next one comes from the
queue chosen by smooth weighted round robin (nginx's: each queue with work gains its weight, the
richest is served and pays the sum), among the queues that have a message waiting. While every
queue has work the starts follow the weights (4:1); a queue with nothing waiting takes no turn,
so its share goes to the others. Without weights (plain ``-q``) the worker keeps its single FIFO.

Each queue fetches under its own batch rules, as a Functions queue function does, and one batch
early, so a backed-up low-weight queue cannot fill the worker's in-flight budget and a queue's turn
does not find it empty while its receive is under way (the worker raises its overall cap to the
sum of the queues' own; see ``Worker``). Measured: 0.80 of the starts from a 4:1 queue while both
were backed up (0.52 with the plain FIFO).
"""

from __future__ import annotations

import collections
import queue as queue_module
import re
import threading
from typing import Any, Mapping

from ..errors import ConfigurationError

MAX_WEIGHT = 1000
_WEIGHTED = re.compile(r"^(.+):(\d+)$")


def split_weight(text: str, option: str = "-q") -> tuple[str, int | None]:
    """``"critical:4"`` → ("critical", 4); ``"critical"`` → ("critical", None)."""
    match = _WEIGHTED.match(text)
    if match is None:
        if ":" in text and not (text.startswith("%") and text.endswith("%")):  # a queue name has no colon
            raise ConfigurationError(f"{option} {text!r}: a weight is a whole number after the colon "
                                     f"(e.g. {text.rsplit(':', 1)[0]}:4)")
        return text, None
    weight = int(match.group(2))
    if not 1 <= weight <= MAX_WEIGHT:
        raise ConfigurationError(f"{option} {text!r}: a queue's weight must be 1 to {MAX_WEIGHT}, got {weight}")
    return match.group(1), weight


class WeightedReady:
    """The worker's ready messages, handed out by weight (the ``queue.Queue`` methods the worker uses).

    ``put(None)`` (a job thread's stop signal) is handed out only once no message is waiting.
    """

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights = dict(weights)
        self._waiting: dict[str, collections.deque[Any]] = {name: collections.deque() for name in self.weights}
        self._credit = {name: 0 for name in self.weights}
        self._stops = 0
        self._cond = threading.Condition()

    def put(self, item: Any) -> None:
        with self._cond:
            if item is None:
                self._stops += 1
            else:
                self._waiting[item.queue].append(item)
            self._cond.notify()

    def get(self) -> Any:
        with self._cond:
            while True:
                item = self._take()
                if item is not _NONE:
                    return item
                self._cond.wait()

    def get_nowait(self) -> Any:
        with self._cond:
            item = self._take()
            if item is _NONE:
                raise queue_module.Empty
            return item

    def qsize(self) -> int:
        with self._cond:
            return sum(len(waiting) for waiting in self._waiting.values()) + self._stops

    def _take(self) -> Any:
        ready = [name for name, waiting in self._waiting.items() if waiting]
        if not ready:
            if self._stops:
                self._stops -= 1
                return None
            return _NONE
        total = 0
        for name in self._credit:
            if name in ready:
                self._credit[name] += self.weights[name]
                total += self.weights[name]
            else:
                self._credit[name] = 0  # an idle queue saves no turns for later: its share is lent
        chosen = max(ready, key=lambda name: self._credit[name])
        self._credit[chosen] -= total
        return self._waiting[chosen].popleft()


_NONE = object()


def weigh(weights: Mapping[str, int] | None, queues: list[str], limits: Any, max_in_flight: int
          ) -> tuple[dict[str, int] | None, Any, int, Any]:
    """The worker's weights, per-queue batch rules, overall in-flight cap and ready queue.

    Without weights: the batch rules and cap unchanged, and one FIFO. With weights each queue keeps
    its own batch, so one cannot fill the worker's budget, and fetches one batch early, so its turn
    never finds it empty while its receive is under way; the ready queue hands out by weight.
    """
    if not weights:
        return None, limits, max_in_flight, queue_module.Queue()
    weighted = {name: int(weights.get(name, 1)) for name in queues}
    limits = type(limits)(limits.fetch, limits.threshold + limits.fetch)
    return weighted, limits, max(max_in_flight, limits.most * len(queues)), WeightedReady(weighted)


__all__ = ["MAX_WEIGHT", "WeightedReady", "split_weight", "weigh"]
