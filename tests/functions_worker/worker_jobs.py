"""The jobs of the language-worker tests' function app (tests/functions_worker/app/function_app.py).

Their queues are app settings, resolved per test (``%AZJOBS_LW_QUEUE%``, ``%AZJOBS_LW_TICKS%``), so
every test works its own queues; ``lw-literal`` is a literal queue name, only indexed.
"""

from __future__ import annotations

import asyncio

import azjobs

REGISTRY = azjobs.Registry()
#: The app setting the generated triggers and azjobs' own writes use (a connection string).
CONNECTION = "AZJOBS_LW_STORAGE"
QUEUE_SETTING = "AZJOBS_LW_QUEUE"
TICKS_SETTING = "AZJOBS_LW_TICKS"
QUEUE = f"%{QUEUE_SETTING}%"
TICKS = f"%{TICKS_SETTING}%"
LITERAL_QUEUE = "lw-literal"
TICK_SCHEDULE = "0 */5 * * * *"

CALLS: list = []


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="lw.succeed")
def succeed(n: int) -> int:
    CALLS.append(("succeed", n))
    return n * 2


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="lw.succeed_async")
async def succeed_async(n: int) -> int:
    await asyncio.sleep(0)
    CALLS.append(("succeed_async", n))
    return n


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="lw.flaky", retry=azjobs.Fixed(0, max_retries=3))
def flaky(n: int) -> None:
    CALLS.append(("flaky", n))
    raise RuntimeError(f"transient {n}")


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="lw.fatal")
def fatal(n: int) -> None:
    CALLS.append(("fatal", n))
    raise azjobs.Fail(f"permanent {n}")


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="lw.plain_failure", retry=azjobs.NoRetry())
def plain_failure(n: int) -> None:
    CALLS.append(("plain_failure", n))
    raise ValueError(f"plain failure {n}")


@azjobs.job(queue=QUEUE, registry=REGISTRY, name="lw.shout")
def shout(text: str) -> str:
    """A workflow step: its value travels back to the orchestration."""
    CALLS.append(("shout", text))
    return text.upper()


@azjobs.job(queue=LITERAL_QUEUE, registry=REGISTRY, name="lw.literal")
def literal(n: int) -> None:
    CALLS.append(("literal", n))


@azjobs.job(queue=TICKS, registry=REGISTRY, name="lw.tick", schedule=TICK_SCHEDULE)
def tick() -> None:
    CALLS.append(("tick",))
