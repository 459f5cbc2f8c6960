"""HTTPS and Entra ID for Azurite: a private CA and server certificate made on the spot, and a token
credential whose tokens Azurite's ``--oauth basic`` accepts (tests and benchmarks)."""

from __future__ import annotations

import base64
import ipaddress
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from azure.core.credentials import AccessToken


def make_tls_files(folder: Path) -> tuple[str, str, str]:
    """(CA certificate, server certificate, server key) PEM files: a CA made now signs a certificate for
    127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azjobs test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
          .not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                          x509.DNSName("localhost")]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class StorageToken:
    """A ``TokenCredential`` handing out Entra ID-shaped access tokens for Azure Storage.

    Azurite's ``--oauth basic`` checks what these carry (not the signature): audience
    ``https://storage.azure.com``, an ``https://sts.windows.net/<tenant>/`` issuer, ``nbf``/``iat``/``exp``.
    ``scopes`` records what each call asked for.
    """

    def __init__(self, lifetime_s: int = 3600) -> None:
        self.lifetime_s = lifetime_s
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: object) -> AccessToken:
        self.scopes.append(scopes)
        now = int(time.time())
        claims = {"aud": "https://storage.azure.com", "iss": "https://sts.windows.net/00000000-0000-0000-0000-0000000"
                  "00000/", "iat": now - 60, "nbf": now - 60, "exp": now + self.lifetime_s, "oid": "azjobs-test"}
        token = f"{_b64({'typ': 'JWT', 'alg': 'RS256'})}.{_b64(claims)}.{_b64({'sig': 'not checked'})}"
        return AccessToken(token, now + self.lifetime_s)


class ManagedIdentityEndpoint:
    """A local stand-in for App Service's managed identity endpoint (``IDENTITY_ENDPOINT`` /
    ``IDENTITY_HEADER``): ``DefaultAzureCredential`` and ``ManagedIdentityCredential`` get their
    tokens (``StorageToken``'s) from it, so a worker in another process runs with the real
    identity code. ``environment`` holds the two settings; ``requests`` counts the tokens handed out."""

    def __init__(self, lifetime_s: int = 3600) -> None:
        import secrets
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        tokens = StorageToken(lifetime_s)
        header = secrets.token_hex(16)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                query = parse_qs(urlsplit(self.path).query)
                if self.headers.get("X-IDENTITY-HEADER") != header:
                    self.send_error(401, "wrong X-IDENTITY-HEADER")
                    return
                resource = (query.get("resource") or [""])[0]
                token = tokens.get_token(resource.rstrip("/") + "/.default")
                endpoint.requests += 1
                body = json.dumps({"access_token": token.token, "expires_on": str(token.expires_on),
                                   "resource": resource, "token_type": "Bearer"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.environment = {"IDENTITY_ENDPOINT": f"http://127.0.0.1:{self._server.server_address[1]}/msi/token",
                            "IDENTITY_HEADER": header}
        self._thread = threading.Thread(target=self._server.serve_forever, name="identity-endpoint", daemon=True)

    def start(self) -> "ManagedIdentityEndpoint":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
