"""The -p/--processes supervisor's logic: process count, argv rewriting, back-off, crash loops,
signal forwarding and exit status, with fake processes on a fake clock (no storage, no subprocess)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Callable

import pytest

from azjobs.cli import worker as cli_worker
from azjobs import cli
from azjobs.storage import diagnosis as logs
from azjobs.runtime import children, supervisor
from azjobs.runtime.children import Backoff, RestartPolicy, child_argv, process_count, strip_option
from azjobs.runtime.supervisor import Supervisor


# -- how many processes ------------------------------------------------------------
def test_process_count_comes_from_the_flag_then_the_host_setting_then_1():
    assert process_count(None, {}) == 1
    assert process_count(3, {}) == 3
    assert process_count(None, {"FUNCTIONS_WORKER_PROCESS_COUNT": "4"}) == 4
    assert process_count(None, {"FUNCTIONS_WORKER_PROCESS_COUNT": " "}) == 1
    assert process_count(2, {"FUNCTIONS_WORKER_PROCESS_COUNT": "4"}) == 2  # the flag wins


def test_a_child_never_supervises():
    env = {"FUNCTIONS_WORKER_PROCESS_COUNT": "4", children.CHILD_ENV: "1"}
    assert process_count(None, env) == 1 and process_count(8, env) == 1


@pytest.mark.parametrize("value", ["0", "65", "two", "1.5", "-1"])
def test_an_invalid_host_setting_is_refused_with_its_name(value):
    with pytest.raises(ValueError, match="FUNCTIONS_WORKER_PROCESS_COUNT must be a whole number 1..64"):
        process_count(None, {"FUNCTIONS_WORKER_PROCESS_COUNT": value})


@pytest.mark.parametrize("value", ["0", "65", "x"])
def test_bad_p_values_exit_2_with_a_message(value, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["-q", "a", "-p", value])
    assert exc.value.code == 2
    assert "azjobs: error: argument -p/--processes" in capsys.readouterr().err


def test_p_defaults_to_unset_and_parses():
    parser = cli.build_parser()
    assert parser.parse_args(["-q", "a"]).processes is None
    assert parser.parse_args(["-q", "a", "--processes", "64"]).processes == 64


def test_an_invalid_host_setting_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("FUNCTIONS_WORKER_PROCESS_COUNT", "many")
    monkeypatch.delenv(children.CHILD_ENV, raising=False)
    with pytest.raises(SystemExit) as exc:
        cli.main(["-q", "a"])
    assert exc.value.code == 2
    assert "azjobs: error: FUNCTIONS_WORKER_PROCESS_COUNT must be a whole number 1..64, got 'many'" in \
        capsys.readouterr().err


def test_empty_or_delete_are_refused_with_several_processes(monkeypatch, capsys):
    monkeypatch.delenv("FUNCTIONS_WORKER_PROCESS_COUNT", raising=False)
    monkeypatch.delenv(children.CHILD_ENV, raising=False)
    with pytest.raises(SystemExit) as exc:
        cli.main(["-q", "a", "--empty", "a", "--yes", "-p", "2"])
    assert exc.value.code == 2 and "--empty/--delete must run once" in capsys.readouterr().err


def test_with_one_process_the_cli_runs_the_worker_itself(monkeypatch):
    """-p 1 (and no FUNCTIONS_WORKER_PROCESS_COUNT) is today's path: no supervisor."""
    monkeypatch.delenv("FUNCTIONS_WORKER_PROCESS_COUNT", raising=False)
    monkeypatch.delenv(children.CHILD_ENV, raising=False)
    seen = []
    monkeypatch.setattr(cli_worker, "_run", lambda args, stdin, out, err: seen.append("run") or 0)
    monkeypatch.setattr(supervisor, "supervise", lambda *a, **k: seen.append("supervise") or 0)
    assert cli.main(["-q", "a"], stderr=io.StringIO()) == 0
    assert cli.main(["-q", "a", "-p", "1"], stderr=io.StringIO()) == 0
    monkeypatch.setenv("FUNCTIONS_WORKER_PROCESS_COUNT", "1")
    assert cli.main(["-q", "a"], stderr=io.StringIO()) == 0
    assert seen == ["run", "run", "run"]
    monkeypatch.setenv("FUNCTIONS_WORKER_PROCESS_COUNT", "3")
    assert cli.main(["-q", "a"], stderr=io.StringIO()) == 0
    monkeypatch.setenv(children.CHILD_ENV, "0")  # a child: works, whatever the setting says
    assert cli.main(["-q", "a", "-p", "2"], stderr=io.StringIO()) == 0
    assert seen == ["run", "run", "run", "supervise", "run"]


