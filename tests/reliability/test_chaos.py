"""Chaos: 200 jobs that exit, hang, raise or need lease renewals, while renewals stall.

200 jobs on one worker process (``-c 8 -r 3``, host.json ``functionTimeout`` 6 s,
``maxDequeueCount`` 2, ``visibilityTimeout`` 4 s), enqueued in a shuffled order:

- 5 % call ``sys.exit(3)`` and 5 % raise: failures, retried once (``Fixed(0.5, max_retries=1)``)
  and then poisoned with their error (``SystemExit``, ``ChaosError``);
- 5 % hang past the 6 s timeout: each delivery times out, its message is released for 4 s
  and the second delivery is poisoned (``max_dequeue_count``, ``JobTimeout``). Half are sync
  jobs sleeping 7 s, whose thread is abandoned and replaced; the 4 s release outlasts such a
  thread (1 s past the timeout), so a job never runs beside its own abandoned run. The other
  half are ``async def`` jobs, cancelled at the timeout. (Ten sync hangs on ``-c 8`` could
  leave 8 threads stuck at once, and then the worker rightly stops with exit status 3 for its
  supervisor to restart it; up to 6 at once were seen in trial runs.);
- 4 % run 3.5-5 s, longer than the 3 s lease: their leases must be renewed (as are those of
  hanging jobs and of fetched messages waiting for a thread);
- the rest take 50 ms.

The worker talks to storage through a proxy that stalls lease renewals (``PUT`` with
``visibilitytimeout=3``) for 2 s each, the first renewal of every message renewed during the
first 15 s. A 2 s stall is longer than what is left of a lease when it is renewed (1.5 s), so
the worker has to give up on the call in time and renew again, while the other leases keep
being renewed. (Stalling the retries too, for longer than the lease has left, is storage
being down rather than slow: leases lapse and messages are worked again.)

Every job reaches an outcome (success; or retry then poison), none is lost, the queue ends
empty, no job ever runs twice at once (from the ledger, in file order), no lease is lost, and
the worker exits 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter, defaultdict
from datetime import datetime

import pytest
from azure.core.exceptions import ResourceNotFoundError

from azjobs.model.poison_record import PoisonRecord
from devtools.stall import StallProxy
from tests.jobs import chaos_jobs as chaos
from tests.reliability.support import (actions, ledger_path, log_events, log_text, message_count, receive_all, report,
                                       spawn, stop, wait_for)

SEED = int(os.environ.get("AZJOBS_RELIABILITY_SEED", "7001"))
JOBS = 200
EXITS = HANGS = RAISES = 10  # 5 % each
SYNC_HANGS = HANGS // 2  # the rest are async
LONG = 8  # 4 %: longer than a lease
SHORT_S = 0.05
LONG_S = (3.5, 5.0)
LEASE_S = 3
TIMEOUT_S = 6  # host.json functionTimeout: above the longest long job
HANG_S = TIMEOUT_S + 1.0
VISIBILITY_S = 4  # host.json visibilityTimeout: a timed-out job's thread is done before its message is back
MAX_DEQUEUE = 2
STALL_S = 2.0
STALL_WINDOW_S = 15.0
CONCURRENCY = 8
DEADLINE_S = 90.0

HOST_JSON = {
    "version": "2.0",
    "functionTimeout": f"00:00:{TIMEOUT_S:02d}",
    "extensions": {"queues": {"maxDequeueCount": MAX_DEQUEUE, "visibilityTimeout": f"00:00:{VISIBILITY_S:02d}",
                              "maxPollingInterval": "00:00:01"}},
}
# What each failing kind's poison record must say: (error type, reason).
POISONED_AS = {
    "exit": ("SystemExit", "job_failed"),
    "raise": (f"{chaos.__name__}.ChaosError", "job_failed"),
    "hang": ("azjobs.errors.JobTimeout", "max_dequeue_count"),
    "hang_async": ("azjobs.errors.JobTimeout", "max_dequeue_count"),
}
HANGING = ("hang", "hang_async")
ENDS = set(chaos.END_MARK.values())


@pytest.fixture
def stall_proxy(azurite):
    """A fault proxy that can stall, in front of the session Azurite's queue port."""
    server = StallProxy(azurite.queue_port).start()
    # Only injected faults count: a keep-alive connection Azurite closed while idle is replaced,
    # not used to drop the next request (a no-op where the proxy cannot do that).
    server.reconnect_upstream = True
    yield server
    server.stop()


