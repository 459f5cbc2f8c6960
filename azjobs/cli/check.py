"""``azjobs check``: an exec liveness/readiness probe reading a worker's heartbeat file.

    azjobs check [--heartbeat PATH] [--max-age SECONDS] [--storage-max-age SECONDS]

Exit 0 when the file was written recently (by default within three of its write intervals) and
storage answered the worker recently (by default within 120 s; 0 leaves storage out, which is
what a liveness probe wants: a restart does not bring storage back); 1 otherwise; 2 on a usage
error. One line on stdout says why, for ``kubectl describe pod``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, TextIO

from ..runtime.heartbeat import HEARTBEAT_ENV
from .common import _seconds
from .exits import FAILED, OK, USAGE

STORAGE_MAX_AGE_S = 120.0
INTERVALS = 3  # a file older than this many write intervals is stale
MIN_MAX_AGE_S = 15.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azjobs check",
        description="Exit 0 when a worker's heartbeat file (azjobs --heartbeat PATH) is fresh and storage answered "
                    "it recently, 1 otherwise, with one line saying why: an exec liveness/readiness probe.")
    parser.add_argument("--heartbeat", default=os.environ.get(HEARTBEAT_ENV) or None, metavar="PATH",
                        help=f"the worker's heartbeat file (default ${HEARTBEAT_ENV})")
    parser.add_argument("--max-age", type=_seconds(0, strict=True), metavar="SECONDS",
                        help=f"the file is stale when older than this (default {INTERVALS}x the worker's "
                             f"--heartbeat-interval, at least {MIN_MAX_AGE_S:g})")
    parser.add_argument("--storage-max-age", type=_seconds(0), default=STORAGE_MAX_AGE_S, metavar="SECONDS",
                        help=f"fail when storage last answered the worker longer ago than this (default "
                             f"{STORAGE_MAX_AGE_S:g}; 0: do not check storage, for a liveness probe)")
    return parser


def _verdict(record: dict[str, Any], now: float, max_age: float | None, storage_max_age: float) -> tuple[bool, str]:
    written_at = float(record["written_at"])
    interval = float(record.get("interval_s") or 10.0)
    limit = max_age if max_age is not None else max(MIN_MAX_AGE_S, INTERVALS * interval)
    age = now - written_at
    who = f"worker pid {record.get('pid')}"
    if age > limit:
        return False, f"stale: {who} last wrote its heartbeat {age:.0f}s ago (more than {limit:g}s)"
    state = " (stopping)" if record.get("stopping") else ""
    if storage_max_age:
        ok_at = record.get("storage_ok_at")
        error = record.get("storage_error")
        because = f": {error}" if error else ""
        if ok_at is None:
            return False, f"storage: {who} has not had an answer from storage yet{because}"
        since = now - float(ok_at)
        if since > storage_max_age:
            return False, (f"storage: {who} last had an answer from storage {since:.0f}s ago (more than "
                           f"{storage_max_age:g}s){because}")
        return True, f"ok: {who} heartbeat {max(age, 0):.0f}s old, storage answered {max(since, 0):.0f}s ago{state}"
    return True, f"ok: {who} heartbeat {max(age, 0):.0f}s old{state}"


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.heartbeat:
        print(f"azjobs check: no heartbeat file: pass --heartbeat PATH or set {HEARTBEAT_ENV} (the worker's "
              "--heartbeat)", file=err)
        return USAGE
    try:
        with open(args.heartbeat, encoding="utf-8") as handle:
            record = json.load(handle)
        healthy, line = _verdict(record, time.time(), args.max_age, args.storage_max_age)
    except FileNotFoundError:
        print(f"missing: no heartbeat file at {args.heartbeat} (is the worker started with --heartbeat "
              f"{args.heartbeat}?)", file=out)
        return FAILED
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"unreadable: heartbeat file {args.heartbeat}: {type(exc).__name__}: {exc}", file=out)
        return FAILED
    print(line, file=out)
    return OK if healthy else FAILED


__all__ = ["build_parser", "main"]
