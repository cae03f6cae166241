"""Certificate (USB-key) login through the real app (Flask test client), on SQLite and PostgreSQL.

A SoftHSM2 token plays the USB key (``tests/certlogin_fixtures.py``); its keys sign
the CSRs the test CA issues certificates for, and the login challenges. Every
refusal is checked for its reason, its audit event, and that nothing was bound.
Real HTTP against ``hallmark serve`` is in ``test_idp_certlogin_http.py``.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from urllib.parse import quote, urlencode

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from ca import hierarchy, revocation
from core import audit
from core import db as core_db
from core.db import utc_now
from core.models import AuditEvent
from idp.certlogin import login as certlogin
from idp.models import CertificateBinding, LoginChallenge, Matter, PrivacyState, SSOSession
from idp.oidc import clients, keys
from tests.certlogin_fixtures import (  # noqa: F401 (usb_key is a fixture)
    DATA_CSRF,
    add_person,
    b64der,
    issue,
    issue_in_the_past,
    query_of,
    signed_fields,
    usb_key,
)

ISSUER = "https://id.test"
CB = "https://hall.test/cb"


class World:
    def __init__(self, app, usb):
        self.app = app
        self.services = app.extensions["hallmark.services"]
        self.ctx = self.services.idp
        self.ca = self.services.ca
        self.usb = usb

    def tx(self):
        return core_db.transaction(self.ctx.sessions)

    def person(self, **kw):
        return add_person(self.ctx.sessions, self.ctx.lookup_key, **kw)

    def browser(self, remote_addr: str | None = None):
        client = self.app.test_client()
        if remote_addr:
            client.environ_base["REMOTE_ADDR"] = remote_addr
        return Browser(client)

    def hall(self, client_id="hall") -> str:
        with self.tx() as db:
            return clients.add(
                self.ctx,
                db,
                client_id=client_id,
                actor="test",
                name="City hall",
                client_type="confidential",
                redirect_uris=[CB],
                scopes=["openid", "profile"],
                first_party=True,
            ).client_secret

    def matter(self, code: str, level: int):
        from core.db import utc_now

        with self.tx() as db:
            db.add(Matter(code=code, name=f"matter {code}", level=level, updated_at=utc_now(), updated_by="test"))

    def refusals(self) -> list[dict]:
        with self.ctx.sessions() as db:
            assert audit.verify(db).ok
            events = db.scalars(select(AuditEvent).where(AuditEvent.action == "idp.certlogin.refused").order_by(AuditEvent.seq))
            return [json.loads(e.details) for e in events]

    def actions(self) -> list[str]:
        with self.ctx.sessions() as db:
            return [e.action for e in db.scalars(select(AuditEvent).order_by(AuditEvent.seq))]

    def bindings(self) -> list[CertificateBinding]:
        with self.ctx.sessions() as db:
            return list(db.scalars(select(CertificateBinding)))

    def session_of(self, browser) -> SSOSession | None:
        from idp.people import sessions

        cookie = browser.client.get_cookie(sessions.COOKIE)
        with self.ctx.sessions() as db:
            sid = sessions.sid_from_cookie(db, self.ctx.secret_key, cookie.value if cookie else None)
            return db.get(SSOSession, sid) if sid else None


class Browser:
    """A test client that behaves like the login page's script."""

    def __init__(self, client):
        self.client = client
        self.csrf = None

    def page(self, path: str):
        response = self.client.get(path)
        found = DATA_CSRF.search(response.get_data(as_text=True)) or __import__("re").search(
            r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True)
        )
        if found:
            self.csrf = found.group(1)
        return response

    def challenge(self, purpose="login") -> str:
        if self.csrf is None:
            self.page("/login")
        response = self.client.post(
            "/login/cert/challenge", data={"csrf_token": self.csrf, "purpose": purpose}, headers={"Accept": "application/json"}
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["challenge"]

    def post(self, fields: dict, next_url="/account", path="/login/cert", **kw):
        return self.client.post(
            path, data={"csrf_token": self.csrf, "next": next_url, **fields}, headers={"Accept": "application/json"}, **kw
        )

    def login_with(self, signer, certificate, chain=(), next_url="/account", purpose="login", **override):
        return self.post(signed_fields(self.challenge(purpose), signer, certificate, chain, **override), next_url)


@pytest.fixture
def world(tmp_path, migrated, key_manager, usb_key):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    app = create_app(
        app_settings(
            tmp_path,
            engine.url.render_as_string(hide_password=False),
            HALLMARK_PUBLIC_URL=ISSUER,
            HALLMARK_TRUSTED_PROXIES="10.9.8.7",
            HALLMARK_CERT_AGENT_PORT="17999",
        )
    )
    services = app.extensions["hallmark.services"]
    hierarchy.init_hierarchy(services.ca, actor="test")
    yield World(app, usb_key)
    services.close()


def refused(response, code: str, status: int = 400) -> dict:
    body = response.get_json()
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json" and body["code"] == code, body
    return body


# -- success -------------------------------------------------------------------------------------


def test_login_page_offers_the_usb_key_and_lets_its_script_reach_the_agent(world):
    page = world.browser().page("/login")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "USB Key 登录" in html and "/idp-static/certlogin.js" in html
    assert 'data-agent="http://127.0.0.1:17999"' in html
    policy = page.headers["Content-Security-Policy"]
    assert "connect-src 'self' http://127.0.0.1:17999" in policy and "script-src 'nonce-" in policy
    nonce = policy.split("script-src 'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}" src="/idp-static/certlogin.js">' in html
    script = world.app.test_client().get("/idp-static/certlogin.js")
    assert script.status_code == 200 and "/v1/sign" in script.get_data(as_text=True)
    english = world.browser().page("/login?lang=en").get_data(as_text=True)
    assert "USB key login" in english
    # Pages without USB-key login run no script at all.
    assert "script-src" not in world.app.test_client().get("/register").headers["Content-Security-Policy"]


def test_first_certificate_login_binds_the_account_and_reaches_level_3_with_hwk(world):
    person = world.person()
    signer = world.usb.new_key()
    serial, certificate = issue(world.ca, "person-auth", signer, person.resident_id)
    browser = world.browser()
    challenge = browser.challenge()
    origin, stamp = challenge.split(" ")[1], int(challenge.split(" ")[3])
    assert challenge.startswith("hallmark-login/1 https://id.test ") and origin == "https://id.test"
    with world.ctx.sessions() as db:
        row = db.scalars(select(LoginChallenge)).one()
        assert challenge.split(" ")[2] not in (row.nonce_hash,) and int(row.expires_at.timestamp()) == stamp  # stored hashed
        assert timedelta(seconds=100) < row.expires_at - row.created_at <= timedelta(minutes=2)

    done = browser.post(signed_fields(challenge, signer, certificate), next_url="/account?x=1")
    assert done.status_code == 200 and done.get_json() == {"redirect": "/account?x=1"}
    session = world.session_of(browser)
    assert session.account_id == person.account_id and session.amr == "hwk" and session.acr == 3
    [binding] = world.bindings()
    assert (binding.account_id, binding.serial, binding.kind, binding.via) == (person.account_id, serial, "person", "agent")
    assert binding.subject_id_masked == person.resident_id[:3] + "*" * 11 + person.resident_id[-4:]
    assert person.resident_id not in binding.subject and binding.not_after == certificate.not_valid_after_utc
    assert {"idp.certificate.bound", "idp.certlogin.succeeded", "idp.session.started"} <= set(world.actions())

    account = browser.client.get("/account").get_data(as_text=True)
    assert "我的数字证书" in account and "有效" in account and person.resident_id not in account
    assert "<dd>*三" in account and "CN=" not in account  # the holder by name, masked as on the rest of the page, not a DN
    assert "第 3 级" in account or "level 3" in account

    # The hall gets level 3 and amr hwk in the ID token; a second login binds nothing new.
    secret = world.hall()
    query = {
        "response_type": "code",
        "client_id": "hall",
        "redirect_uri": CB,
        "scope": "openid",
        "state": "s",
        "acr_values": "urn:hallmark:loa:3",
    }
    answer = browser.client.get("/oauth/authorize?" + urlencode(query))
    code = query_of(answer.location)["code"]
    token = (
        world.app.test_client()
        .post(
            "/oauth/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": CB},
            headers={"Authorization": "Basic " + base64.b64encode(f"hall:{secret}".encode()).decode()},
        )
        .get_json()
    )
    claims = jwt.decode(token["id_token"], KeySet.import_key_set(keys.jwks_dict(world.ctx)), algorithms=["ES256", "RS256"]).claims
    assert claims["acr"] == "urn:hallmark:loa:3" and "hwk" in claims["amr"] and claims["sub"] == person.account_id
    assert world.browser().login_with(signer, certificate).status_code == 200
    assert len(world.bindings()) == 1


def test_step_up_from_real_name_to_certificate_without_the_password(world):
    person = world.person()
    signer = world.usb.new_key("rsa-2048")
    _, certificate = issue(world.ca, "person-auth", signer, person.resident_id)
    world.hall()
    world.matter("inheritance", 3)
    browser = world.browser()
    browser.page("/login")
    assert (
        browser.client.post(
            "/login", data={"csrf_token": browser.csrf, "identifier": person.username, "password": "Camphor-tree 2026"}
        ).status_code
        == 303
    )
    assert world.session_of(browser).acr == 2
    query = {"response_type": "code", "client_id": "hall", "redirect_uri": CB, "scope": "openid", "state": "s", "matter": "inheritance"}
    step = browser.client.get("/oauth/authorize?" + urlencode(query))
    assert step.location.startswith("/login/step-up?") and query_of(step.location)["level"] == "3"
    page = browser.page(step.location)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'data-purpose="step-up"' in html and 'name="password"' not in html
    done = browser.login_with(signer, certificate, next_url=query_of(step.location)["next"], purpose="step-up")
    assert done.status_code == 200, done.get_data(as_text=True)
    session = world.session_of(browser)
    assert session.amr == "hwk pwd" and session.acr == 3
    back = browser.client.get(done.get_json()["redirect"])
    assert back.location.startswith(CB + "?code=")
    assert "idp.session.stepped_up" in world.actions()


# -- refusals ------------------------------------------------------------------------------------


def test_revoked_expired_and_wrong_usage_certificates_are_refused_and_nothing_is_bound(world):
    person = world.person()
    signer = world.usb.new_key()
    serial, certificate = issue(world.ca, "person-auth", signer, person.resident_id)
    revocation.revoke(world.ca, serial, "keyCompromise", actor="test")
    assert refused(world.browser().login_with(signer, certificate), "revoked")["detail"] == "该证书已被吊销，不能再用于登录。"

    old = issue_in_the_past(world.ca, "person-auth", signer, person.resident_id, days_ago=800)
    assert old.not_valid_after_utc < old.not_valid_before_utc + timedelta(days=731)
    refused(world.browser().login_with(signer, old), "expired")

    _, signing_only = issue(world.ca, "person-sign", signer, person.resident_id)  # content commitment, no digital signature
    refused(world.browser().login_with(signer, signing_only), "wrong_key_usage")

    assert world.bindings() == [] and world.session_of(world.browser()) is None
    reasons = [r["reason"] for r in world.refusals()]
    assert reasons == ["revoked", "expired", "wrong_key_usage"]
    assert all(person.resident_id not in json.dumps(r) for r in world.refusals())
    assert all(r["fingerprint"] and r["serial"] for r in world.refusals())


def test_identifier_must_match_the_account(world):
    alice, bob = world.person(), world.person()
    stranger_id = world.person(proofed=False).resident_id  # nobody is verified with this ID
    signer = world.usb.new_key()
    _, bobs = issue(world.ca, "person-auth", signer, bob.resident_id)
    _, strangers = issue(world.ca, "person-auth", signer, stranger_id)
    refused(world.browser().login_with(signer, strangers), "no_account", 403)

    # Alice is signed in (real-name); Bob's certificate cannot step her session up.
    browser = world.browser()
    browser.page("/login")
    browser.client.post("/login", data={"csrf_token": browser.csrf, "identifier": alice.username, "password": "Camphor-tree 2026"})
    browser.page("/login/step-up?next=/account&level=3")
    refused(browser.login_with(signer, bobs, purpose="step-up"), "identifier_mismatch", 403)
    assert world.session_of(browser).amr == "pwd" and world.bindings() == []


def test_replayed_foreign_altered_and_expired_challenges(world):
    person = world.person()
    signer = world.usb.new_key()
    _, certificate = issue(world.ca, "person-auth", signer, person.resident_id)
    browser = world.browser()
    fields = signed_fields(browser.challenge(), signer, certificate)
    assert browser.post(fields).status_code == 200
    refused(browser.post(fields), "challenge_replayed")

    # A challenge fetched by one browser is refused from another (and stays usable by its own).
    mine, theirs = world.browser(), world.browser()
    theirs.page("/login")
    fields = signed_fields(mine.challenge(), signer, certificate)
    refused(theirs.post(fields), "challenge_foreign")
    assert mine.post(fields).status_code == 200

    text = browser.challenge()
    parts = text.split(" ")
    altered = " ".join([parts[0], "https://evil.test", parts[2], parts[3]])
    refused(browser.post(signed_fields(altered, signer, certificate)), "challenge_origin")
    stale = browser.challenge()
    with world.tx() as db:
        for row in db.scalars(select(LoginChallenge).where(LoginChallenge.used_at.is_(None))):
            row.expires_at = row.created_at - timedelta(seconds=1)
    refused(browser.post(signed_fields(stale, signer, certificate)), "challenge_expired")
    refused(browser.post(signed_fields(parts[0] + " https://id.test " + "A" * 32 + " 1", signer, certificate)), "challenge_unknown")


def test_malformed_and_oversized_input(world):
    person = world.person()
    signer, other = world.usb.new_key(), world.usb.new_key()
    _, certificate = issue(world.ca, "person-auth", signer, person.resident_id)
    browser = world.browser()

    def attempt(**override):
        return browser.post(signed_fields(browser.challenge(), signer, certificate, **override))

    refused(attempt(signature="!!not base64!!"), "malformed")
    refused(attempt(signature=base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()), "bad_signature")
    wrong_key = certlogin_signature(other, browser.challenge())
    refused(browser.post({**signed_fields("x", signer, certificate), **wrong_key}), "bad_signature")
    refused(attempt(algorithm="sha256WithRSAEncryption"), "bad_signature")  # an EC key
    refused(attempt(algorithm="md5"), "malformed")
    refused(attempt(certificate=base64.b64encode(b"\x30\x82\x01\x00garbage").decode()), "malformed")
    refused(attempt(chain="{not json"), "malformed")
    refused(attempt(chain=json.dumps(["%%%"])), "malformed")
    refused(attempt(chain=json.dumps([b64der(certificate)] * 5)), "too_large", 413)
    refused(attempt(certificate="A" * 40000), "too_large", 413)
    refused(attempt(chain=json.dumps([base64.b64encode(b"\x30" * 9000).decode()])), "too_large", 413)
    refused(browser.post({**signed_fields(browser.challenge(), signer, certificate), "challenge": ""}), "malformed")
    assert world.bindings() == [] and len(world.refusals()) == 12
    # A form post without the page's CSRF token is refused before anything is looked at.
    assert world.app.test_client().post("/login/cert", data={"challenge": "x"}).status_code == 400


def certlogin_signature(signer, challenge):
    from tests.certlogin_fixtures import UsbKey

    signature, algorithm = UsbKey.sign(signer, challenge)
    return {"challenge": challenge, "signature": signature, "algorithm": algorithm}


def test_refusals_are_readable_pages_without_javascript(world):
    person = world.person()
    signer = world.usb.new_key()
    _, certificate = issue(world.ca, "person-auth", signer, person.resident_id)
    browser = world.browser()
    fields = signed_fields(browser.challenge(), signer, certificate, signature="AAAA")
    page = browser.client.post("/login/cert", data={"csrf_token": browser.csrf, "next": "/account", **fields})
    assert page.status_code == 400 and page.mimetype == "text/html" and "签名" in page.get_data(as_text=True)


# -- the proxy path ------------------------------------------------------------------------------


def test_forwarded_client_certificate_only_from_a_trusted_proxy(world):
    person = world.person()
    signer = world.usb.new_key()
    _, certificate = issue(world.ca, "person-auth", signer, person.resident_id)
    header = quote(certificate.public_bytes(serialization.Encoding.PEM).decode(), safe="")  # nginx $ssl_client_escaped_cert

    direct = world.browser()  # REMOTE_ADDR 127.0.0.1: not a configured proxy
    direct.page("/login")
    refused(
        direct.client.post(
            "/login/cert/tls", data={"csrf_token": direct.csrf}, headers={"X-SSL-Client-Cert": header, "Accept": "application/json"}
        ),
        "untrusted_proxy",
        403,
    )
    assert "/login/cert/tls" not in direct.page("/login").get_data(as_text=True)

    proxied = world.browser(remote_addr="10.9.8.7")
    page = proxied.client.get("/login", headers={"X-SSL-Client-Cert": header}).get_data(as_text=True)
    assert 'action="/login/cert/tls"' in page
    proxied.page("/login")
    done = proxied.client.post(
        "/login/cert/tls", data={"csrf_token": proxied.csrf, "next": "/account"}, headers={"X-SSL-Client-Cert": header}
    )
    assert done.status_code == 303 and done.location == "/account"
    session = world.session_of(proxied)
    assert session.account_id == person.account_id and session.acr == 3 and session.amr == "hwk"
    assert [b.via for b in world.bindings()] == ["proxy"]
    refused(
        proxied.client.post(
            "/login/cert/tls", data={"csrf_token": proxied.csrf}, headers={"X-SSL-Client-Cert": "garbage%", "Accept": "application/json"}
        ),
        "malformed",
    )
    refused(
        proxied.client.post("/login/cert/tls", data={"csrf_token": proxied.csrf}, headers={"Accept": "application/json"}),
        "no_client_certificate",
    )
    assert [r["reason"] for r in world.refusals()] == ["untrusted_proxy", "malformed", "no_client_certificate"]


def test_proxy_path_is_off_by_default(tmp_path, migrated, key_manager):
    from core import settings
    from tests.conftest import app_settings

    engine, _ = migrated
    loaded = app_settings(tmp_path, engine.url.render_as_string(hide_password=False))
    assert loaded.trusted_proxies == "" and certlogin.options_from(loaded).trusted_proxies == ()
    assert not certlogin.from_trusted_proxy(certlogin.options_from(loaded), "127.0.0.1")
    with pytest.raises(settings.ConfigError):
        app_settings(tmp_path, "sqlite://", HALLMARK_TRUSTED_PROXIES="not-an-address")


def test_migration_matches_the_models(migrated):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import ca.models  # noqa: F401
    import idp.models  # noqa: F401
    from core.db import Base

    engine, _ = migrated
    ours = {
        "idp_login_challenges",
        "idp_certificate_bindings",
        "idp_enterprises",
        "idp_agent_authorisations",
        "idp_session_acting",
        "idp_acting_grants",
    }
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in differences if any(name in repr(d) for name in ours)] == []