def _plan(rng: random.Random) -> dict[str, tuple[str, float]]:
    """key -> (kind, seconds), in a shuffled order."""
    kinds = (["exit"] * EXITS + ["hang"] * SYNC_HANGS + ["hang_async"] * (HANGS - SYNC_HANGS) + ["raise"] * RAISES
             + ["long"] * LONG
             + ["short"] * (JOBS - EXITS - HANGS - RAISES - LONG))
    rng.shuffle(kinds)
    plan = {}
    for i, kind in enumerate(kinds):
        key = f"x{i:03d}{kind[0] if kind != 'hang_async' else 'a'}"
        if kind == "long":
            plan[key] = ("ok", round(rng.uniform(*LONG_S), 2))
        elif kind == "short":
            plan[key] = ("ok", SHORT_S)
        elif kind in HANGING:
            plan[key] = (kind, HANG_S)
        else:
            plan[key] = (kind, 0.0)
    return plan


def _ledger(test_dir) -> list[tuple[str, str, int, float]]:
    """Every ledger line, (mark, key, pid, time), in the order they were appended."""
    path = ledger_path(test_dir)
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        mark, key, pid, moment = line.split()
        lines.append((mark, key, int(pid), float(moment)))
    return lines


def _runs(lines) -> tuple[dict[str, list[list[float]]], dict[str, list[str]], list[str]]:
    """Per key its runs ([start, end] or [start] while running), the end marks, and keys that ran twice at once.

    Appends to the ledger are atomic, so its order is the order of events: a start while a run
    of the same key has not ended is an overlap.
    """
    runs: dict[str, list[list[float]]] = defaultdict(list)
    marks: dict[str, list[str]] = defaultdict(list)
    open_runs: Counter[str] = Counter()
    overlapping = []
    for mark, key, _pid, moment in lines:
        if mark == "S":
            if open_runs[key] and key not in overlapping:
                overlapping.append(key)
            open_runs[key] += 1
            runs[key].append([moment])
        elif mark in ENDS:
            open_runs[key] -= 1
            marks[key].append(mark)
            unended = [run for run in runs[key] if len(run) == 1]
            if unended:
                unended[0].append(moment)
    return runs, marks, overlapping


def _poison(raw_queue, name: str) -> list[PoisonRecord]:
    try:
        return [PoisonRecord.decode(m.content, "base64", name) for m in receive_all(raw_queue(f"{name}-poison"))]
    except ResourceNotFoundError:
        return []


def _poison_count(queue) -> int:
    try:
        return message_count(queue)
    except ResourceNotFoundError:
        return 0


def _max_stuck(events) -> int:
    """Most threads left inside timed-out sync jobs at once (job_timed_out up, timed_out_job_returned down)."""
    stuck = most = 0
    for event in events:
        if event.get("action") == "job_timed_out":
            stuck += 1
            most = max(most, stuck)
        elif event.get("action") == "timed_out_job_returned":
            stuck -= 1
    return most


def _renewed_during_stalls(events, stalls) -> int:
    """lease_renewed events of other messages logged while a renewal was held by the proxy."""
    count = 0
    for event in events:
        if event.get("action") != "lease_renewed":
            continue
        moment = datetime.fromisoformat(event["time"]).timestamp()
        if any(start <= moment <= start + STALL_S and str(event.get("message_id")) not in target
               for start, target in stalls):
            count += 1
    return count


