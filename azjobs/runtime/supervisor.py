"""Several worker processes: ``azjobs -p N`` (or ``FUNCTIONS_WORKER_PROCESS_COUNT``).

The Functions host runs ``FUNCTIONS_WORKER_PROCESS_COUNT`` language worker processes per
instance; ``azjobs -p N`` does the same for the local runner. With N > 1 the ``azjobs``
process becomes a supervisor that does no work itself:

- it starts N children running ``python -m azjobs`` with the same arguments minus
  ``-p``/``--processes``, each marked with ``AZJOBS_PROCESS_SLOT`` (so a child never
  supervises, whatever its flags or environment say). Each child is an ordinary worker
  with its own fetch loops and leases: what a child holds when it dies reappears when
  its lease ends, as with a single worker;
- the first SIGTERM/SIGINT is forwarded (as SIGTERM) to every child, which stops
  gracefully within ``--grace``; a second signal is forwarded again, which a worker takes
  as a forced stop; a third kills the children. If children are still running ``--grace``
  + 10 s after the stop, the supervisor forces them itself, and kills them 10 s later;
- a child that dies while no stop was requested is restarted after a back-off (1 s,
  doubling up to 30 s per process slot, back to 1 s once a child has run 60 s). When one
  slot's children die 5 times within 60 s the supervisor stops the others and exits 1
  (a crash loop: a jobs module that fails to import, a missing queue ...). Exit status 3
  (the worker's threads are stuck in timed-out jobs and it asks for a fresh process) is
  not a crash: the child is replaced at once and it does not count towards the crash
  loop. Exit status 2 (a usage or configuration error) is not retried: the supervisor
  stops the others and exits 2. With ``--burst`` a child that exits 0 has drained the
  queues and is not restarted; the supervisor exits 0 when every child has;
- children run in their own process group (a terminal's Ctrl-C reaches only the
  supervisor, which forwards it once) and, on Linux, get SIGTERM if the supervisor dies;
- memory: each child's resident set (``VmRSS``, and its private part, USS, from
  ``/proc/<pid>/smaps_rollup``) is logged 5 s after it starts and every 10 minutes
  (``process_memory``); ``supervisor_stopped`` carries each child's peak (``VmHWM``, sampled every
  second, so a child killed in its first second shows less).

Log ``action`` keys: ``supervisor_started``, ``process_started``, ``process_memory``,
``process_exited``, ``process_restarted``, ``supervisor_crash_loop``,
``supervisor_stopping``, ``supervisor_forcing``, ``process_killed``, ``supervisor_stopped``.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from typing import Any, Callable, Sequence, TextIO

from ..model.secrets import get_logger
from .children import (Backoff, CHILD_ENV, COUNT_ENV, Child, Exited, RestartPolicy, SHARE_ENV, Slot, USAGE_ERROR, _mb,
                       child_argv, classify, describe_exit, process_count, read_memory, shared_by, spawn_worker,
                       strip_option, tag_child_logs)

log = get_logger("azjobs.supervisor")

FORCE_AFTER_S = 10.0  # past the grace period: force the children; as long again: kill them


class Supervisor:
    """Runs ``processes`` worker processes with ``argv`` until stopped, drained (burst) or crash-looping."""

    def __init__(self, argv: Sequence[str], processes: int, *, burst: bool = False, grace: float = 30.0,
                 policy: RestartPolicy | None = None, spawn: Callable[[Sequence[str], int], Child] = spawn_worker,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 memory: Callable[..., dict[str, int]] = read_memory, tick: float = 0.1,
                 memory_first_s: float = 5.0, memory_every_s: float = 600.0,
                 force_after_s: float = FORCE_AFTER_S) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.argv = list(argv)
        self.burst = burst
        self.grace = grace
        self.policy = policy or RestartPolicy()
        self._spawn, self._clock, self._sleep, self._memory = spawn, clock, sleep, memory
        self.tick = tick
        self.memory_first_s, self.memory_every_s = memory_first_s, memory_every_s
        self.force_after_s = force_after_s
        self.slots = [Slot(index, Backoff(self.policy)) for index in range(processes)]
        self.exits: list[Exited] = []
        self.restarts = 0
        self._signals: list[int] = []
        self._stopping_at: float | None = None
        self._forced_at: float | None = None
        self._killed = False
        self._stop_reason = ""
        self._fail_code: int | None = None
        self._next_sample = 0.0

    # -- public ------------------------------------------------------------
    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """What SIGTERM/SIGINT do (safe in a signal handler): stop; a second call forces; a third kills."""
        self._signals.append(signum)

    @property
    def stopping(self) -> bool:
        return self._stopping_at is not None

    def run(self) -> int:
        """Supervise until done; returns the exit status (0: stopped or drained cleanly)."""
        restore = self._install_signals()
        try:
            log.info("supervisor %d started: %d worker processes: azjobs %s", os.getpid(), len(self.slots),
                     " ".join(self.argv), extra={"action": "supervisor_started", "processes": len(self.slots),
                                                   "pid": os.getpid(), "burst": self.burst})
            for slot in self.slots:
                if not self._signals:
                    self._start(slot, self._clock())
            while True:
                self._handle_signals()
                now = self._clock()
                for slot in self.slots:
                    code = slot.process.poll() if slot.process is not None else None
                    if code is not None:
                        self._exited(slot, code, now)
                if not self.stopping:
                    for slot in self.slots:
                        if slot.restart_at is not None and now >= slot.restart_at:
                            self._start(slot, now)
                self._sample_memory(now)
                if self.stopping:
                    self._enforce_grace(now)
                if self._done():
                    break
                self._sleep(self.tick)
        except BaseException:
            for slot in self.slots:  # do not leave workers behind (they stop gracefully)
                self._signal(slot, signal.SIGTERM)
            raise
        finally:
            restore()
        return self._finish()

    # -- signals -----------------------------------------------------------
    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handle(signum: int, frame: Any) -> None:
            self.request_stop(signum)

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = _signal_name(signum)
            if not self.stopping:
                self._begin_stop(f"{name} received", "stopped")
            elif self._forced_at is None:
                self._force(f"second {name}: forcing the worker processes to stop at once")
            else:
                self._kill(f"another {name}")

    def _signal(self, slot: Slot, sig: int) -> None:
        if slot.process is None:
            return
        try:
            slot.process.send_signal(sig)
        except (ProcessLookupError, OSError):  # pragma: no cover - exited meanwhile
            pass

    def _live(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.process is not None]

    def _begin_stop(self, why: str, reason: str) -> None:
        self._stopping_at = self._clock()
        self._stop_reason = self._stop_reason or reason
        for slot in self.slots:
            slot.restart_at = None
        live = self._live()
        log.info("%s: stopping %d worker process(es) (SIGTERM), up to %ss for running jobs", why, len(live),
                 self.grace, extra={"action": "supervisor_stopping", "reason": reason, "running": len(live),
                                    "grace_s": self.grace})
        for slot in live:
            self._signal(slot, signal.SIGTERM)

    def _force(self, why: str) -> None:
        self._forced_at = self._clock()
        live = self._live()
        log.warning("%s (%d still running; their unfinished messages reappear when their leases end)", why,
                    len(live), extra={"action": "supervisor_forcing", "running": len(live)})
        for slot in live:
            self._signal(slot, signal.SIGTERM)  # a worker's second signal: a forced stop

    def _kill(self, why: str) -> None:
        self._killed = True
        for slot in self._live():
            log.warning("%s: killing worker process %d (pid %d)", why, slot.index, slot.process.pid,
                        extra={"action": "process_killed", "slot": slot.index, "pid": slot.process.pid})
            self._signal(slot, signal.SIGKILL)

    def _enforce_grace(self, now: float) -> None:
        if self._forced_at is None:
            if self._stopping_at is not None and now >= self._stopping_at + self.grace + self.force_after_s:
                self._force(f"worker processes still running {self.grace + self.force_after_s:g}s after the stop")
        elif not self._killed and now >= self._forced_at + self.force_after_s:
            self._kill(f"still running {self.force_after_s:g}s after a forced stop")

    # -- children ----------------------------------------------------------
    def _start(self, slot: Slot, now: float) -> None:
        reason, slot.restart_at = slot.restart_reason, None
        try:
            process = self._spawn(self.argv, slot.index)
        except Exception as exc:
            log.error("cannot start worker process %d: %s", slot.index, exc,
                      extra={"action": "process_start_failed", "slot": slot.index})
            self._crashed(slot, now, 0.0, f"could not be started ({exc})")
            return
        slot.process, slot.started_at, slot.peak_kb = process, now, 0
        slot.starts += 1
        slot.memory_due = now + self.memory_first_s
        if slot.starts == 1:
            log.info("worker process %d started (pid %d)", slot.index, process.pid,
                     extra={"action": "process_started", "slot": slot.index, "pid": process.pid})
        else:
            self.restarts += 1
            log.info("worker process %d restarted (pid %d, was %s): %s", slot.index, process.pid,
                     slot.previous_pid, reason,
                     extra={"action": "process_restarted", "slot": slot.index, "pid": process.pid,
                            "previous_pid": slot.previous_pid, "reason": reason, "starts": slot.starts})

    def _exited(self, slot: Slot, code: int, now: float) -> None:
        process, uptime = slot.process, now - slot.started_at
        assert process is not None
        slot.process, slot.previous_pid, slot.last_code = None, process.pid, code
        self.exits.append(Exited(slot.index, process.pid, code, slot.peak_kb, self.stopping))
        kind = classify(code, stopping=self.stopping, burst=self.burst)
        fields = {"action": "process_exited", "slot": slot.index, "pid": process.pid, "exit_code": code,
                  "uptime_s": round(uptime, 1), "kind": kind, "peak_rss_mb": _mb(slot.peak_kb or None)}
        what = f"worker process {slot.index} (pid {process.pid}) exited with {describe_exit(code)} after {uptime:.1f}s"
        if kind == "stopped":
            log.info(what, extra=fields)
        elif kind == "drained":
            slot.drained = True
            log.info("%s: queues drained", what, extra=fields)
        elif kind == "restart":
            log.warning("%s: it asks for a fresh process (threads stuck in timed-out jobs); restarting it now",
                        what, extra=fields)
            slot.restart_at, slot.restart_reason = now, "restart requested (exit status 3)"
        elif kind == "usage":
            log.error("%s: a usage or configuration error, not retried; stopping the others", what, extra=fields)
            self._fail(USAGE_ERROR, "usage_error", now)
        else:
            self._crashed(slot, now, uptime, f"{describe_exit(code)} with no stop requested", what, fields)

    def _crashed(self, slot: Slot, now: float, uptime: float, why: str, what: str = "",
                 fields: dict[str, Any] | None = None) -> None:
        delay = slot.backoff.crashed(now, uptime)
        fields = dict(fields or {"action": "process_exited", "slot": slot.index}, crashes=slot.backoff.recent)
        policy = self.policy
        what = what or f"worker process {slot.index} {why}"
        if delay is None:
            log.error("%s: %d unexpected exits within %gs", what, slot.backoff.recent, policy.window_s, extra=fields)
            log.error("crash loop: worker process %d died %d times within %gs; stopping the others", slot.index,
                      slot.backoff.recent, policy.window_s,
                      extra={"action": "supervisor_crash_loop", "slot": slot.index, "crashes": slot.backoff.recent,
                             "window_s": policy.window_s})
            self._fail(1, "crash_loop", now)
            return
        fields["restart_in_s"] = delay
        log.warning("%s; restarting in %gs (%d of %d unexpected exits within %gs before giving up)", what, delay,
                    slot.backoff.recent, policy.max_crashes, policy.window_s, extra=fields)
        slot.restart_at, slot.restart_reason = now + delay, why

    def _fail(self, code: int, reason: str, now: float) -> None:
        if self._fail_code is None:
            self._fail_code, self._stop_reason = code, reason
        if not self.stopping:
            self._begin_stop(reason.replace("_", " "), reason)

    def _done(self) -> bool:
        if self.stopping:
            return not self._live()
        return self.burst and all(slot.drained for slot in self.slots)

    def _finish(self) -> int:
        if self._fail_code is not None:
            code = self._fail_code
        elif self.stopping:
            clean = (0, -signal.SIGTERM)  # -SIGTERM: stopped before it could install its handlers, holding nothing
            code = 0 if all(e.code in clean for e in self.exits if e.after_stop) else 1
        else:
            code = 0  # burst: every process drained
        reason = self._stop_reason or "drained"
        peaks = [e for e in self.exits if e.peak_kb]
        by_pid = ",".join(f"{e.pid}:{_mb(e.peak_kb)}" for e in peaks)
        top = max((e.peak_kb for e in peaks), default=0)
        own = self._memory(os.getpid()).get("rss_kb")
        log.info("supervisor stopped (%s), exit status %d: %d worker process(es) ran, %d restart(s); peak RSS per "
                 "process (pid:MB) %s; supervisor RSS %s MB", reason, code, len(self.exits), self.restarts,
                 by_pid or "unknown", _mb(own),
                 extra={"action": "supervisor_stopped", "exit_code": code, "reason": reason,
                        "processes": len(self.slots), "restarts": self.restarts, "peak_rss_mb_by_pid": by_pid,
                        "peak_rss_mb": _mb(top or None), "supervisor_rss_mb": _mb(own)})
        return code

    # -- memory ------------------------------------------------------------
    def _sample_memory(self, now: float) -> None:
        if now < self._next_sample:
            return
        self._next_sample = now + 1.0
        for slot in self._live():
            assert slot.process is not None
            memory = self._memory(slot.process.pid)
            slot.peak_kb = max(slot.peak_kb, memory.get("peak_kb", 0), memory.get("rss_kb", 0))
            if memory and slot.memory_due is not None and now >= slot.memory_due:
                slot.memory_due = now + self.memory_every_s
                memory = self._memory(slot.process.pid, private=True) or memory
                rss, uss = memory.get("rss_kb"), memory.get("uss_kb")
                log.info("worker process %d (pid %d): RSS %s MB, private %s MB", slot.index, slot.process.pid,
                         _mb(rss), _mb(uss),
                         extra={"action": "process_memory", "slot": slot.index, "pid": slot.process.pid,
                                "rss_mb": _mb(rss), "uss_mb": _mb(uss), "peak_rss_mb": _mb(slot.peak_kb or None),
                                "uptime_s": round(now - slot.started_at, 1)})


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# -- the command ---------------------------------------------------------------------
def supervise(args: argparse.Namespace, argv: Sequence[str], parser: argparse.ArgumentParser, processes: int,
              err: TextIO, check: Callable[[], Any]) -> int:
    """``azjobs -p N``: check the configuration once here (exit 2 on an error), then supervise N workers.

    ``check`` loads what the workers will load first (host.json); the connection setting
    is resolved too, so a mistake shows once, not as N crash-looping children.
    """
    from ..errors import ConfigurationError
    from ..storage.connection import resolve_connection

    try:
        check()
        resolve_connection(args.connection)
        worker_argv = child_argv(argv, parser, args)
    except (ConfigurationError, ValueError) as exc:
        print(f"azjobs: {exc}", file=err)
        return USAGE_ERROR
    os.environ[SHARE_ENV] = str(processes)  # inherited by every child (spawn_worker copies the environment)
    return Supervisor(worker_argv, processes, burst=args.burst, grace=args.grace).run()


__all__ = ["Backoff", "CHILD_ENV", "COUNT_ENV", "MAX_PROCESSES", "RestartPolicy", "Supervisor", "child_argv",
           "classify", "describe_exit", "process_count", "read_memory", "shared_by", "spawn_worker", "strip_option",
           "supervise", "tag_child_logs"]