def test_challenges_are_limited_per_address(world):
    browser = world.browser(remote_addr="10.1.2.3")
    browser.page("/login")
    for _ in range(world.ctx.settings.cert_challenge_burst):
        browser.challenge()
    limited = browser.client.post("/login/cert/challenge", data={"csrf_token": browser.csrf}, headers={"Accept": "application/json"})
    assert limited.status_code == 429 and limited.get_json()["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert world.browser().challenge()  # another address is not affected


def test_every_message_of_certificate_login_and_enterprises_is_translated():
    from pathlib import Path

    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
    from babel.messages.pofile import read_po

    idp_dir = Path(certlogin.__file__).parent.parent
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    wanted = set()
    for name in ("certlogin/login.py", "people/enterprises.py"):
        wanted |= {m[1] for m in extract_from_file("python", idp_dir / name, keywords=keywords) if isinstance(m[1], str)}
    for name in ("_certlogin.html", "act_for.html"):
        wanted |= {
            m[1]
            for m in extract_from_file("jinja2", idp_dir / "templates" / "idp" / name, keywords=DEFAULT_KEYWORDS)
            if isinstance(m[1], str)
        }
    assert len(wanted) > 60
    with (idp_dir / "translations" / "zh" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        zh = read_po(handle, locale="zh")
    assert sorted(m for m in wanted if not (zh.get(m) and zh.get(m).string)) == []


def test_a_usb_key_login_asks_for_a_newer_privacy_notice_and_cancels_a_pending_closure(world):
    person = world.person()
    signer = world.usb.new_key()
    _, certificate = issue(world.ca, "person-auth", signer, person.resident_id)
    with world.tx() as db:  # accepted an older notice, and asked for the account to be closed
        db.add(PrivacyState(account_id=person.account_id, accepted_version="2025-06", closure_due_at=utc_now() + timedelta(days=3)))
    browser = world.browser()
    done = browser.post(signed_fields(browser.challenge(), signer, certificate), next_url="/account?x=1")
    assert done.status_code == 200
    assert done.get_json() == {"redirect": "/account/privacy/accept?" + urlencode({"next": "/account?x=1"})}
    with world.ctx.sessions() as db:
        assert db.get(PrivacyState, person.account_id).closure_due_at is None
    assert "idp.account.closure_cancelled" in world.actions()
