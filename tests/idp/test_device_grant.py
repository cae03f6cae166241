"""RFC 8628 device authorization grant over real HTTP (``hallmark serve``), from an independent client.

The kiosk is Authlib's requests client (``OAuth2Session``) and plain ``requests``:
device authorization, polling (``authorization_pending``, ``slow_down``), the
resident's approval or denial at ``/device`` through the real pages, the tokens
(their ``acr`` is the approving session's, checked against the JWKS with joserfc),
a second exchange refused, expiry, a client not registered for the grant refused,
and wrong codes at ``/device`` limited per session.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select, update

from core import db as core_db
from core.models import AuditEvent
from idp.models import DeviceAuthorization
from tests.conftest import initialised_copy, run_hallmark, start_server, stop_server
from tests.idp.world import ServerWorld

pytestmark = pytest.mark.slow
GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _add_client(instance, *args) -> dict:
    result = run_hallmark(instance, "idp", "client", "add", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class World(ServerWorld):
    def kiosk(self, client: dict) -> OAuth2Session:
        return OAuth2Session(client["client_id"], client.get("client_secret"), token_endpoint_auth_method=client["auth_method"])

    def keyset(self) -> KeySet:
        return KeySet.import_key_set(requests.get(self.base + "/jwks.json", timeout=10).json())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    instance = tmp_path_factory.mktemp("device-instance")
    initialised_copy(instance)
    kiosk = _add_client(
        instance, "--name", "市民中心自助终端", "--client-id", "counter-kiosk", "--grant", GRANT, "--grant", "refresh_token",
        "--scope", "openid profile hallmark:realname",
    )  # fmt: skip
    tv = _add_client(instance, "--name", "客厅电视", "--client-id", "living-room-tv", "--type", "public", "--grant", GRANT)
    strict = _add_client(instance, "--name", "公积金自助机", "--client-id", "fund-kiosk", "--grant", GRANT, "--min-acr", "2")
    hall = _add_client(instance, "--name", "市网上办事大厅", "--client-id", "city-hall", "--redirect-uri", "http://127.0.0.1:8001/cb")
    process, base = start_server(instance, log=instance / "server.log")
    engine = core_db.make_engine(f"sqlite:///{instance / 'hallmark.db'}")
    w = World(instance, base, core_db.make_session_factory(engine))
    w.clients = {"kiosk": kiosk, "tv": tv, "strict": strict, "hall": hall}
    yield w
    stop_server(process)
    engine.dispose()


def _authorize(world, which="kiosk", **data) -> dict:
    client = world.clients[which]
    kiosk = world.kiosk(client)
    if client["auth_method"] == "none":
        answer = requests.post(world.base + "/oauth/device_authorization", data={"client_id": client["client_id"], **data}, timeout=10)
    else:
        answer = kiosk.post(
            world.base + "/oauth/device_authorization",
            data=data,
            withhold_token=True,
            auth=kiosk.client_auth(kiosk.token_endpoint_auth_method),
            timeout=10,
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.json()


def _poll(world, device_code: str, which="kiosk") -> requests.Response:
    client = world.clients[which]
    data = {"grant_type": GRANT, "device_code": device_code}
    if client["auth_method"] == "none":
        return requests.post(world.base + "/oauth/token", data={**data, "client_id": client["client_id"]}, timeout=10)
    kiosk = world.kiosk(client)
    return kiosk.post(
        world.base + "/oauth/token", data=data, withhold_token=True, auth=kiosk.client_auth(kiosk.token_endpoint_auth_method), timeout=10
    )


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _form_token(page: str) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', page).group(1)


def _decide(world, browser: requests.Session, user_code: str, decision: str) -> requests.Response:
    shown = browser.get(world.base + "/device", params={"user_code": user_code}, timeout=10)
    assert shown.status_code == 200, shown.text
    return browser.post(
        world.base + "/device/decide",
        data={"csrf_token": _csrf(shown.text), "user_code": user_code, "form_token": _form_token(shown.text), "decision": decision},
        timeout=10,
    )


def _events(world, action: str, target: str) -> list[AuditEvent]:
    with world.sessions() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action, AuditEvent.target == target)))


def test_discovery_advertises_the_device_grant(world):
    meta = requests.get(world.base + "/.well-known/openid-configuration", timeout=10).json()
    assert meta["device_authorization_endpoint"] == world.base + "/oauth/device_authorization"
    assert GRANT in meta["grant_types_supported"]


def test_kiosk_polls_resident_approves_tokens_carry_the_sessions_level(world):
    answer = _authorize(world, scope="openid profile")
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", answer["user_code"])
    assert answer["verification_uri"] == world.base + "/device"
    assert answer["verification_uri_complete"] == world.base + "/device?user_code=" + answer["user_code"]
    assert answer["expires_in"] == 600 and answer["interval"] == 5

    pending = _poll(world, answer["device_code"])
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    too_soon = _poll(world, answer["device_code"])
    assert too_soon.status_code == 400 and too_soon.json()["error"] == "slow_down"

    account_id = world.account(proofed=True)
    browser = world.signed_in(account_id)
    shown = browser.get(world.base + "/device", params={"user_code": answer["user_code"].lower().replace("-", " ")}, timeout=10)
    assert shown.status_code == 200
    assert "市民中心自助终端" in shown.text and answer["user_code"] in shown.text and "实名" in shown.text
    decided = browser.post(
        world.base + "/device/decide",
        data={
            "csrf_token": _csrf(shown.text),
            "user_code": answer["user_code"],
            "form_token": _form_token(shown.text),
            "decision": "approve",
        },
        timeout=10,
    )
    assert decided.status_code == 200 and "已批准" in decided.text
    assert len(_events(world, "idp.device.approved", "counter-kiosk")) == 1

    # the exchange through Authlib's client, as a kiosk would make it
    kiosk = world.kiosk(world.clients["kiosk"])
    body = kiosk.fetch_token(world.base + "/oauth/token", grant_type=GRANT, device_code=answer["device_code"])
    assert body["token_type"] == "Bearer" and body["scope"] == "openid profile" and body["refresh_token"]
    claims = jwt.decode(body["id_token"], world.keyset(), algorithms=["ES256", "RS256"]).claims
    assert claims["aud"] == "counter-kiosk" and claims["sub"] == account_id
    assert claims["acr"] == "urn:hallmark:loa:2" and claims["amr"] == ["pwd"]
    userinfo = requests.get(world.base + "/oauth/userinfo", headers={"Authorization": "Bearer " + body["access_token"]}, timeout=10)
    assert userinfo.status_code == 200 and userinfo.json()["acr"] == "urn:hallmark:loa:2"

    again = _poll(world, answer["device_code"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # the second exchange revoked what the first one got
    after = requests.get(world.base + "/oauth/userinfo", headers={"Authorization": "Bearer " + body["access_token"]}, timeout=10)
    assert after.status_code == 401
    # and the code cannot be approved again
    used = browser.get(world.base + "/device", params={"user_code": answer["user_code"]}, timeout=10)
    assert used.status_code == 410 and "已使用" in used.text


def test_a_level_one_session_gives_level_one_tokens_to_a_public_tv(world):
    answer = _authorize(world, "tv")
    browser = world.signed_in(world.account(proofed=False))
    assert _decide(world, browser, answer["user_code"], "approve").status_code == 200
    token = _poll(world, answer["device_code"], "tv")
    assert token.status_code == 200, token.text
    claims = jwt.decode(token.json()["id_token"], world.keyset(), algorithms=["ES256", "RS256"]).claims
    assert claims["acr"] == "urn:hallmark:loa:1"
    assert "refresh_token" not in token.json()  # the TV is not registered for refresh tokens


def test_denial_is_access_denied_and_audited(world):
    answer = _authorize(world)
    browser = world.signed_in(world.account(proofed=False))
    denied = _decide(world, browser, answer["user_code"], "deny")
    assert denied.status_code == 200 and "未登录" in denied.text
    result = _poll(world, answer["device_code"])
    assert result.status_code == 400 and result.json()["error"] == "access_denied"
    assert len(_events(world, "idp.device.denied", "counter-kiosk")) >= 1


def test_expired_code_is_expired_token_and_refused_on_the_page(world):
    answer = _authorize(world)
    with core_db.transaction(world.sessions) as db:
        db.execute(update(DeviceAuthorization).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)).where(
            DeviceAuthorization.status == "pending"
        ))  # fmt: skip
    result = _poll(world, answer["device_code"])
    assert result.status_code == 400 and result.json()["error"] == "expired_token"
    browser = world.signed_in(world.account(proofed=False))
    page = browser.get(world.base + "/device", params={"user_code": answer["user_code"]}, timeout=10)
    assert page.status_code == 410 and "已过期" in page.text


def test_a_session_below_the_clients_minimum_is_sent_to_step_up(world):
    answer = _authorize(world, "strict")
    browser = world.signed_in(world.account(proofed=False))
    page = browser.get(world.base + "/device", params={"user_code": answer["user_code"]}, timeout=10)
    assert page.status_code == 200 and "/login/step-up?" in page.text and 'value="approve"' not in page.text
    forced = browser.post(
        world.base + "/device/decide",
        data={
            "csrf_token": _csrf(page.text),
            "user_code": answer["user_code"],
            "form_token": _form_token(page.text),
            "decision": "approve",
        },
        timeout=10,
    )
    assert forced.status_code == 403
    assert _poll(world, answer["device_code"], "strict").json()["error"] == "authorization_pending"


def test_clients_not_registered_for_the_grant_are_refused(world):
    hall = world.clients["hall"]
    session = world.kiosk(hall)
    answer = session.post(
        world.base + "/oauth/device_authorization",
        data={"scope": "openid"},
        withhold_token=True,
        auth=session.client_auth(session.token_endpoint_auth_method),
        timeout=10,
    )
    assert answer.status_code == 400 and answer.json()["error"] == "unauthorized_client"
    # nor may a kiosk exchange another client's device code
    code = _authorize(world)["device_code"]
    stolen = session.post(
        world.base + "/oauth/token",
        data={"grant_type": GRANT, "device_code": code},
        withhold_token=True,
        auth=session.client_auth(session.token_endpoint_auth_method),
        timeout=10,
    )
    assert stolen.status_code == 400 and stolen.json()["error"] == "unauthorized_client"
    # a scope the kiosk is not registered for
    kiosk = world.kiosk(world.clients["kiosk"])
    wrong = kiosk.post(
        world.base + "/oauth/device_authorization",
        data={"scope": "ca:issue"},
        withhold_token=True,
        auth=kiosk.client_auth(kiosk.token_endpoint_auth_method),
        timeout=10,
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_scope"
    # a wrong secret
    bad = requests.post(world.base + "/oauth/device_authorization", auth=("counter-kiosk", "wrong"), timeout=10)
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"


def test_code_guessing_is_limited_per_session(world):
    browser = world.signed_in(world.account(proofed=False))
    statuses = []
    for _ in range(7):
        statuses.append(browser.get(world.base + "/device", params={"user_code": "BBBB-BBBB"}, timeout=10).status_code)
    assert statuses[:5] == [404] * 5 and statuses[5:] == [429, 429]
    limited = browser.get(world.base + "/device", params={"user_code": "BBBB-BBBB"}, timeout=10)
    assert int(limited.headers["Retry-After"]) > 0 and "错误的代码次数过多" in limited.text
    # a right code is refused too while the session is limited: guessing cannot go on
    answer = _authorize(world)
    assert browser.get(world.base + "/device", params={"user_code": answer["user_code"]}, timeout=10).status_code == 429
    # another session of the same person is not blocked by this one's guesses
    fresh = world.signed_in(world.account(proofed=False))
    assert fresh.get(world.base + "/device", params={"user_code": answer["user_code"]}, timeout=10).status_code == 200


def test_device_page_sends_a_signed_out_browser_to_login(world):
    page = requests.get(world.base + "/device?user_code=BCDF-GHJK", allow_redirects=False, timeout=10)
    assert page.status_code == 303 and page.headers["Location"].startswith("/login?next=%2Fdevice%3Fuser_code%3DBCDF-GHJK")


def test_code_guessing_is_limited_per_address_across_sessions(world):
    """Last in this module: it uses up the guesses of 127.0.0.1, every test's address."""
    refused_fresh = None
    for attempt in range(30):
        browser = world.signed_in(world.account(proofed=False))  # a new session for every guess: only the address is shared
        answer = browser.get(world.base + "/device", params={"user_code": "CCCC-CCCC"}, timeout=10)
        if answer.status_code == 429:
            refused_fresh = attempt
            break
        assert answer.status_code == 404
    assert refused_fresh is not None and refused_fresh <= 20, "a new session from the same address kept guessing"
