"""Jobs for the azjobs.testing tests (inline mode, recording, the pytest plugin)."""

from __future__ import annotations

import asyncio

import azjobs

# What the jobs saw, in order, for the tests to read (cleared by each test).
seen: list = []


@azjobs.job(queue="inline-mail")
def greet(name: str, punctuation: str = "!") -> str:
    seen.append(("greet", name))
    return f"hello {name}{punctuation}"


@azjobs.job(queue="inline-mail", max_retries=2)
def flaky(key: str) -> str:
    seen.append(("flaky", azjobs.current_job().attempt))
    raise ConnectionError(f"mail server down for {key}")


@azjobs.job(queue="inline-mail", max_retries=3)
def second_time_lucky(key: str) -> str:
    attempt = azjobs.current_job().attempt
    seen.append(("second_time_lucky", attempt))
    if attempt < 2:
        raise TimeoutError("first attempt times out")
    return f"{key} on attempt {attempt}"


@azjobs.job(queue="inline-mail")
def describe(value: object) -> str:
    return type(value).__name__


@azjobs.job(queue="inline-orders")
def place_order(order_id: int) -> dict:
    seen.append(("place_order:start", order_id))
    receipt = send_receipt.enqueue(order_id)
    seen.append(("place_order:receipt", azjobs.result(receipt).status.value))
    return {"order": order_id, "receipt": receipt}


@azjobs.job(queue="inline-orders")
def send_receipt(order_id: int) -> str:
    seen.append(("send_receipt", order_id))
    return f"receipt {order_id}"


@azjobs.job(queue="inline-orders")
def ping_pong(n: int) -> None:
    ping_pong.enqueue(n + 1)


@azjobs.job(queue="inline-orders")
def nest(levels: int) -> int:
    return levels if levels == 0 else azjobs.result(nest.enqueue(levels - 1)).return_value + 1


@azjobs.job(queue="inline-orders")
async def add_async(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@azjobs.job(queue="inline-steps")
def fetch(url: str) -> str:
    return f"<{url}>"


@azjobs.job(queue="inline-steps")
def size(text: str) -> int:
    return len(text)


@azjobs.job(queue="inline-steps")
def total(sizes: list) -> int:
    return sum(sizes)


@azjobs.job(queue="inline-steps", max_retries=1)
def broken_step(value: int) -> int:
    raise ValueError(f"cannot take {value}")


@azjobs.job(queue="inline-reports", schedule="0 0 7 * * *")
def morning_report() -> str:
    job = azjobs.current_job()
    # scheduled_at is an aware datetime; written back in the wire form the test compares with.
    return f"{job.scheduled_at.isoformat(timespec='milliseconds').replace('+00:00', 'Z')} past_due={job.past_due}"


@azjobs.job(queue="inline-mail", track=False)
def untracked(name: str) -> str:
    seen.append(("untracked", name))
    return name


@azjobs.job(queue="inline-mail", retry=azjobs.NoRetry())
def refuse(name: str) -> str:
    raise PermissionError(f"{name} is not allowed")


@azjobs.job(queue="inline-orders")
def fan_out_forever(n: int) -> None:
    fan_out_forever.enqueue_many([n + 1, n + 2]).raise_for_failures()


@azjobs.job(queue="inline-orders")
def cancel_myself() -> str:
    """Asks for its own cancel from another thread, then works until it is told (as a long job would)."""
    import threading
    import time

    job = azjobs.current_job()
    threading.Thread(target=azjobs.cancel, args=(job.id,), daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job.raise_if_cancelled()
        time.sleep(0.05)
    return "never told"
