"""Shutdown under load: SIGTERM with 24 jobs running and 200 queued.

The worker must exit 0 within its grace period, after the running jobs finished, without
starting another; every other message must be back on the queue and visible at once (not
hidden until a 60 s lease ends).
"""

from __future__ import annotations

import signal
import subprocess
import time

from azjobs import Call
from azjobs.runtime.worker import SHUTDOWN_BUDGET_S
from tests.jobs import reliability_jobs as rel
from tests.reliability.support import (Ledger, actions, all_finished, log_events, log_text, report,
                                       sigterm_and_collect, spawn, wait_for)

RUNNING = 24
QUEUED = 200
JOB_S = 4.0
GRACE_S = 20.0


def test_sigterm_under_load_finishes_running_jobs_and_leaves_the_rest_visible(connection_string, client, queue_name,
                                                                              raw_queue, test_dir, processes):
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    keys = [f"s{i:03d}" for i in range(RUNNING + QUEUED)]
    rel.work.options(queue=queue_name).enqueue_many([Call(key, JOB_S) for key in keys]).raise_for_failures()
    # 24 jobs at once, fetched in two batches of 12; a 60 s lease would hide a leaked message for a minute.
    worker = spawn(connection_string, test_dir, "-q", queue_name, "-c", str(RUNNING), "-f", "12", "-r", "60",
                   "--grace", str(GRACE_S))
    processes.append(worker)
    assert wait_for(lambda: len(Ledger.read(test_dir).starts) >= RUNNING, timeout=60), log_text(test_dir)
    stopped = sigterm_and_collect(worker, test_dir, queue, GRACE_S + 15)
    code, exit_s, ledger, started = stopped.code, stopped.exit_s, stopped.ledger, stopped.started
    unfinished, visible, visible_keys = stopped.unfinished, stopped.visible, stopped.visible_keys
    report("shutdown", jobs=len(keys), in_flight_at_sigterm=len(started), finished=ledger.finished(keys),
           visible_after_exit=len(visible), exit_code=code, exit_s=round(exit_s, 1),
           lost=len(set(keys) - started - set(visible_keys)))
    assert code == 0, log_text(test_dir)
    assert exit_s < GRACE_S  # the running jobs took ~4 s; the grace period was not needed in full
    assert len(started) >= RUNNING and unfinished == []
    assert all(len(ledger.finishes[key]) == 1 for key in started)
    # Nothing started after SIGTERM is left half done, and every unstarted job is visible now, once.
    assert sorted(visible_keys) == sorted(set(keys) - started)
    assert len(visible) == len(keys) - len(started)
    events = actions(test_dir)
    assert "worker_stopping" in events and "worker_stopped" in events
    assert events.count("job_succeeded") == len(started)


OUTAGE_GRACE_S = 3.0
# What the worker itself controls: it stops by the end of its grace plus SHUTDOWN_BUDGET_S (1 s); 1 s more
# covers the signal reaching its handler and the last log line on a loaded 2-core machine.
STOP_SLACK_S = 1.0
# The process exits after that, once the interpreter has shut down (tenths of a second: azjobs skips its
# last garbage collection). This bound is not tight on purpose: on a loaded machine scheduling alone can
# add seconds; it still fails a worker that keeps retrying storage after its grace (30-90 s before) or
# waits 5 s on each stuck thread.
EXIT_MARGIN_S = 5.0


def _stopped_after(test_dir, signalled_at: float) -> float | None:
    """Seconds from ``signalled_at`` (time.time()) to the worker's own ``worker_stopped`` log line."""
    from datetime import datetime

    for event in log_events(test_dir):
        if event.get("action") == "worker_stopped":
            return datetime.fromisoformat(event["time"]).timestamp() - signalled_at
    return None


def _sigterm_and_wait(worker, timeout: float) -> tuple[int | None, float, float]:
    """SIGTERM, then wait up to ``timeout`` s for the exit (killed past it: code None); (code, when, exit_s)."""
    signalled_at, signalled = time.time(), time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None  # what a container runtime would SIGKILL
        worker.kill()
        worker.wait(10)
    return code, signalled_at, time.monotonic() - signalled


