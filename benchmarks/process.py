"""A worker subprocess under measurement: CPU seconds and peak RSS of its whole process tree.

Started in its own session (so the whole tree can be signalled), sampled with psutil every
100 ms. A process that exits by itself (``azjobs --burst``, also ``azjobs -p N --burst``,
whose supervisor reaps its children) is reaped with ``os.wait4``, whose rusage gives the
exact CPU time of the process and of every child it reaped. Peak RSS is the rusage peak
for a single process, and the sampled sum over the tree when it had children.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """One measured worker process (plus any children it forks)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: str | os.PathLike,
                 cwd: str | os.PathLike = ROOT) -> None:
        self.argv = argv
        self.env = env
        self.cwd = Path(cwd)
        self.log_path = Path(log_path)
        self.popen: subprocess.Popen | None = None
        self.started_at = 0.0  # wall clock
        self.exited_at: float | None = None
        self.returncode: int | None = None
        self.peak_rss = 0  # bytes, the most the tree held at any sample (or rusage peak)
        self.cpu_s = 0.0  # user + system seconds of the tree at the last sample (or rusage)
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self._rusage_known = False

    def start(self) -> "WorkerProcess":
        log = open(self.log_path, "ab")
        self.started_at = time.time()
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._sampler = threading.Thread(target=self._sample_loop, name="bench-sampler", daemon=True)
        self._sampler.start()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.returncode is None and self._reap(block=False) is None

    def tree_usage(self) -> tuple[float, int] | None:
        """CPU seconds (user + system, children already reaped included) and RSS bytes of the tree now."""
        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return None
        rss = 0
        cpu = 0.0
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
                    cpu += times.user + times.system
                    if proc.pid == root.pid:
                        cpu += times.children_user + times.children_system
            except psutil.Error:
                continue
        return cpu, rss

    def sample(self) -> None:
        """Record the tree's CPU time and RSS now."""
        if self._rusage_known:
            return
        usage = self.tree_usage()
        if usage is None:
            return
        cpu, rss = usage
        if not self._rusage_known:
            self.peak_rss = max(self.peak_rss, rss)
            self.cpu_s = max(self.cpu_s, cpu)

    def wait(self, timeout: float) -> int | None:
        """Wait for the process to exit by itself; its return code, or None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._reap(block=False)
            if code is not None:
                return code
            time.sleep(0.01)
        return None

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM the process group, then SIGKILL after ``grace``; always reaps."""
        if self.returncode is not None:
            self._stop_sampling.set()
            return self.returncode
        self.sample()
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        code = self.wait(grace)
        if code is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = self.wait(10)
        self._kill_leftovers()
        self._stop_sampling.set()
        return code

    def _kill_leftovers(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self, block: bool) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return self.returncode
        if pid == 0:
            return None
        self.exited_at = time.time()
        self.returncode = os.waitstatus_to_exitcode(status)
        assert self.popen is not None
        self.popen.returncode = self.returncode
        # Exact CPU for the process and every child it reaped (wait4 reports both); peak RSS is
        # one process's peak, so a tree keeps its sampled sum.
        self.cpu_s = max(self.cpu_s, usage.ru_utime + usage.ru_stime)
        if not self._children_seen:
            self.peak_rss = usage.ru_maxrss * 1024
        self._rusage_known = True
        self._stop_sampling.set()
        return self.returncode

    _children_seen = False

    def _sample_loop(self) -> None:
        while not self._stop_sampling.wait(0.1):
            try:
                if psutil.Process(self.pid).children():
                    self._children_seen = True
            except psutil.Error:
                pass
            self.sample()
