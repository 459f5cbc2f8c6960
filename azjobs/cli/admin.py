"""Queue administration: ``azjobs --create NAME``, ``--empty NAME``, ``--delete NAME``."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from ..storage.diagnosis import NOT_FOUND, storage_error_kind
from .common import _storage_failure, confirm
from .exits import FAILED, OK, USAGE


def _admin(args: argparse.Namespace, client: Any, target: Any, stdin: TextIO, out: TextIO, err: TextIO) -> int:

    if isinstance(args.create, str):
        try:
            created = client.ensure_queue(args.create)
        except Exception as exc:
            return _storage_failure(exc, target, f"creating queue {args.create}", err)
        print(f"queue {args.create} {'created' if created else 'already exists'}", file=out)
    for name, verb in ((args.empty, "empty"), (args.delete, "delete")):
        if name is None:
            continue
        if not confirm(f"{verb} queue {name}", args.yes, stdin, err):
            return USAGE
        queue_client = client.queue(name)
        try:
            if verb == "empty":
                queue_client.clear_messages()
                print(f"queue {name} emptied", file=out)
            else:
                queue_client.delete_queue()
                print(f"queue {name} deleted", file=out)
        except Exception as exc:
            if storage_error_kind(exc) == NOT_FOUND:
                print(f"azjobs: queue {name!r} does not exist at {target.where}", file=err)
                return FAILED
            return _storage_failure(exc, target, f"{'emptying' if verb == 'empty' else 'deleting'} queue {name}",
                                    err)
    return OK


__all__ = ["_admin"]
