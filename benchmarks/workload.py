"""The CPU-bound workload shared by the azjobs job and the Celery task: pure Python, no I/O.

``burn()`` does a fixed amount of arithmetic (``CPU_ITERATIONS`` rounds), about 20 ms of
CPU on the 2-core machine the benchmarks were written on. A fixed amount of work (rather
than "loop until 20 ms passed") gives every contender exactly the same jobs; the harness
measures what one call costs on the machine at hand and prints it with the results.
It holds the GIL throughout, so threads in one process cannot run two at once.
"""

from __future__ import annotations

import time

CPU_ITERATIONS = 430_000  # ≈ 20 ms of CPU on the reference machine (Python 3.11)


def burn(iterations: int = CPU_ITERATIONS) -> int:
    x = 0
    for i in range(iterations):
        x = (x * 31 + i) % 1_000_003
    return x


def calibrate(calls: int = 15) -> float:
    """Median CPU seconds of one ``burn()`` in this process (thread CPU time, so other load does not count)."""
    burn(CPU_ITERATIONS // 10)  # warm up
    times = []
    for _ in range(calls):
        start = time.thread_time()
        burn()
        times.append(time.thread_time() - start)
    times.sort()
    return times[len(times) // 2]