def test_supervise_refuses_a_bad_configuration_before_starting_anything(monkeypatch, tmp_path):
    monkeypatch.delenv(children.CHILD_ENV, raising=False)
    monkeypatch.setattr(supervisor, "Supervisor", lambda *a, **k: pytest.fail("started workers"))
    bad = tmp_path / "host.json"
    bad.write_text('{"version": "2.0", "extensions": {"queues": {"batchSize": 99}}}')
    err = io.StringIO()
    assert cli.main(["-q", "a", "-p", "2", "--host-json", str(bad)], stderr=err) == 2
    assert "batchSize must be 1..32" in err.getvalue()


# -- the children's command line ---------------------------------------------------
@pytest.mark.parametrize("argv, expected", [
    (["-q", "a", "-p", "2"], ["-q", "a"]),
    (["-p", "2", "-q", "a"], ["-q", "a"]),
    (["-q", "a", "-p2"], ["-q", "a"]),
    (["-q", "a", "-p=2"], ["-q", "a"]),
    (["-q", "a", "--processes", "2"], ["-q", "a"]),
    (["-q", "a", "--processes=2"], ["-q", "a"]),
    (["-q", "a", "--proc", "2"], ["-q", "a"]),
    (["-q", "a", "--p=2"], ["-q", "a"]),
    (["-q", "a", "-vp", "2"], ["-q", "a", "-v"]),
    (["-q", "a", "-vvp2"], ["-q", "a", "-vv"]),
    (["-q", "a", "-p", "2", "-p", "3"], ["-q", "a"]),
    (["-qp", "-p", "2"], ["-qp"]),  # a queue named "p"
    (["-q", "p", "-i", "p", "-p", "2"], ["-q", "p", "-i", "p"]),
    (["-q", "a", "--timeout", "-1", "-p", "2", "--burst"], ["-q", "a", "--timeout", "-1", "--burst"]),
    (["-q", "a", "-c", "8", "-f4", "--log-format=json", "-p", "4", "--grace", "5"],
     ["-q", "a", "-c", "8", "-f4", "--log-format=json", "--grace", "5"]),
])
def test_the_children_get_the_same_arguments_without_p(argv, expected):
    parser = cli.build_parser()
    assert strip_option(argv, parser) == expected
    args = parser.parse_args(argv)
    assert child_argv(argv, parser, args) == expected  # and they parse to the same settings


def test_child_argv_refuses_a_command_line_it_cannot_rewrite_faithfully():
    parser = cli.build_parser()
    args = parser.parse_args(["-q", "a", "-p", "2"])
    args.concurrency = 7  # what the children's arguments would not say
    with pytest.raises(ValueError, match="cannot pass the command line to the worker processes"):
        child_argv(["-q", "a", "-p", "2"], parser, args)


# -- back-off and the crash-loop rule ----------------------------------------------
def test_restarts_back_off_doubling_and_a_crash_loop_ends_them():
    backoff = Backoff(RestartPolicy())
    assert [backoff.crashed(t, 0.5) for t in (0, 2, 5, 10)] == [1, 2, 4, 8]
    assert backoff.crashed(19, 0.5) is None  # the 5th unexpected exit within 60 s


