"""Helpers for the storage-stack tests: a counting forward proxy on loopback (certificates and tokens for
Azurite: devtools/tls.py)."""

from __future__ import annotations

import select
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class ForwardProxy:
    """An HTTP forward proxy on 127.0.0.1 that counts what it forwards: requests by method (absolute-form
    HTTP requests) and ``CONNECT`` tunnels. It forwards only to loopback addresses."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.paths: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _count(self, method: str) -> None:
                with proxy._lock:
                    proxy.counts[method] += 1
                    proxy.paths.append((method, self.path))

            def _forward(self) -> None:
                import http.client

                self._count(self.command)
                target = urlsplit(self.path)
                if target.hostname not in ("127.0.0.1", "localhost"):
                    self.send_error(403, "this test proxy forwards to loopback only")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection",
                                                                                       "connection")}
                upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    upstream.request(self.command, path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                finally:
                    upstream.close()
                self.send_response_only(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_MERGE = do_PATCH = do_OPTIONS = _forward

            def do_CONNECT(self) -> None:  # noqa: N802
                self._count("CONNECT")
                host, _, port = self.path.rpartition(":")
                if host not in ("127.0.0.1", "localhost"):
                    self.send_error(403, "this test proxy tunnels to loopback only")
                    return
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.send_response_only(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                sockets = [self.connection, upstream]
                try:
                    while True:
                        readable, _, _ = select.select(sockets, [], [], 30)
                        if not readable:
                            return
                        for sock in readable:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (upstream if sock is self.connection else self.connection).sendall(data)
                except OSError:
                    return
                finally:
                    upstream.close()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="forward-proxy", daemon=True)

    def start(self) -> "ForwardProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)
