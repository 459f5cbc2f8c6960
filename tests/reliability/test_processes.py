"""Processes: ``azjobs -p 2`` under kill -9, SIGTERM and a crash loop.

- kill -9 of one worker process mid-drain: nothing is lost (the messages it held come back
  when their 2 s leases end) and the supervisor starts a replacement that takes work;
- SIGTERM to the supervisor while both processes run jobs: every running job finishes, the
  supervisor exits 0 well within the grace period, unstarted messages are visible at once;
- worker processes that die at start (a jobs module calling ``os._exit(1)`` on import): the
  supervisor gives up with a non-zero status instead of restarting them for ever.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from azjobs import Call
from tests.jobs import reliability_jobs as rel
from tests.reliability.support import (Ledger, all_finished, log_events, log_text, message_count, report,
                                       sigterm_and_collect, spawn, wait_for)

SEED = int(os.environ.get("AZJOBS_RELIABILITY_SEED", "6001"))


def _events(test_dir: Path, action: str) -> list[dict]:
    return [event for event in log_events(test_dir) if event.get("action") == action]


def _children(test_dir: Path) -> dict[int, int]:
    """slot -> pid of the worker processes the supervisor has started so far (the latest per slot)."""
    started = _events(test_dir, "process_started") + _events(test_dir, "process_restarted")
    return {event["slot"]: event["pid"] for event in sorted(started, key=lambda e: e["time"])}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _memory_figures(test_dir: Path) -> str:
    return " ".join(f"{e['pid']}:{e['rss_mb']}/{e['uss_mb']}" for e in _events(test_dir, "process_memory"))


def test_kill_9_of_one_process_mid_drain_loses_nothing_and_it_is_replaced(connection_string, client, queue_name,
                                                                          raw_queue, test_dir, processes):
    rng = random.Random(SEED)
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    keys = [f"k{i:03d}" for i in range(120)]
    rel.work.options(queue=queue_name).enqueue_many(
        [Call(key, round(rng.uniform(0.2, 0.8), 3)) for key in keys]).raise_for_failures()
    supervisor = spawn(connection_string, test_dir, "-q", queue_name, "-c", "4", "-f", "4", "-r", "2", "-p", "2")
    processes.append(supervisor)
    started_at = time.monotonic()

    def both_working() -> bool:
        children = _children(test_dir)
        pids = {pid for runs in Ledger.read(test_dir).starts.values() for pid, _ in runs}
        return len(children) == 2 and set(children.values()) <= pids

    assert wait_for(both_working, timeout=30), log_text(test_dir)
    time.sleep(rng.uniform(0.3, 1.0))  # a random moment mid-drain
    victim = _children(test_dir)[0]
    assert supervisor.poll() is None and _alive(victim)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        return any(e["previous_pid"] == victim and e["slot"] == 0 for e in _events(test_dir, "process_restarted"))

    assert wait_for(replaced, timeout=15), log_text(test_dir)
    replacement = _children(test_dir)[0]
    assert replacement != victim and _alive(replacement)
    assert wait_for(all_finished(test_dir, keys), timeout=60), f"lost: {Ledger.read(test_dir).lost(keys)}"
    assert wait_for(lambda: message_count(queue) == 0, timeout=30), "messages left behind"
    supervisor.send_signal(signal.SIGTERM)
    code = supervisor.wait(30)

    ledger = Ledger.read(test_dir)
    interrupted = [key for key in keys if any(pid == victim for pid, _ in ledger.starts[key])
                   and all(pid != victim for pid, _ in ledger.finishes[key])]
    by_replacement = sum(1 for key in keys if any(pid == replacement for pid, _ in ledger.starts[key]))
    exited = [e for e in _events(test_dir, "process_exited") if e["pid"] == victim]
    report("processes_kill", jobs=len(keys), interrupted_runs=len(interrupted), ran_twice=len(ledger.duplicates(keys)),
           lost=len(ledger.lost(keys)), run_by_replacement=by_replacement, exit_code=code,
           rss_uss_mb=_memory_figures(test_dir), seconds=round(time.monotonic() - started_at, 1))
    assert ledger.lost(keys) == []
    assert interrupted, "the kill hit no running job: the test proved nothing"
    assert by_replacement > 0, "the replacement process never took a job"
    assert exited and exited[0]["exit_code"] == -9 and exited[0]["restart_in_s"] == 1.0
    assert code == 0, log_text(test_dir)
    stopped = _events(test_dir, "supervisor_stopped")[-1]
    assert stopped["exit_code"] == 0 and stopped["restarts"] == 1
    assert str(replacement) in stopped["peak_rss_mb_by_pid"]


GRACE_S = 15.0
JOB_S = 3.0


def test_sigterm_to_the_supervisor_finishes_running_jobs_in_every_process(connection_string, client, queue_name,
                                                                           raw_queue, test_dir, processes):
    queue = raw_queue(queue_name)
    client.ensure_queue(queue_name)
    keys = [f"t{i:03d}" for i in range(40)]
    rel.work.options(queue=queue_name).enqueue_many([Call(key, JOB_S) for key in keys]).raise_for_failures()
    # Two processes of 4 jobs each; a 60 s lease would hide a leaked message for a minute.
    supervisor = spawn(connection_string, test_dir, "-q", queue_name, "-c", "4", "-f", "4", "-r", "60",
                       "--grace", str(GRACE_S), "--processes", "2")
    processes.append(supervisor)

    def both_busy() -> bool:
        pids = [pid for runs in Ledger.read(test_dir).starts.values() for pid, _ in runs]
        return len(set(pids)) == 2 and all(pids.count(pid) >= 4 for pid in set(pids))

    assert wait_for(both_busy, timeout=30), log_text(test_dir)
    children = _children(test_dir)
    stopped = sigterm_and_collect(supervisor, test_dir, queue, GRACE_S + 15)
    code, exit_s, ledger, started = stopped.code, stopped.exit_s, stopped.ledger, stopped.started
    unfinished, visible, visible_keys = stopped.unfinished, stopped.visible, stopped.visible_keys
    stopped_workers = [e for e in _events(test_dir, "worker_stopped") if "worker_process" in e]
    report("processes_sigterm", jobs=len(keys), running_at_sigterm=len(started), finished=ledger.finished(keys),
           unfinished=len(unfinished), visible_after_exit=len(visible), exit_code=code, exit_s=round(exit_s, 1),
           rss_uss_mb=_memory_figures(test_dir))
    assert code == 0, log_text(test_dir)
    assert exit_s < GRACE_S  # the running jobs needed ~3 s
    assert unfinished == [] and all(len(ledger.finishes[key]) == 1 for key in started)
    assert {pid for runs in ledger.starts.values() for pid, _ in runs} == set(children.values())
    assert sorted(visible_keys) == sorted(set(keys) - started)  # nothing lost, nothing hidden
    assert sorted(e["pid"] for e in stopped_workers) == sorted(children.values())
    assert all(e["succeeded"] >= 4 and e["abandoned"] == 0 for e in stopped_workers)
    assert not any(_alive(pid) for pid in children.values())  # waited for and reaped
    stopped = _events(test_dir, "supervisor_stopped")[-1]
    assert stopped["exit_code"] == 0 and stopped["reason"] == "stopped" and stopped["restarts"] == 0


def test_processes_that_keep_dying_make_the_supervisor_give_up(connection_string, client, queue_name, test_dir,
                                                               processes):
    client.ensure_queue(queue_name)
    crashing = test_dir / "crash_on_import.py"
    crashing.write_text("import os\n\nos._exit(1)  # dies as its jobs are imported, every time\n")
    started_at = time.monotonic()
    supervisor = spawn(connection_string, test_dir, "-q", queue_name, "-i", str(crashing), "-p", "2")
    processes.append(supervisor)
    code = supervisor.wait(45)
    seconds = time.monotonic() - started_at
    restarts = _events(test_dir, "process_restarted")
    report("processes_crash_loop", exit_code=code, restarts=len(restarts), seconds=round(seconds, 1))
    assert code == 1, log_text(test_dir)
    assert _events(test_dir, "supervisor_crash_loop"), log_text(test_dir)
    assert len(restarts) >= 4  # one slot: 1, 2, 4, 8 s back-offs, then the 5th exit within 60 s ends it
    assert _events(test_dir, "supervisor_stopped")[-1]["reason"] == "crash_loop"