def test_the_delay_is_capped_at_30_s():
    backoff = Backoff(RestartPolicy(max_crashes=100))
    delays = [backoff.crashed(t * 100.0, 1.0) for t in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_child_that_ran_a_minute_resets_the_back_off():
    backoff = Backoff(RestartPolicy())
    assert [backoff.crashed(t, 1) for t in (0, 2, 5)] == [1, 2, 4]
    assert backoff.crashed(70, 64) == 1


def test_only_exits_within_the_window_count():
    backoff = Backoff(RestartPolicy(max_crashes=3, window_s=60, healthy_after_s=1000))
    assert backoff.crashed(0, 1) is not None and backoff.crashed(10, 1) is not None
    assert backoff.crashed(61, 1) is not None  # the one at 0 s is out of the window
    assert backoff.recent == 2
    assert backoff.crashed(65, 1) is None


def test_what_an_exit_means():
    classify = children.classify
    assert classify(0, stopping=True, burst=False) == "stopped"
    assert classify(-9, stopping=True, burst=False) == "stopped"
    assert classify(0, stopping=False, burst=True) == "drained"
    assert classify(0, stopping=False, burst=False) == "crash"  # a worker only exits 0 when stopped
    assert classify(1, stopping=False, burst=True) == "crash"
    assert classify(-9, stopping=False, burst=False) == "crash"
    assert classify(3, stopping=False, burst=False) == "restart"
    assert classify(2, stopping=False, burst=True) == "usage"
    assert children.RESTART_NEEDED == cli.RESTART_NEEDED
    assert children.describe_exit(-9) == "signal SIGKILL" and children.describe_exit(1) == "status 1"


# -- the supervisor, on fake processes -------------------------------------------
@dataclass
class FakeProcess:
    world: "World"
    pid: int
    slot: int
    exit_at: float | None = None
    exit_code: int = 0
    on_term: Callable[["FakeProcess", int], None] | None = None
    signals: list[int] = field(default_factory=list)

    def poll(self) -> int | None:
        if self.exit_at is not None and self.world.now >= self.exit_at:
            return self.exit_code
        return None

    def send_signal(self, sig: int) -> None:
        if self.poll() is not None:
            return
        self.signals.append(sig)
        if sig == signal.SIGKILL:
            self.exit(-signal.SIGKILL, 0)
        elif self.on_term is not None:
            self.on_term(self, sig)

    def exit(self, code: int, after: float = 0.0) -> None:
        self.exit_at, self.exit_code = self.world.now + after, code


def graceful(seconds: float = 1.0, code: int = 0):
    """A worker: the first SIGTERM finishes its jobs in ``seconds``; a second one stops it at once with 1."""
    def on_term(process: FakeProcess, sig: int) -> None:
        if process.signals.count(signal.SIGTERM) == 1:
            process.exit(code, seconds)
        else:
            process.exit(1, 0)
    return on_term


class World:
    """A fake clock and a process table; ``behave(slot, start)`` configures each new process."""

    def __init__(self, behave: Callable[[FakeProcess, int], None] | None = None) -> None:
        self.now = 0.0
        self.started: list[FakeProcess] = []
        self.behave = behave or (lambda process, start: None)
        self.at: list[tuple[float, Callable[[], None]]] = []  # scheduled actions

    def spawn(self, argv, slot: int) -> FakeProcess:
        process = FakeProcess(self, 1000 + len(self.started), slot, on_term=graceful())
        start = sum(1 for p in self.started if p.slot == slot)
        self.started.append(process)
        self.behave(process, start)
        return process

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for when, action in list(self.at):
            if self.now >= when:
                self.at.remove((when, action))
                action()
        assert self.now < 3600, "the supervisor never finished"

    def memory(self, pid: int, private: bool = False) -> dict[str, int]:
        found = {"rss_kb": 50 * 1024 + pid, "peak_kb": 60 * 1024 + pid}
        return dict(found, uss_kb=40 * 1024) if private else found

    def supervisor(self, processes: int = 2, **kwargs) -> Supervisor:
        kwargs.setdefault("grace", 30.0)
        return Supervisor(["-q", "a"], processes, spawn=self.spawn, clock=lambda: self.now, sleep=self.sleep,
                          memory=self.memory, **kwargs)


@pytest.fixture
def events(restore_logging):
    stream = io.StringIO()
    logs.setup(0, "json", stream)
    return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]




def by_action(events, action):
    return [event for event in events if event.get("action") == action]


