"""Getting the user's access token the way a native app should (RFC 8252).

``hallmark-key`` is the public client ``hallmark-key``: it listens once on a
random loopback port, sends the user's browser to the authorization endpoint
(authorization code flow with PKCE S256, ``prompt=login`` so the password is
entered now), receives the code on ``http://127.0.0.1:<port>/callback`` and
exchanges it for an access token. Nothing is stored: the token is used for
one enrolment and forgotten.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from keyagent.enrol import EnrolmentFailed, check_server_url

CLIENT_ID = "hallmark-key"
SCOPE = "openid cert:enrol"
REAL_NAME = "urn:hallmark:loa:2"
TIMEOUT = 30.0


def _get_json(url: str, data: dict | None = None) -> dict:
    body = urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read(256 * 1024))
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read(65536))
        except ValueError:
            error = {}
        reason = error.get("error_description") or error.get("error") or exc.reason
        raise EnrolmentFailed(f"{url} answered HTTP {exc.code}: {reason}", exc.code) from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        raise EnrolmentFailed(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


class _Callback(BaseHTTPRequestHandler):
    server: _CallbackServer

    def do_GET(self):
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self.send_error(404)
            return
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if params.get("state") != self.server.expected_state:
            self._page(400, "This answer does not belong to the enrolment in progress.")
            return
        self.server.result = params
        if "code" in params:
            self._page(200, "Logged in. Go back to hallmark-key; you may close this window.")
        else:
            self._page(400, "The login did not complete: " + params.get("error_description", params.get("error", "unknown error")))
        self.server.done.set()

    def _page(self, status: int, message: str) -> None:
        body = f"<!doctype html><meta charset=utf-8><title>hallmark-key</title><p>{html.escape(message)}</p>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # the query holds the code: never log it
        pass


class _CallbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: str):
        super().__init__(("127.0.0.1", 0), _Callback)
        self.expected_state = state
        self.result: dict | None = None
        self.done = threading.Event()


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def obtain_access_token(
    idp_url: str,
    *,
    say: Callable[[str], None] = print,
    open_browser: bool = True,
    wait_seconds: float = 600.0,
    acr: str = REAL_NAME,
) -> str:
    """Log the user in through their browser and return an access token for enrolment."""
    base = check_server_url(idp_url)
    meta = _get_json(base + "/.well-known/openid-configuration")
    issuer = meta.get("issuer")
    for key in ("authorization_endpoint", "token_endpoint"):
        if not isinstance(meta.get(key), str):
            raise EnrolmentFailed(f"{base} does not publish an OpenID Connect {key}")
        check_server_url(meta[key])
    state = secrets.token_urlsafe(16)
    verifier, challenge = pkce_pair()
    server = _CallbackServer(state)
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/callback"
    url = (
        meta["authorization_endpoint"]
        + "?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": redirect_uri,
                "scope": SCOPE,
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "acr_values": acr,
                "prompt": "login",
            }
        )
    )
    thread = threading.Thread(target=server.serve_forever, name="hallmark-key-callback", daemon=True)
    thread.start()
    try:
        say("Log in to Hallmark in your browser to enrol the certificate. If no browser opens, visit:")
        say(url)
        if open_browser:
            try:
                webbrowser.open(url)
            except webbrowser.Error:
                pass
        if not server.done.wait(wait_seconds):
            raise EnrolmentFailed(f"no login within {int(wait_seconds)} seconds; nothing was enrolled")
    finally:
        server.shutdown()
        server.server_close()
    result = server.result or {}
    if "code" not in result:
        raise EnrolmentFailed("the login did not complete: " + result.get("error_description", result.get("error", "unknown error")))
    if issuer and "iss" in result and result["iss"] != issuer:  # RFC 9207 mix-up defence
        raise EnrolmentFailed("the login answer came from another issuer; nothing was enrolled")
    token = _get_json(
        meta["token_endpoint"],
        {
            "grant_type": "authorization_code",
            "code": result["code"],
            "redirect_uri": redirect_uri,
            "client_id": CLIENT_ID,
            "code_verifier": verifier,
        },
    )
    access = token.get("access_token")
    if not isinstance(access, str):
        raise EnrolmentFailed("the token endpoint returned no access token")
    return access
