"""Fixtures of the shared package's tests: a local OpenID Connect provider (discovery and a
JWKS over real HTTP on 127.0.0.1) and signing keys."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass
class Provider:
    """What the local identity provider serves, and how often each path was asked for."""

    url: str
    keys: list[dict[str, Any]] = field(default_factory=list)
    discovery_issuer: str | None = None
    jwks_status: int = 200
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str) -> tuple[int, Any]:
        with self.lock:
            self.hits[path] += 1
            if path == "/.well-known/openid-configuration":
                issuer = self.discovery_issuer or self.url
                return 200, {"issuer": issuer, "jwks_uri": f"{self.url}/jwks"}
            if path == "/jwks":
                return self.jwks_status, {"keys": list(self.keys)}
            return 404, {"error": "not found"}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ThreadingHTTPServer, list[Provider]]]:
    current: list[Provider] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = current[0].answer(self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, current
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def provider(server: tuple[ThreadingHTTPServer, list[Provider]]) -> Provider:
    httpd, current = server
    fresh = Provider(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    current[:] = [fresh]
    return fresh


@pytest.fixture(scope="module")
def rsa_a() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_b() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())
