"""The worker processes of ``azjobs -p N``: how many, their command line, their restarts and memory.

Used by the supervisor (azjobs/runtime/supervisor.py) and by each child (``shared_by``: the
instance's batch limits shared by N processes; ``tag_child_logs``: a child's log lines carry
its slot).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..model.secrets import get_logger

log = get_logger("azjobs.supervisor")

USAGE_ERROR = 2
RESTART_NEEDED = 3  # the worker's exit status when its threads are stuck in timed-out jobs (cli's RESTART_NEEDED)


CHILD_ENV = "AZJOBS_PROCESS_SLOT"  # set in every child: its slot, 0..N-1; a child never supervises


SHARE_ENV = "AZJOBS_PROCESSES"  # set in every child: N, the processes sharing the instance's batch limits


COUNT_ENV = "FUNCTIONS_WORKER_PROCESS_COUNT"


MAX_PROCESSES = 64


# -- how many processes, and their command line --------------------------------
def process_count(flag: int | None, environ: Mapping[str, str] | None = None) -> int:
    """Worker processes to run: ``-p``, else ``FUNCTIONS_WORKER_PROCESS_COUNT``, else 1; always 1 in a child.

    Raises ``ValueError`` (with a message for the user) when the environment variable is
    not a whole number 1..64.
    """
    env = os.environ if environ is None else environ
    if env.get(CHILD_ENV) is not None:
        return 1
    if flag is not None:
        return flag
    raw = env.get(COUNT_ENV, "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PROCESSES:
        raise ValueError(f"{COUNT_ENV} must be a whole number 1..{MAX_PROCESSES}, got {raw!r}")
    return value


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def strip_option(argv: Sequence[str], parser: argparse.ArgumentParser, dest: str = "processes") -> list[str]:
    """``argv`` without the option(s) storing ``dest`` and their values, in every form argparse accepts.

    ``-p 2``, ``-p2``, ``-p=2``, ``--processes 2``, ``--processes=2``, an abbreviation such as
    ``--proc 2``, and ``-p`` at the end of a cluster of flags (``-vp 2``, ``-vp2`` become ``-v``).
    Everything else is kept as it is, values included (``-q p`` keeps its queue named ``p``).
    """
    options = _options(parser)
    longs = [option for option in options if option.startswith("--")]
    args = list(argv)
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--" or not token.startswith("-") or token == "-":
            out.append(token)
            continue
        if token.startswith("--"):
            name, eq, _ = token.partition("=")
            if name not in options:
                matches = [option for option in longs if option.startswith(name)]
                name = matches[0] if len(matches) == 1 else name
            action = options.get(name)
            if action is not None and action.dest == dest:
                if not eq and action.nargs != 0 and i < len(args):
                    i += 1  # its value is the next argument
                continue
            out.append(token)
            continue
        kept = "-"
        for j in range(1, len(token)):
            action = options.get("-" + token[j])
            if action is None:  # not an option here (a negative number as a value, say): keep the rest
                kept += token[j:]
                break
            if action.nargs != 0:  # takes a value: the rest of the token, or the next argument
                if action.dest == dest:
                    if j + 1 == len(token) and i < len(args):
                        i += 1
                else:
                    kept += token[j:]
                break
            kept += token[j]
        if kept != "-":
            out.append(kept)
    return out


def child_argv(argv: Sequence[str], parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The children's arguments: ``argv`` minus ``-p``; checked to parse to exactly ``args`` otherwise.

    Raises ``ValueError`` if it would not (then nothing is started).
    """
    stripped = strip_option(argv, parser)
    expected = dict(vars(args), processes=None)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # a failed check prints no usage message
            reparsed = vars(parser.parse_args(stripped))
    except SystemExit:
        reparsed = None
    if reparsed != expected:
        raise ValueError(f"cannot pass the command line to the worker processes without -p/--processes "
                         f"(got {stripped!r}); write it as `-p N` or `--processes N`")
    return stripped


# -- restarts ----------------------------------------------------------------------
@dataclass(frozen=True)
class RestartPolicy:
    """When a dead child is restarted, and when the supervisor gives up."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    healthy_after_s: float = 60.0  # a child that ran this long resets its slot's back-off
    max_crashes: int = 5  # this many unexpected deaths of one slot ...
    window_s: float = 60.0  # ... within this many seconds is a crash loop


class Backoff:
    """One process slot's restart delays and crash-loop rule."""

    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.next_delay = self.policy.first_delay_s
        self.crashes: deque[float] = deque()

    def crashed(self, now: float, uptime: float) -> float | None:
        """A child of this slot died unexpectedly after ``uptime`` seconds: the delay before its restart,
        or ``None`` when this is a crash loop (``max_crashes`` deaths within ``window_s``)."""
        policy = self.policy
        if uptime >= policy.healthy_after_s:
            self.next_delay = policy.first_delay_s
        self.crashes.append(now)
        while self.crashes and self.crashes[0] <= now - policy.window_s:
            self.crashes.popleft()
        if len(self.crashes) >= policy.max_crashes:
            return None
        delay = self.next_delay
        self.next_delay = min(delay * 2, policy.max_delay_s)
        return delay

    @property
    def recent(self) -> int:
        """Unexpected deaths within the window (as of the last one)."""
        return len(self.crashes)