def test_the_stall_holds_a_request_then_forwards_it_once_per_message(stall_proxy, connection_string, queue_name,
                                                                     raw_queue):
    """The fault itself: a held update is applied late, after its caller gave up; the retry is not held."""
    from azure.core.exceptions import AzureError, HttpResponseError
    from azure.storage.queue import QueueClient

    direct = raw_queue(queue_name)
    direct.create_queue()
    direct.send_message("m")
    [message] = receive_all(direct, visibility_timeout=30)
    through = QueueClient.from_connection_string(stall_proxy.connection_string(connection_string), queue_name)
    stall_proxy.stall("PUT", 1.0, path_contains="/messages/", once_per_target=True)
    try:
        began = time.monotonic()
        with pytest.raises(AzureError):  # the caller gives up before the proxy forwards it
            through.update_message(message.id, message.pop_receipt, visibility_timeout=30, retry_total=0,
                                   connection_timeout=0.3, read_timeout=0.3)
        assert time.monotonic() - began < 0.9
        time.sleep(1.0)  # forwarded by now: storage took it and gave the message a new receipt
        began = time.monotonic()
        with pytest.raises(HttpResponseError) as info:  # the same message again: not held
            through.update_message(message.id, message.pop_receipt, visibility_timeout=30, retry_total=0)
        assert info.value.status_code == 400 and time.monotonic() - began < 0.9
        assert stall_proxy.stalled["PUT"] == 1 and stall_proxy.requests["PUT"] == 2
        through.get_queue_properties()  # other requests are not held
        assert stall_proxy.stalled["GET"] == 0
    finally:
        through.close()


