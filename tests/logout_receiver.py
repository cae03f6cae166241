"""A real HTTP endpoint on 127.0.0.1 that plays the halls' back-channel logout URIs in tests."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from joserfc import jwt
from joserfc.jwk import KeySet


class Receiver:
    """Records each POSTed logout token by path; ``answers[path]`` lists statuses to give first (then 200)."""

    def __init__(self):
        self.received: dict[str, list[str]] = {}
        self.answers: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                with receiver._lock:
                    receiver.received.setdefault(self.path, []).extend(form.get("logout_token", []))
                    queue = receiver.answers.get(self.path) or []
                    status = queue.pop(0) if queue else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def tokens(self, path: str) -> list[str]:
        with self._lock:
            return list(self.received.get(path, []))

    def wait_for(self, path: str, count: int = 1, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.tokens(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"no logout token reached {path} within {timeout} s (got {len(self.tokens(path))})")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def check_logout_token(token: str, jwks: dict, *, issuer: str, client_id: str) -> dict:
    """What a relying party must check (OIDC Back-Channel Logout 1.0, 2.6); returns the claims."""
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256", "RS256"])
    assert decoded.header["typ"] == "logout+jwt"
    claims = decoded.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        iat={"essential": True},
        exp={"essential": True},
        jti={"essential": True},
        sid={"essential": True},
    ).validate(claims)
    assert claims["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}}
    assert "nonce" not in claims
    return claims
