"""The azjobs command line: flags, validation, confirmation, imports, dispatch (no storage)."""

from __future__ import annotations

import importlib
import io
import sys
import types

import pytest

from azjobs.cli import worker as cli_worker
from azjobs import cli
from azjobs.version import __version__


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_seed_flags_parse():
    args = parse("-q", "a", "-q", "b", "-c", "8", "-f", "32", "-r", "60", "-i", "x.py", "-i", "pkg",
                 "--interval", "0.5", "--burst", "--grace", "5", "--host-json", "h.json", "-v", "--log-format",
                 "json", "--connection", "MyStorage")
    assert args.queue == ["a", "b"] and args.concurrency == 8 and args.fetch == 32 and args.retry == 60
    assert args.include == ["x.py", "pkg"] and args.interval == 0.5 and args.burst and args.grace == 5
    assert args.host_json == "h.json" and args.verbose == 1 and args.log_format == "json"
    assert args.connection == "MyStorage"


def test_defaults():
    args = parse("-q", "a")
    assert args.concurrency is None and args.fetch is None  # host.json decides
    assert args.retry == 30 and args.interval == 0 and args.grace == 30 and not args.burst
    assert args.connection == "AzureWebJobsStorage" and args.log_format == "text"


def test_admin_flags():
    assert parse("--create", "x").create == "x"
    assert parse("-q", "x", "--create").create is True
    assert parse("-e", "x", "--yes").empty == "x"
    assert parse("--empty", "x").empty == "x"
    assert parse("-d", "x", "-y").delete == "x"


@pytest.mark.parametrize("argv", [
    ["-q", "a", "-f", "0"], ["-q", "a", "-f", "33"], ["-q", "a", "-f", "x"], ["-q", "a", "-c", "0"],
    ["-q", "a", "-r", "0"], ["-q", "a", "-r", "-1"], ["-q", "a", "--interval", "-1"], ["-q", "a", "--grace", "x"],
    ["-q", "a", "--log-format", "xml"], ["--bogus"], [], ["--create"],
])
def test_bad_values_exit_2_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "azjobs: error:" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"azjobs {__version__}"


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--queue", "--concurrency", "--fetch", "--retry", "--include", "--empty", "--delete", "--interval",
                 "--create", "--version", "--help", "--burst", "--yes", "--host-json", "--grace", "--verbose",
                 "--log-format", "--connection", "poison"):
        assert flag in text, flag


def test_confirm_refuses_without_a_terminal():
    err = io.StringIO()
    assert not cli.confirm("empty queue x", False, io.StringIO("y\n"), err)
    assert "--yes" in err.getvalue()


def test_confirm_asks_on_a_terminal():
    assert cli.confirm("empty queue x", False, Tty("y\n"), io.StringIO())
    assert not cli.confirm("empty queue x", False, Tty("n\n"), io.StringIO())
    assert not cli.confirm("empty queue x", False, Tty("\n"), io.StringIO())
    assert cli.confirm("empty queue x", True, io.StringIO(""), io.StringIO())


def test_poison_subcommand_is_routed(monkeypatch):
    seen = []
    fake = types.ModuleType("azjobs.cli.poison")
    fake.main = lambda argv, **streams: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, "azjobs.cli.poison", fake)
    assert cli.main(["poison", "list", "emails"]) == 7
    assert seen == [["list", "emails"]]


def test_missing_poison_module_is_a_clear_error(monkeypatch, capsys):
    real = importlib.import_module

    def fake_import(name, *a, **k):
        if name == "azjobs.cli.poison":
            raise ModuleNotFoundError("No module named 'azjobs.cli.poison'", name="azjobs.cli.poison")
        return real(name, *a, **k)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    assert cli.main(["poison", "list"]) == 2
    assert "poison" in capsys.readouterr().err


def test_import_path_file_package_and_module(tmp_path, monkeypatch):
    (tmp_path / "jobs_file_mod.py").write_text("LOADED = 'file'\n")
    package = tmp_path / "jobs_pkg_mod"
    package.mkdir()
    (package / "__init__.py").write_text("LOADED = 'package'\n")
    (package / "inner.py").write_text("LOADED = 'dotted'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("jobs_file_mod", "jobs_pkg_mod", "jobs_pkg_mod.inner"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    cli.import_path(str(tmp_path / "jobs_file_mod.py"))
    cli.import_path(str(package))
    cli.import_path("jobs_pkg_mod.inner")
    assert sys.modules["jobs_file_mod"].LOADED == "file"
    assert sys.modules["jobs_pkg_mod"].LOADED == "package"
    assert sys.modules["jobs_pkg_mod.inner"].LOADED == "dotted"


def test_bad_include_is_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    assert not cli.load_jobs(["no_such_module_xyz"], err)
    assert "no_such_module_xyz" in err.getvalue()


def test_function_app_without_azure_functions_asks_for_include(tmp_path, monkeypatch):
    (tmp_path / "function_app.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'azure.functions'\", name='azure.functions')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "function_app", raising=False)
    err = io.StringIO()
    assert not cli.load_jobs([], err)
    assert "azure-functions" in err.getvalue() and "-i" in err.getvalue()


def test_function_app_is_imported_by_default(tmp_path, monkeypatch):
    (tmp_path / "function_app.py").write_text("IMPORTED = True\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "function_app", raising=False)
    assert cli.load_jobs([], io.StringIO())
    assert sys.modules["function_app"].IMPORTED
    monkeypatch.delitem(sys.modules, "function_app", raising=False)


def test_no_function_app_and_no_include_is_fine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.load_jobs([], io.StringIO())


def test_bad_host_json_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "host.json"
    bad.write_text('{"version": "2.0", "extensions": {"queues": {"batchSize": 64}}}')
    assert cli.main(["-q", "emails", "--host-json", str(bad)]) == 2
    assert "batchSize" in capsys.readouterr().err


def test_a_second_signal_forces_the_stop_only_when_it_is_not_the_same_stop_arriving_twice():
    import signal as signals

    class FakeWorker:
        def __init__(self):
            self.calls = []

        def stop(self, force=False):
            self.calls.append(force)

    now = [100.0]
    worker = FakeWorker()
    restore = cli_worker._install_signals(worker, clock=lambda: now[0])
    try:
        handler = signals.getsignal(signals.SIGTERM)
        handler(signals.SIGTERM, None)
        now[0] += 0.05
        handler(signals.SIGTERM, None)  # the supervisor's and systemd's SIGTERM at once: still graceful
        now[0] += 2.0
        handler(signals.SIGINT, None)  # a second Ctrl-C later on: force
    finally:
        restore()
    assert worker.calls == [False, False, True]
