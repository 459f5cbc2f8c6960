"""The polling back-off: how long a queue loop waits after finding nothing (or failing).

This is the Functions host's ``RandomizedExponentialBackoffStrategy`` (Storage Queues
extension): starting at 100 ms, each empty poll adds ``100 ms * 2**(n-1)`` scaled by a
random factor in [0.8, 1.2], until ``maxPollingInterval`` caps it; a poll that finds a
message resets it. Storage errors back off the same way. Roughly 0.2, 0.3, 0.5, 0.9, 1.7,
3.3 ... seconds, then the cap.
"""

from __future__ import annotations

import random
from datetime import timedelta

MINIMUM_INTERVAL_S = 0.1
RANDOMIZATION_FACTOR = 0.2


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class PollingBackoff:
    """Randomized exponential back-off between ``minimum`` and ``maximum`` (seconds or timedelta).

    Not thread-safe: each queue loop owns one.
    """

    def __init__(
        self,
        maximum: float | timedelta,
        *,
        minimum: float | timedelta = MINIMUM_INTERVAL_S,
        randomization: float = RANDOMIZATION_FACTOR,
        rng: random.Random | None = None,
    ) -> None:
        self.minimum = _seconds(minimum)
        self.maximum = max(_seconds(maximum), self.minimum)
        self.delta = self.minimum  # the host's deltaBackoff defaults to the minimum interval
        self.randomization = randomization
        self._rng = rng or random.Random()
        self.reset()

    def reset(self) -> None:
        """Back to the minimum (a message was found)."""
        self.current = self.minimum
        self._exponent = 1

    def next_delay(self, found: bool) -> float:
        """The wait before the next poll, in seconds, after a poll that ``found`` messages or not."""
        if found:
            self.reset()
            return self.current
        if self.current < self.maximum:
            factor = self._rng.uniform(1.0 - self.randomization, 1.0 + self.randomization)
            interval = self.minimum + factor * (2.0 ** (self._exponent - 1)) * self.delta
            if interval < self.maximum:
                self.current = interval
                self._exponent += 1
            else:
                self.current = self.maximum
        return self.current