def classify(code: int, *, stopping: bool, burst: bool) -> str:
    """What a child's exit means: ``stopped`` (a stop was requested), ``drained`` (burst, 0),
    ``restart`` (exit status 3), ``usage`` (exit status 2) or ``crash`` (anything else)."""
    if stopping:
        return "stopped"
    if burst and code == 0:
        return "drained"
    if code == RESTART_NEEDED:
        return "restart"
    if code == USAGE_ERROR:
        return "usage"
    return "crash"


def describe_exit(code: int) -> str:
    """``status 1`` or ``signal SIGKILL`` (Popen's negative return codes)."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


# -- memory --------------------------------------------------------------------------
def read_memory(pid: int, private: bool = False) -> dict[str, int]:
    """``rss_kb`` and ``peak_kb`` (VmRSS, VmHWM) of ``pid``; with ``private``, also ``uss_kb`` when readable
    (its private memory, what one more process costs: smaps_rollup, slower to read).

    Empty when unknown (not Linux, or the process is gone).
    """
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found["rss_kb" if key == "VmRSS" else "peak_kb"] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    if not private:
        return found
    try:
        private = 0
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as rollup:
            for line in rollup:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    private += int(line.split()[1])
        found["uss_kb"] = private
    except (OSError, ValueError, IndexError):
        pass
    return found


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


# -- children ----------------------------------------------------------------------
class Child(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


def _pdeathsig() -> Callable[[int], Any] | None:
    """prctl(PR_SET_PDEATHSIG, sig) on Linux, resolved here (in the parent), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda sig: prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def spawn_worker(argv: Sequence[str], slot: int) -> subprocess.Popen:
    """Start ``python -m azjobs ARGV`` as worker process ``slot``; it shares our stdout and stderr."""
    env = dict(os.environ)
    env[CHILD_ENV] = str(slot)
    preexec = None
    if os.name == "posix":
        parent, set_pdeathsig = os.getpid(), _pdeathsig()

        def preexec() -> None:  # in the child, before exec
            os.setpgid(0, 0)  # its own process group: a terminal's Ctrl-C reaches only the supervisor
            if set_pdeathsig is not None:
                set_pdeathsig(signal.SIGTERM)  # stop gracefully if the supervisor dies
            if os.getppid() != parent:  # it died already
                os.kill(os.getpid(), signal.SIGTERM)

    return subprocess.Popen([sys.executable, "-m", "azjobs", *argv], env=env, stdin=subprocess.DEVNULL,
                            preexec_fn=preexec)


@dataclass
class Slot:
    """One of the N worker processes, across its restarts."""

    index: int
    backoff: Backoff
    process: Child | None = None
    started_at: float = 0.0
    starts: int = 0
    restart_at: float | None = None
    restart_reason: str = ""
    previous_pid: int | None = None
    last_code: int | None = None
    drained: bool = False
    peak_kb: int = 0
    memory_due: float | None = None


@dataclass
class Exited:
    slot: int
    pid: int
    code: int
    peak_kb: int
    after_stop: bool


def shared_by(environ: Mapping[str, str] | None = None) -> int:
    """In a worker process: how many processes share the instance's batch limits (1 outside a supervisor)."""
    env = os.environ if environ is None else environ
    if env.get(CHILD_ENV) is None:
        return 1
    try:
        value = int(env.get(SHARE_ENV, "1"))
    except ValueError:
        return 1
    return value if 1 <= value <= MAX_PROCESSES else 1


class _ChildTag(logging.Filter):
    """Marks a worker process's log records with its slot and pid (a ``[worker N]`` prefix in text)."""

    def __init__(self, slot: str, text: bool) -> None:
        super().__init__()
        self.slot, self.text = slot, text

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker_process"):
            record.worker_process = self.slot
            record.pid = os.getpid()
            if self.text:
                record.msg, record.args = f"[worker {self.slot}] {record.getMessage()}", None
        return True


def tag_child_logs(handler: logging.Handler, fmt: str, environ: Mapping[str, str] | None = None) -> None:
    """In a worker process started by the supervisor, tag ``handler``'s lines with the process slot."""
    slot = (os.environ if environ is None else environ).get(CHILD_ENV)
    if slot is not None:
        handler.addFilter(_ChildTag(slot, fmt != "json"))
