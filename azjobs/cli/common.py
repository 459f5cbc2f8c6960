"""What every ``azjobs`` command shares: loading the jobs modules, checking queue names, where the
connection came from, asking for confirmation, and saying a failed storage call in one line.
No command imports another command; they all import this module and ``exits``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, TextIO

from ..errors import ConfigurationError
from ..model.queue_names import is_app_setting_expression, resolve_queue_name, validate_queue_name
from ..storage.diagnosis import describe_origin, storage_problem
from .exits import FAILED, OK, USAGE, exit_code_for


def add_connection_argument(parser: Any) -> None:
    """``--connection SETTING``, the same flag on every command that reaches storage."""
    parser.add_argument("--connection", default="AzureWebJobsStorage", metavar="SETTING",
                        help="app setting holding the storage connection (default AzureWebJobsStorage)")


def _positive_int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def _seconds(minimum: float, strict: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
        if value != value or value in (float("inf"),) or value < minimum or (strict and value <= minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum:g} seconds, got {text}")
        return value

    return parse


def _queue_name(text: str, flag: str, *, needs_poison: bool = True) -> str:
    """A queue name as the job decorators check it; a ``%AppSetting%`` expression is resolved from the environment.

    Raises ConfigurationError with one line for the user.
    """

    if not text.strip():
        raise ConfigurationError(f"{flag} {text!r}: a queue name cannot be empty")
    try:
        if is_app_setting_expression(text):
            return resolve_queue_name(text)
        return validate_queue_name(text, needs_poison=needs_poison)
    except ConfigurationError as exc:
        hint = ""
        if is_app_setting_expression(text) and text[1:-1] not in os.environ:
            hint = f"; set it in the environment (export {text[1:-1]}=<queue>), or give the queue name itself"
        raise ConfigurationError(f"{flag} {text}: {exc}{hint}") from None


# -- imports -----------------------------------------------------------------
def _looks_like_path(path: str) -> bool:
    return path.endswith(".py") or "/" in path or os.sep in path or path.startswith(".")


def import_path(path: str) -> None:
    """Import a file, a package directory or a dotted module so its jobs register.

    Raises FileNotFoundError for a file or directory path that does not exist.
    """
    target = Path(path)
    if target.suffix == ".py" and target.is_file() or target.is_dir():
        target = target.resolve()
        if target.is_dir() and not (target / "__init__.py").is_file():
            raise ImportError(f"{path} is a directory but not a package (no __init__.py)")
        parent = str(target.parent)
        if parent not in sys.path:
            sys.path.insert(0, parent)
        importlib.import_module(target.stem if target.is_file() else target.name)
        return
    if _looks_like_path(path):
        raise FileNotFoundError(str(target.resolve()))
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    importlib.import_module(path)


def _import_failure(path: str, exc: BaseException, verbose: int = 0) -> str:
    """One line on why ``-i path`` could not be imported."""
    if isinstance(exc, FileNotFoundError):
        what = "directory" if path.endswith(("/", os.sep)) else "file"
        return f"cannot import {path!r}: the {what} does not exist ({exc})"
    if isinstance(exc, ModuleNotFoundError) and exc.name and (exc.name == path or path.startswith(exc.name + ".")):
        return (f"cannot import {path!r}: no module named {exc.name!r} in {os.getcwd()} or on the Python path; "
                "give a file (-i ./jobs.py), a package directory, or run from the directory that holds it")
    more = "" if verbose else " (-v shows the traceback)"
    if isinstance(exc, ModuleNotFoundError):
        return f"cannot import {path!r}: a module it imports is missing: {exc}{more}"
    return f"cannot import {path!r}: {type(exc).__name__}: {exc}{more}"


def load_jobs(includes: list[str], err: TextIO, verbose: int = 0) -> bool:
    """Import ``-i`` targets, or ./function_app.py by default; False (after an error) on failure.

    With ``verbose``, the traceback of an import failure is shown before the one-line error.
    """
    return _load_jobs(includes, err, verbose) == OK


def _load_jobs(includes: list[str], err: TextIO, verbose: int = 0) -> int:
    """``load_jobs`` with an exit status: 2 when what ``-i`` names does not exist (or function_app.py needs
    azure-functions), 1 when a jobs module exists but raised as it was imported."""
    if includes:
        for path in includes:
            try:
                import_path(path)
            except Exception as exc:
                missing = isinstance(exc, FileNotFoundError) or (
                    isinstance(exc, ModuleNotFoundError) and bool(exc.name)
                    and (exc.name == path or path.startswith(exc.name + ".")))
                if verbose and not missing:
                    traceback.print_exc(file=err)
                print(f"azjobs: {_import_failure(path, exc, verbose)}", file=err)
                return USAGE if missing else FAILED
        return OK
    if not Path("function_app.py").is_file():
        return OK
    try:
        import_path("function_app.py")
    except ModuleNotFoundError as exc:
        if verbose:
            traceback.print_exc(file=err)
        if exc.name and exc.name.split(".")[0] == "azure" and "functions" in (exc.name or ""):
            print("azjobs: ./function_app.py needs the azure-functions package, which is not installed. "
                  "Install it (pip install 'azjobs[functions]') or name your jobs module with -i, "
                  "e.g. `azjobs -q QUEUE -i example_jobs`.", file=err)
            return USAGE
        print(f"azjobs: cannot import ./function_app.py: {exc}; name your jobs module with -i", file=err)
        return FAILED
    except Exception as exc:
        if verbose:
            traceback.print_exc(file=err)
        print(f"azjobs: cannot import ./function_app.py: {type(exc).__name__}: {exc}; "
              "name your jobs module with -i", file=err)
        return FAILED
    return OK


# -- where the connection came from -------------------------------------------------
def _local_settings_values(path: str = "local.settings.json") -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return {}
    values = data.get("Values") if isinstance(data, dict) else None
    return {k: v for k, v in (values or {}).items() if isinstance(v, str)} if isinstance(values, dict) else {}


def connection_origin(setting: str, connection: Any, environ: Any = None) -> str:
    """Where the connection came from, for the lines a user reads: a setting name and where it was set."""

    source = getattr(connection, "source", "") or ""
    if source.startswith("default"):
        return f"the default, Azurite ({setting} is not set)"
    env = os.environ if environ is None else environ
    local = _local_settings_values()
    identity = source.endswith("(identity)")
    names = (f"{setting}__queueServiceUri", f"{setting}__accountName") if identity else (setting,)
    for name in names:
        where = ("environment variable" if str(env.get(name, "")).strip() else
                 "local.settings.json" if local.get(name, "").strip() else None)
        if where:
            extra = ", identity-based" if identity else ", UseDevelopmentStorage=true" if "(Azurite)" in source else ""
            return f"{name} ({where}{extra})"
    return describe_origin(source, setting)


# -- administration ------------------------------------------------------------
def confirm(question: str, assume_yes: bool, stdin: TextIO, err: TextIO) -> bool:
    """Ask on a terminal; refuse on a non-interactive stdin without --yes."""
    if assume_yes:
        return True
    if not stdin.isatty():
        print(f"azjobs: refusing to {question} without confirmation: stdin is not a terminal; pass --yes",
              file=err)
        return False
    err.write(f"Really {question}? This cannot be undone. [y/N] ")
    err.flush()
    answer = stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return True
    print(f"azjobs: not confirmed; did not {question}", file=err)
    return False


def _storage_failure(exc: BaseException, target: Any, doing: str, err: TextIO) -> int:
    """Print one line for a failed storage call; the exit status: 2 for rejected credentials, else 1."""
    print(f"azjobs: {storage_problem(exc, target, doing)}", file=err)
    return exit_code_for(exc)


def _declared_queue(definition: Any) -> str | None:
    """The queue a registered job works, its ``%AppSetting%`` resolved (None if it cannot be)."""

    try:
        return resolve_queue_name(definition.queue)
    except Exception:
        return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` as a timedelta (argparse type)."""
    match = _DURATION.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give e.g. 90s, 30m, 12h, 7d or 2w")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])


__all__ = ["confirm", "connection_origin", "import_path", "load_jobs", "parse_duration"]
