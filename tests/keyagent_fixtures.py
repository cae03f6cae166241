"""Shared parts for the hallmark-key tests: a SoftHSM2 token of its own playing the USB
key, the ``hallmark-key`` program run as a subprocess, real-name accounts, and access
tokens obtained by driving the real login flow over HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from core import db as core_db
from core import settings as settings_module
from core.db import utc_now
from core.identifiers import generate_resident_id, lookup_hash, mask_resident_id
from hsm import softhsm
from idp.models import IdentityProofing
from idp.people import accounts
from tests.conftest import ROOT

PASSWORD = "Plum-blossom 2026"
# A checksum-valid resident ID (GB 11643) of a synthetic person.
ZHANG_SAN_ID = "11010519491231002X"


def new_resident_id() -> str:
    """A fresh checksum-valid resident ID (one ID binds one account, so tests need their own)."""
    birth = date(1950, 1, 1) + timedelta(days=secrets.randbelow(18000))
    return generate_resident_id("350102", birth, secrets.randbelow(1000))


@dataclass
class UsbKeyToken:
    """A SoftHSM2 token in a folder of its own: the 'USB key' (its own SOFTHSM2_CONF)."""

    directory: Path
    conf: Path
    label: str
    pin: str

    @property
    def pin_file(self) -> Path:
        path = self.directory / "pin"
        if not path.exists():
            path.write_text(self.pin + "\n")
            path.chmod(0o600)
        return path

    def env(self, **extra) -> dict:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith(("HALLMARK_", "SOFTHSM2_"))}
        env["SOFTHSM2_CONF"] = str(self.conf)
        env["XDG_CONFIG_HOME"] = str(self.directory / "xdg")  # never the developer's own config
        env.update(extra)
        return env

    def run(self, *args, input: str | None = None, timeout: float = 120, **extra) -> subprocess.CompletedProcess:
        """``hallmark-key *args`` in this process (click's CliRunner) with this key's environment.

        The key's SoftHSM2 is reached through a private copy of the library (see
        ``tests.conftest.pkcs11_module_for``), as a process of its own would reach it.
        The answer looks like ``run_process``'s; ``timeout`` is left to pytest-timeout.
        """
        import os
        import warnings

        from keyagent.cli import main
        from tests.conftest import invoke_cli, pkcs11_module_for

        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("HALLMARK_", "SOFTHSM2_"))}
        env.update(self.env(HALLMARK_KEY_MODULE=pkcs11_module_for(self.conf), **extra))
        # hallmark-key routes warnings to logging (logging.captureWarnings) when it starts: keep
        # that to the run, so that pytest's warning filters go on seeing this process's warnings.
        with warnings.catch_warnings():
            return invoke_cli(main, "hallmark-key", args, input=input, env=env)

    def run_process(self, *args, input: str | None = None, timeout: float = 120, **extra) -> subprocess.CompletedProcess:
        """``hallmark-key *args`` as a process of its own, as a resident starts it."""
        return subprocess.run(
            [sys.executable, "-m", "keyagent.cli", *args],
            input=input,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )

    def pkcs11_tool(self, *args) -> str:
        result = subprocess.run(
            ["pkcs11-tool", "--module", softhsm.default_module(), "--token-label", self.label, *args],
            env=self.env(),
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.decode("utf-8", "replace")

    def read_certificate_der(self, key_id_hex: str) -> bytes:
        out = self.directory / f"cert-{key_id_hex}.der"
        self.pkcs11_tool("--read-object", "--type", "cert", "--id", key_id_hex, "--output-file", str(out))
        return out.read_bytes()


def make_usb_key(directory: Path, label: str = "usb-key", pin: str | None = None) -> UsbKeyToken:
    directory.mkdir(parents=True, exist_ok=True)
    conf = softhsm.write_config(directory)
    pin = pin or f"{secrets.randbelow(10**6):06d}"
    softhsm.init_token(conf, label, pin, "so-" + pin)
    return UsbKeyToken(directory, conf, label, pin)


# -- accounts and tokens on a running instance -----------------------------------------------


class Hall:
    """An instance served over HTTP, with in-process access to its database for setting up accounts."""

    def __init__(self, instance: Path, base: str):
        self.instance, self.base = instance, base
        self.settings = settings_module.load(instance, environ={"HALLMARK_INSTANCE": str(instance)})
        self.engine = core_db.make_engine(self.settings.database_url)
        self.sessions = core_db.make_session_factory(self.engine)

    def close(self):
        self.engine.dispose()

    def account(self, *, resident_id: str | None = None, legal_name: str = "张三") -> str:
        """A new account (username returned); proofed with ``resident_id`` when given."""
        username = "u" + uuid.uuid4().hex[:10]
        with core_db.transaction(self.sessions) as db:
            account = accounts.register(db, identifier=username, password=PASSWORD, display_name=legal_name)
            if resident_id:
                db.add(
                    IdentityProofing(
                        account_id=account.id,
                        resident_id_hash=lookup_hash(self.settings.lookup_key.encode(), "resident_id", resident_id),
                        resident_id_masked=mask_resident_id(resident_id),
                        legal_name=legal_name,
                        method="counter",
                        source="test",
                        location="测试服务中心",
                        document="resident-card",
                        verified_at=utc_now(),
                    )
                )
        return username

    def audit_actions(self, target: str | None = None) -> list[tuple[str, dict]]:
        from sqlalchemy import select

        from core.models import AuditEvent

        with self.sessions() as db:
            rows = db.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
            return [(r.action, json.loads(r.details)) for r in rows if target is None or r.target == target]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def log_in_through_browser(base: str, authorize_url: str, username: str, redirect_prefix: str) -> str:
    """Play the browser: authorization request, the real login form, redirects; the final redirect to the client."""
    browser = requests.Session()
    response = browser.get(authorize_url, allow_redirects=False, timeout=10)
    for _ in range(10):
        location = response.headers.get("Location", "")
        if location.startswith(redirect_prefix):
            return location
        if response.status_code in (301, 302, 303):
            response = browser.get(location if location.startswith("http") else base + location, allow_redirects=False, timeout=10)
            continue
        assert response.status_code == 200, (response.status_code, response.text[:500])
        token = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        if 'name="choice" value="self"' in response.text:  # an enterprise's representative or agent: act as oneself
            action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', response.text).group(1))
            response = browser.post(base + action, data={"csrf_token": token.group(1), "choice": "self"}, allow_redirects=False, timeout=10)
            continue
        assert token and 'name="password"' in response.text, response.text[:500]
        next_url = parse_qs(urlsplit(response.url).query)["next"][0]
        response = browser.post(
            base + "/login",
            data={"csrf_token": token.group(1), "next": next_url, "identifier": username, "password": PASSWORD},
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 303, response.text[:500]
    raise AssertionError("the login flow did not come back to the client")


def access_token(
    base: str,
    username: str,
    *,
    client_id: str = "hallmark-key",
    scope: str = "openid cert:enrol",
    port: int = 49152,
    redirect_path: str = "/callback",
) -> dict:
    """An access token for ``username`` from the real code flow with PKCE (a public client, loopback redirect)."""
    redirect_uri = f"http://127.0.0.1:{port}{redirect_path}"
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(8)
    request = requests.Request(
        "GET",
        base + "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "prompt": "login",
        },
    ).prepare()
    location = log_in_through_browser(base, request.url, username, redirect_uri)
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params.get("state") == state and "code" in params, params
    token = requests.post(
        base + "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    return token.json()


# -- the local agent's confirmation step ------------------------------------------------------


def ask_agent(base: str, body: dict, origin: str, **headers) -> requests.Response:
    """``POST /v1/sign`` as a hall page's script sends it (JSON, with the page's Origin)."""
    return requests.post(
        base + "/v1/sign", data=json.dumps(body), headers={"Content-Type": "application/json", "Origin": origin, **headers}, timeout=30
    )


def agent_outcome(base: str, request_id: str, origin: str, wait: float = 0) -> requests.Response:
    """``GET /v1/sign/<id>``: what the asking page polls for."""
    return requests.get(f"{base}/v1/sign/{request_id}", params={"wait": wait}, headers={"Origin": origin}, timeout=wait + 30)


def confirmation_token(confirm_url: str) -> str:
    """The CSRF token on the agent's confirmation page (as the holder's browser loads it)."""
    page = requests.get(confirm_url, headers={"Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "cross-site"}, timeout=10)
    assert page.status_code == 200, page.text[:500]
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return html.unescape(found.group(1))


def post_confirmation(confirm_url: str, token: str | None, decision: str = "approve", **headers) -> requests.Response:
    """The confirmation form's post; by default with the headers the agent's own page sends (override to forge)."""
    own = "{0.scheme}://{0.netloc}".format(urlsplit(confirm_url))
    sent = {"Origin": own, "Sec-Fetch-Site": "same-origin", **headers}
    form = {"decision": decision} if token is None else {"decision": decision, "csrf_token": token}
    return requests.post(
        confirm_url, data=form, headers={k: v for k, v in sent.items() if v is not None}, allow_redirects=False, timeout=60
    )


def confirm_in_browser(page, confirm_url: str, *, decision: str = "approve", shot: Path | None = None) -> str:
    """Open the agent's confirmation page in a real browser, press 确认签名 (or 拒绝); the page text it showed first."""
    page.goto(confirm_url)
    shown = page.locator("main").inner_text()
    if shot is not None:
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
    page.get_by_role("button", name="确认签名" if decision == "approve" else "拒绝").click()
    page.wait_for_load_state()
    return shown
