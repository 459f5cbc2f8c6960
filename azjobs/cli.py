"""The ``azjobs`` command: the worker (the seed's flags) and queue administration."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from .version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azjobs",
        description="Work azjobs jobs from Azure Storage queues, or manage queues.",
    )
    parser.add_argument("-q", "--queue", action="append", default=[], help="queue to work (repeatable)")
    parser.add_argument("-f", "--fetch", type=int, default=16, help="messages per receive call (1..32)")
    parser.add_argument("-r", "--retry", type=int, default=30, help="lease (seconds a fetched message stays hidden)")
    parser.add_argument("-i", "--include", action="append", default=[], help="file, package or module to import")
    parser.add_argument("--burst", action="store_true", help="drain the queues, then exit")
    parser.add_argument("--create", metavar="NAME", help="create queue NAME")
    parser.add_argument("--version", action="version", version=f"azjobs {__version__}")
    return parser


def import_path(path: str) -> None:
    """Import a file, a package directory or a dotted module so its jobs register."""
    target = Path(path)
    if target.exists():
        target = target.resolve()
        parent = target.parent if target.is_file() or target.is_dir() else target
        sys.path.insert(0, str(parent))
        importlib.import_module(target.stem if target.is_file() else target.name)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        importlib.import_module(path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from .client import Client

    client = Client()
    if args.create:
        created = client.ensure_queue(args.create)
        print(f"queue {args.create} {'created' if created else 'already exists'}")
        return 0
    for path in args.include:
        import_path(path)
    from .worker import drain

    drain(client, args.queue, fetch=args.fetch, lease_s=args.retry)
    return 0