def test_sigterm_is_forwarded_to_every_process_and_a_clean_stop_exits_0(events):
    world = World()
    sup = world.supervisor(3)
    world.at.append((5.0, sup.request_stop))
    assert sup.run() == 0
    assert len(world.started) == 3
    assert all(process.signals == [signal.SIGTERM] for process in world.started)
    logged = events()
    assert [e["pid"] for e in by_action(logged, "process_started")] == [1000, 1001, 1002]
    assert by_action(logged, "supervisor_stopping")[0]["reason"] == "stopped"
    stopped = by_action(logged, "supervisor_stopped")[0]
    assert stopped["exit_code"] == 0 and stopped["restarts"] == 0
    assert [p.split(":")[0] for p in stopped["peak_rss_mb_by_pid"].split(",")] == ["1000", "1001", "1002"]
    assert stopped["peak_rss_mb"] == round((60 * 1024 + 1002) / 1024, 1)


def test_memory_of_each_process_is_reported_after_it_starts(events):
    world = World()
    sup = world.supervisor(2, memory_first_s=5.0)
    world.at.append((7.0, sup.request_stop))
    assert sup.run() == 0
    memory = by_action(events(), "process_memory")
    assert sorted(e["pid"] for e in memory) == [1000, 1001]
    assert all(e["rss_mb"] > 50 and e["uss_mb"] == 40.0 for e in memory)


def test_a_second_signal_forces_and_a_third_kills():
    world = World(lambda process, start: setattr(process, "on_term", lambda p, sig: None))  # never stops
    sup = world.supervisor(2)
    world.at += [(1.0, sup.request_stop), (2.0, sup.request_stop), (3.0, sup.request_stop)]
    assert sup.run() == 1
    assert all(p.signals == [signal.SIGTERM, signal.SIGTERM, signal.SIGKILL] for p in world.started)


def test_a_forced_stop_exits_non_zero():
    world = World()
    sup = world.supervisor(2)
    world.at += [(1.0, sup.request_stop), (1.5, sup.request_stop)]  # graceful() exits 1 on the second
    assert sup.run() == 1


def test_children_that_overrun_the_grace_period_are_forced_then_killed(events):
    world = World(lambda process, start: setattr(process, "on_term", lambda p, sig: None))
    sup = world.supervisor(1, grace=5.0, force_after_s=10.0)
    world.at.append((1.0, sup.request_stop))
    assert sup.run() == 1
    process = world.started[0]
    assert process.signals == [signal.SIGTERM, signal.SIGTERM, signal.SIGKILL]
    assert 26.0 <= world.now <= 26.5  # stop at 1 s + grace 5 + 10 (forced) + 10 (killed)
    assert by_action(events(), "process_killed")


def test_a_process_that_dies_is_restarted_after_a_back_off(events):
    world = World(lambda process, start: process.exit(-signal.SIGKILL, 3.0) if (process.slot, start) == (1, 0)
                  else None)
    sup = world.supervisor(2)
    world.at.append((20.0, sup.request_stop))
    assert sup.run() == 0
    assert [p.slot for p in world.started] == [0, 1, 1]
    logged = events()
    exited = by_action(logged, "process_exited")[0]
    assert exited["pid"] == 1001 and exited["exit_code"] == -9 and exited["restart_in_s"] == 1.0
    restarted = by_action(logged, "process_restarted")[0]
    assert restarted["pid"] == 1002 and restarted["previous_pid"] == 1001 and restarted["slot"] == 1
    assert "signal SIGKILL" in restarted["reason"]
    assert world.started[2].signals == [signal.SIGTERM]


def test_a_crash_loop_stops_the_others_and_exits_1(events):
    world = World(lambda process, start: process.exit(1, 0.5) if process.slot == 0 else None)
    sup = world.supervisor(3)
    assert sup.run() == 1
    assert sum(1 for p in world.started if p.slot == 0) == 5  # 4 restarts, then the 5th exit within 60 s
    assert [p.signals for p in world.started if p.slot != 0] == [[signal.SIGTERM], [signal.SIGTERM]]
    assert world.now < 20  # back-offs 1 + 2 + 4 + 8 s
    logged = events()
    assert [e["restart_in_s"] for e in by_action(logged, "process_exited") if "restart_in_s" in e] == [1, 2, 4, 8]
    assert by_action(logged, "supervisor_crash_loop")[0]["crashes"] == 5
    stopped = by_action(logged, "supervisor_stopped")[0]
    assert stopped["exit_code"] == 1 and stopped["reason"] == "crash_loop"


