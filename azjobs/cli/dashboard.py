"""``azjobs dashboard``: serve the dashboard locally with uvicorn.

    azjobs dashboard [--port 8080] [--host 127.0.0.1] [--queue Q ...] [--admin-key KEY]
                     [--connection SETTING] [--host-json PATH] [--sample-interval S]

The admin key (needed for requeue and purge; without one the dashboard is read-only) comes
from ``--admin-key`` or, better (a flag shows in ``ps``), ``$AZJOBS_DASHBOARD_KEY``.
Exit status: 0 stopped; 1 could not serve (the port is in use: one line); 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys

from ..dashboard.auth import KEY_ENV, MIN_KEY_CHARS
from ..model.secrets import RedactingStream, get_logger

log = get_logger("azjobs.dashboard")

from .exits import FAILED, OK, USAGE  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azjobs dashboard",
        description="Serve the azjobs dashboard: queues and depths, the poison browser, job status.",
        epilog=f"Requeue and purge need the admin key (--admin-key or ${KEY_ENV}, at least {MIN_KEY_CHARS} "
               "characters); without it the dashboard is read-only. exit status: 0 stopped; 1 could not serve; "
               "2 usage or configuration error")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--queue", "-q", action="append", dest="queues", metavar="QUEUE",
                        help="show only this job queue (repeatable; default: every queue in the account)")
    parser.add_argument("--admin-key", metavar="KEY", help=f"the key that allows actions (default ${KEY_ENV})")
    parser.add_argument("--origin", action="append", dest="origins", default=[], metavar="URL",
                        help="also answer requests for this origin's host and accept actions from its pages (e.g. "
                             "https://ops.example.com behind a reverse proxy; repeatable). Requests with any other "
                             "Host than 127.0.0.1, localhost, [::1] and --host are answered 400")
    parser.add_argument("--connection", default="AzureWebJobsStorage", metavar="SETTING",
                        help="app setting holding the storage connection (default AzureWebJobsStorage)")
    parser.add_argument("--host-json", metavar="PATH", help="host.json to read messageEncoding from")
    parser.add_argument("--state", action=argparse.BooleanOptionalAction, default=None,
                        help="show the jobs pages from the job state store (default: on when the AZJOBS_STATE "
                             "setting is on, as for the worker)")
    parser.add_argument("--state-table", metavar="TABLE", help="the job state table (default azjobsstate)")
    parser.add_argument("--sample-interval", type=float, default=10.0, metavar="S",
                        help="seconds between depth samples for the chart (default 10)")
    return parser


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _state_wanted(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    from ..state import enabled

    return enabled()


def main(argv: list[str] | None = None, *, out=None, err=None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    out = RedactingStream(out or sys.stdout)
    err = RedactingStream(err or sys.stderr)
    if not 0 <= args.port <= 65535:
        print(f"azjobs dashboard: --port must be 0..65535, got {args.port}", file=err)
        return USAGE
    if not args.sample_interval >= 1:
        print(f"azjobs dashboard: --sample-interval must be at least 1 second, got {args.sample_interval:g}", file=err)
        return USAGE
    for origin in args.origins:
        from urllib.parse import urlsplit

        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
            print(f"azjobs dashboard: --origin {origin!r}: give scheme and host only, like https://ops.example.com",
                  file=err)
            return USAGE
    try:
        import uvicorn

        from ..dashboard.app import create_app
    except ModuleNotFoundError as exc:
        print(f"azjobs dashboard: {exc.name} is not installed: pip install 'azjobs[dashboard]'", file=err)
        return USAGE
    from ..errors import ConfigurationError
    from ..storage.connection import resolve_connection

    key = args.admin_key if args.admin_key is not None else os.environ.get(KEY_ENV)
    try:
        connection = resolve_connection(args.connection)
        app = create_app(connection, admin_key=key or None, queues=args.queues, host_json=args.host_json,
                         sample_interval_s=args.sample_interval, state=_state_wanted(args.state),
                         state_table=args.state_table, allowed_origins=args.origins, allowed_hosts=[args.host])
    except ConfigurationError as exc:
        print(f"azjobs dashboard: {exc}", file=err)
        return USAGE
    if not _loopback(args.host):
        print(f"azjobs dashboard: warning: listening on {args.host}: anyone who can reach it can read the queues and "
              "poison messages (over plain HTTP); put it behind TLS and sign-in, or keep --host 127.0.0.1. It answers "
              f"only Host {', '.join(sorted(app.state.host_names.names))}: add the name you browse to with --origin",
              file=err)
    mode = "actions allowed with the admin key" if key else f"read-only (no admin key: --admin-key or ${KEY_ENV})"
    if app.state.dashboard.state_store is not None:
        mode += f"; jobs from state table {app.state.dashboard.state_store.table_name}"
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            lifespan="on", server_header=False)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # SIGTERM/SIGINT are the normal way to stop it: exit 0 (uvicorn re-raises the signal instead);
            # a second signal stops at once.
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # say where it listens once bound (--port 0 picks a free port)
                port = self.servers[0].sockets[0].getsockname()[1] if self.servers else args.port
                host = f"[{args.host}]" if ":" in args.host else args.host
                print(f"azjobs dashboard on http://{host}:{port}/ (account {connection.account_name or '?'} at "
                      f"{connection.queue_endpoint}, from {args.connection}; {mode})", file=out, flush=True)
                log.info("dashboard listening on %s:%s", args.host, port,
                         extra={"action": "dashboard_started", "port": port})

    try:  # bound here, so a port in use is one line and exit 1 (uvicorn logs its own line and exits 3)
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(f"azjobs dashboard: cannot listen on {args.host}:{args.port}: {_bind_reason(exc)}", file=err)
        return FAILED
    server = Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        return OK
    except SystemExit:  # uvicorn's start-up failed after binding (it logged why)
        server.started = False
    finally:
        sock.close()
    if not server.started:
        print(f"azjobs dashboard: could not serve on {args.host}:{args.port}", file=err)
        return FAILED
    return OK


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket as uvicorn binds one (SO_REUSEADDR, IPv6 for an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _bind_reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is already in use (another process listens there: stop it or choose --port)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges: choose --port 1024 or above)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "that address is not one of this machine's (--host)"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve (--host)"
    return exc.strerror or str(exc)


if __name__ == "__main__":
    sys.exit(main())