def test_chaos_exits_hangs_raises_and_stalled_renewals_lose_nothing(stall_proxy, connection_string, client,
                                                                    queue_name, raw_queue, test_dir, processes):
    proxy = stall_proxy
    rng = random.Random(SEED)
    queue = raw_queue(queue_name)
    poison_queue = raw_queue(f"{queue_name}-poison")
    client.ensure_queue(queue_name)
    host_json = test_dir / "host.json"
    host_json.write_text(json.dumps(HOST_JSON), encoding="utf-8")

    plan = _plan(rng)
    by_kind = defaultdict(list)
    for key, (kind, seconds) in plan.items():
        by_kind["long" if kind == "ok" and seconds > SHORT_S else kind].append(key)
    ok_keys = [key for key, (kind, _) in plan.items() if kind == "ok"]
    failing = {key: kind for key, (kind, _) in plan.items() if kind != "ok"}
    sync_job, async_job = chaos.work.options(queue=queue_name), chaos.work_async.options(queue=queue_name)
    envelopes = [async_job.build((key, seconds), {}) if kind == "hang_async"
                 else sync_job.build((key, kind, seconds), {}) for key, (kind, seconds) in plan.items()]
    sent = client.send_many(envelopes)
    assert not [result for result in sent if isinstance(result, BaseException)], sent
    key_of = {envelope.id: key for envelope, key in zip(envelopes, plan)}

    # Lease renewals only (receives are GETs; releases of timed-out jobs use visibilitytimeout=4).
    proxy.stall("PUT", STALL_S, path_contains=f"visibilitytimeout={LEASE_S}", for_s=STALL_WINDOW_S,
                once_per_target=True)
    started_at = time.monotonic()
    worker = spawn(proxy.connection_string(connection_string), test_dir, "-i", chaos.__name__, "-q", queue_name,
                   "-c", str(CONCURRENCY), "-r", str(LEASE_S), "--host-json", str(host_json), "-v")
    processes.append(worker)

    def settled() -> bool:
        if worker.poll() is not None:
            return True  # it died: the assertions below say how
        runs, _, _ = _runs(_ledger(test_dir))
        finished = all(any(len(run) == 2 for run in runs.get(key, ())) for key in ok_keys)
        all_ended = all(len(run) == 2 for key_runs in runs.values() for run in key_runs)
        return (finished and all_ended and _poison_count(poison_queue) >= len(failing)
                and message_count(queue) == 0)

    done = wait_for(settled, timeout=DEADLINE_S, interval=0.5)
    assert worker.poll() is None, f"the worker exited with {worker.returncode}: {log_text(test_dir)[-3000:]}"
    elapsed = time.monotonic() - started_at
    left_on_queue = message_count(queue)
    exit_code = stop(worker)
    stalled = proxy.stalled["PUT"]

    lines = _ledger(test_dir)
    runs, marks, overlapping = _runs(lines)
    records = _poison(raw_queue, queue_name)
    events = log_events(test_dir)
    done_actions = Counter(actions(test_dir))
    stopped = next((e for e in events if e.get("action") == "worker_stopped"), {})
    poisoned: dict[str, list[PoisonRecord]] = defaultdict(list)
    for record in records:
        poisoned[record.envelope.args[0] if record.envelope else f"<raw {record.message_id}>"].append(record)
    succeeded = {key_of.get(e.get("job_id")) for e in events if e.get("action") == "job_succeeded"}
    lost = [key for key in plan if key not in succeeded and not poisoned.get(key)]  # no outcome at all
    unfinished = [key for key in ok_keys if "F" not in marks[key]] + [key for key in failing if not poisoned.get(key)]
    extra_runs = {key: len(runs[key]) for key in ok_keys if len(runs[key]) > 1}
    renewed_during_stalls = _renewed_during_stalls(events, list(proxy.stall_log))

    report("chaos", jobs=JOBS, exits=len(by_kind["exit"]), hangs=len(by_kind["hang"]) + len(by_kind["hang_async"]),
           raises=len(by_kind["raise"]), long=len(by_kind["long"]), seconds=round(elapsed, 1),
           renewals_stalled=stalled, renewals=done_actions["lease_renewed"],
           renewals_failed=done_actions["lease_renew_failed"],
           renewed_during_stalls=renewed_during_stalls,
           receipt_unknown=done_actions["lease_receipt_unknown"], recovered=done_actions["lease_recovered"],
           timed_out=done_actions["job_timed_out"], max_stuck=_max_stuck(events),
           retries=done_actions["job_retry_scheduled"], poisoned=len(records), extra_runs=len(extra_runs),
           overlapping=len(overlapping), lost=len(lost), exit_code=exit_code, seed=SEED)

    assert done, (f"not settled within {DEADLINE_S}s: without their outcome {unfinished}, {left_on_queue} left "
                  f"on the queue, {len(records)} poisoned; worker actions {dict(done_actions)}")
    assert lost == [], lost
    assert unfinished == [], unfinished
    assert left_on_queue == 0
    # No job ran twice at once: not beside its own abandoned thread, nor after a lapsed lease.
    assert overlapping == [], {key: runs[key] for key in overlapping}
    # No lease lapsed: none was lost, and no delete or release met a message that was no longer this worker's.
    lapses = [done_actions[action] for action in ("lease_lost", "delete_skipped", "release_skipped")]
    assert lapses == [0, 0, 0], dict(done_actions)
    # The faults happened: renewals were stalled past what was left of their lease, and given up in time.
    assert stalled > 0, "no renewal was stalled: the test proved nothing"
    assert done_actions["lease_renewed"] > 0, "no lease was renewed"
    assert done_actions["lease_renew_failed"] > 0, "no stalled renewal was given up"
    # Renewals are independent: other leases were renewed while one renewal was held.
    assert renewed_during_stalls > 0, "no lease was renewed while a renewal was stalled"
    # Outcomes: every ok job finished; every failing job retried (or redelivered) and was poisoned once, as itself.
    assert sorted(succeeded - {None}) == sorted(ok_keys), sorted((succeeded - {None}) ^ set(ok_keys))
    assert sorted(poisoned) == sorted(failing), sorted(set(poisoned) ^ set(failing))
    for key, kind in failing.items():
        [record] = poisoned[key]
        assert (record.error.type, record.error.reason) == POISONED_AS[kind], (key, kind, record.error)
        assert len(runs[key]) == 2, (key, kind, runs[key])  # one retry (exit, raise), maxDequeueCount runs (hang)
        assert marks[key] == [chaos.END_MARK[kind]] * 2, (key, marks[key])
        if kind in HANGING:
            assert "ran longer than the job timeout" in record.error.message, record.error
    assert done_actions["job_timed_out"] == HANGS * MAX_DEQUEUE, dict(done_actions)
    assert stopped.get("stuck") == 0 and not stopped.get("restart_needed"), stopped
    assert exit_code == 0, log_text(test_dir)[-3000:]