def test_exit_status_3_restarts_at_once_and_is_not_a_crash(events):
    # Slot 0 asks for a fresh process 10 times, every 2 s: no back-off, no crash loop.
    world = World(lambda process, start: process.exit(3, 2.0) if process.slot == 0 and start < 10 else None)
    sup = world.supervisor(2)
    world.at.append((30.0, sup.request_stop))
    assert sup.run() == 0
    assert sum(1 for p in world.started if p.slot == 0) == 11
    restarted = by_action(events(), "process_restarted")
    assert len(restarted) == 10 and all("exit status 3" in e["reason"] for e in restarted)
    assert not by_action(events(), "supervisor_crash_loop")


def test_burst_children_that_drain_are_not_restarted_and_the_supervisor_exits_0(events):
    world = World(lambda process, start: process.exit(0, 2.0 + process.slot) if start or process.slot else
                  process.exit(1, 1.0))  # slot 0 crashes once, then drains
    sup = world.supervisor(2, burst=True)
    assert sup.run() == 0
    assert [p.slot for p in world.started] == [0, 1, 0]
    assert all(p.signals == [] for p in world.started)
    stopped = by_action(events(), "supervisor_stopped")[0]
    assert stopped["reason"] == "drained" and stopped["restarts"] == 1


def test_a_usage_error_in_a_child_is_not_retried(events):
    world = World(lambda process, start: process.exit(2, 0.5) if process.slot == 1 else None)
    sup = world.supervisor(2)
    assert sup.run() == 2
    assert len(world.started) == 2 and world.started[0].signals == [signal.SIGTERM]


def test_a_child_killed_by_the_forwarded_sigterm_while_starting_is_a_clean_stop():
    world = World(lambda process, start: setattr(process, "on_term", lambda p, sig: p.exit(-signal.SIGTERM)))
    sup = world.supervisor(2)
    world.at.append((0.5, sup.request_stop))
    assert sup.run() == 0


def test_a_signal_before_the_start_starts_nothing():
    world = World()
    sup = world.supervisor(2)
    sup.request_stop()
    assert sup.run() == 0 and world.started == []


# -- memory and child logs -----------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux /proc")
def test_read_memory_reads_proc():
    memory = children.read_memory(os.getpid())
    assert memory["rss_kb"] > 1000 and memory["peak_kb"] >= memory["rss_kb"] and "uss_kb" not in memory
    private = children.read_memory(os.getpid(), private=True)
    assert 0 < private["uss_kb"] <= private["rss_kb"]
    assert children.read_memory(2 ** 22 + 12345) == {}


def test_a_childs_log_lines_carry_its_slot(restore_logging):
    stream = io.StringIO()
    handler = logs.setup(0, "json", stream)
    children.tag_child_logs(handler, "json", {children.CHILD_ENV: "1"})
    logging.getLogger("azjobs.worker").info("hello %s", "x", extra={"action": "a"})
    line = json.loads(stream.getvalue())
    assert line["worker_process"] == "1" and line["pid"] == os.getpid() and line["message"] == "hello x"

    text = io.StringIO()
    handler = logs.setup(0, "text", text)
    children.tag_child_logs(handler, "text", {children.CHILD_ENV: "0"})
    logging.getLogger("azjobs.worker").info("hello %s", "y")
    assert "[worker 0] hello y" in text.getvalue()

    plain = io.StringIO()
    children.tag_child_logs(logs.setup(0, "text", plain), "text", {})  # not a child: untouched
    logging.getLogger("azjobs.worker").info("hello %s", "z")
    assert "] hello z" not in plain.getvalue() and "hello z" in plain.getvalue()