def test_sigterm_during_a_storage_outage_stops_the_worker_within_its_grace_period_and_the_shutdown_budget(
        proxy, proxied, connection_string, client, queue_name, raw_queue, test_dir, processes):
    """A container runtime SIGKILLs a worker that overruns its grace; an outage must not make it overrun.

    One job runs and 7 are fetched but unstarted when storage becomes unreachable and
    SIGTERM arrives. The unstarted ones cannot be released and the finished one cannot be
    deleted: they must be left to reappear when their lease ends, not retried past the grace.
    """
    raw_queue(queue_name)
    client.ensure_queue(queue_name)
    keys = [f"o{i:02d}" for i in range(20)]
    rel.work.options(queue=queue_name).enqueue_many([Call(key, 2.0) for key in keys]).raise_for_failures()
    worker = spawn(proxied, test_dir, "-q", queue_name, "-c", "1", "-f", "8", "-r", "5",
                   "--grace", str(OUTAGE_GRACE_S))
    processes.append(worker)
    assert wait_for(lambda: Ledger.read(test_dir).starts, timeout=60), log_text(test_dir)
    proxy.cut()
    try:
        # The running job needs ~2 s, the grace is 3 s.
        code, signalled_at, exit_s = _sigterm_and_wait(worker, OUTAGE_GRACE_S + SHUTDOWN_BUDGET_S + EXIT_MARGIN_S)
    finally:
        proxy.restore()
    stopped_s = _stopped_after(test_dir, signalled_at)
    # Nothing is lost either way: what the worker held comes back after its 5 s lease.
    rescuer = spawn(connection_string, test_dir, "-q", queue_name, "-r", "5", name="rescuer")
    processes.append(rescuer)
    assert wait_for(all_finished(test_dir, keys), timeout=60), f"lost: {Ledger.read(test_dir).lost(keys)}"
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(30) == 0
    report("shutdown_in_outage", jobs=len(keys), grace_s=OUTAGE_GRACE_S, exit_code=code,
           stopped_s=None if stopped_s is None else round(stopped_s, 2), exit_s=round(exit_s, 2),
           lost=len(Ledger.read(test_dir).lost(keys)))
    assert code == 0, f"no clean exit within {exit_s:.1f}s of SIGTERM with a {OUTAGE_GRACE_S}s grace: killed"
    assert stopped_s is not None and stopped_s <= OUTAGE_GRACE_S + SHUTDOWN_BUDGET_S + STOP_SLACK_S, stopped_s


def test_sigterm_while_storage_stops_answering_stops_the_worker_within_its_grace_period_and_the_shutdown_budget(
        proxy, proxied, client, queue_name, test_dir, processes):
    """Storage that takes requests and answers none (timeouts, not resets): the worker's receive, and its
    workflows runner's, wait inside SDK calls for up to 30 s each. Neither may keep the worker past its grace."""
    client.ensure_queue(queue_name)
    worker = spawn(proxied, test_dir, "-q", queue_name, "--grace", str(OUTAGE_GRACE_S))
    processes.append(worker)
    assert wait_for(lambda: {"workflows_on", "workflows_off"} & set(actions(test_dir)), timeout=60), log_text(test_dir)
    proxy.fail("GET", "stall", path_contains="/messages")  # every receive from now on hangs
    pollers = 2 if "workflows_on" in actions(test_dir) else 1  # the queue's receiver, the workflows runner
    assert wait_for(lambda: proxy.faults["GET"] >= pollers, timeout=30), log_text(test_dir)
    try:
        code, signalled_at, exit_s = _sigterm_and_wait(worker, OUTAGE_GRACE_S + SHUTDOWN_BUDGET_S + EXIT_MARGIN_S)
    finally:
        proxy.heal()
    stopped_s = _stopped_after(test_dir, signalled_at)
    report("shutdown_storage_silent", grace_s=OUTAGE_GRACE_S, stalled_receives=proxy.faults["GET"],
           exit_code=code, stopped_s=None if stopped_s is None else round(stopped_s, 2), exit_s=round(exit_s, 2))
    assert code == 0, f"no clean exit within {exit_s:.1f}s of SIGTERM with a {OUTAGE_GRACE_S}s grace: killed"
    assert stopped_s is not None and stopped_s <= OUTAGE_GRACE_S + SHUTDOWN_BUDGET_S + STOP_SLACK_S, stopped_s


RENEWED_LEASE_S = 60  # renewed 30 s after the receive; that call may wait min(half of what is left, 10 s) = 10 s
SHORT_GRACE_S = 1.0


def test_a_lease_renewal_waiting_on_storage_that_does_not_answer_does_not_hold_the_exit(proxy, proxied, client,
                                                                                       queue_name, test_dir,
                                                                                       processes):
    """A renewal sent just before SIGTERM to storage that takes it and never answers waits up to 10 s. The job
    runs past the grace and is abandoned (its message reappears when its lease ends); the process exits then,
    leaving that renewal behind, instead of waiting it out."""
    client.ensure_queue(queue_name)
    rel.work.options(queue=queue_name).enqueue("long", 300.0)
    worker = spawn(proxied, test_dir, "-q", queue_name, "-c", "1", "-r", str(RENEWED_LEASE_S),
                   "--grace", str(SHORT_GRACE_S))
    processes.append(worker)
    assert wait_for(lambda: Ledger.read(test_dir).starts, timeout=60), log_text(test_dir)
    proxy.fail("PUT", "stall", path_contains="/messages/")  # Update Message: the lease renewals
    assert wait_for(lambda: proxy.faults["PUT"] >= 1, timeout=RENEWED_LEASE_S), log_text(test_dir)
    try:
        code, signalled_at, exit_s = _sigterm_and_wait(worker, SHORT_GRACE_S + SHUTDOWN_BUDGET_S + EXIT_MARGIN_S)
    finally:
        proxy.heal()
    stopped_s = _stopped_after(test_dir, signalled_at)
    report("shutdown_renewal_unanswered", grace_s=SHORT_GRACE_S, exit_code=code,
           stopped_s=None if stopped_s is None else round(stopped_s, 2), exit_s=round(exit_s, 2))
    assert code is not None, f"still running {exit_s:.1f}s after SIGTERM with a {SHORT_GRACE_S}s grace: killed"
    assert code == 1 and "grace_expired" in actions(test_dir)  # the running job was abandoned, as it must be
    assert stopped_s is not None and stopped_s <= SHORT_GRACE_S + SHUTDOWN_BUDGET_S + STOP_SLACK_S, stopped_s
