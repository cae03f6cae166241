"""The identity provider's people directory (``core.people``), as the packages above it get it: from the services.

Who is signed in to a browser (with their own resident ID's holder and the
enterprises they represent or act for as an agent), where to send a browser to
sign in, whose holder an access token stands for, and when a token stops counting.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from core import component, people
from core.identifiers import lookup_hash, mask_credit_code
from idp.models import Client, IdentityProofing
from idp.oidc import clients
from idp.people import enterprises, sessions
from tests.certlogin_fixtures import new_credit_code
from tests.idp.test_idp_oidc_protocol import CB, ISSUER, basic, decode, oidc  # noqa: F401


@pytest.fixture
def directory(oidc):
    found = component.service(people.NAME, oidc.app)
    assert found is component.services(oidc.app)[people.NAME]
    return found


def _signed_in(world, directory, sid: str | None):
    with world.ctx.sessions() as db:
        cookie = sessions.cookie_for(db, world.ctx.secret_key, sid) if sid else None
    cookie = cookie or (sessions.cookie_value(world.ctx.secret_key, sid, "no such session") if sid else None)
    headers = {"Cookie": f"{sessions.COOKIE}={cookie}"} if cookie else {}
    with world.app.test_request_context("/licences", headers=headers):
        return directory.signed_in()


def _proofing(world, account_id) -> IdentityProofing:
    with world.ctx.sessions() as db:
        row = db.get(IdentityProofing, account_id)
        db.expunge(row)
        return row


def test_signed_in_is_the_browser_session_with_its_level_and_holders(oidc, directory):
    boss, clerk, plain = oidc.account("boss", proofed=True), oidc.account("clerk", proofed=True), oidc.account("plain")
    represented, agent_for, revoked_for = new_credit_code(), new_credit_code(), new_credit_code()
    with oidc.tx() as db:
        enterprises.add(db, credit_code=represented, name="闽南茶业有限公司", representative=boss, actor="test")
        enterprises.add(db, credit_code=agent_for, name="厦门港务有限公司", representative=clerk, actor="test")
        enterprises.add(db, credit_code=revoked_for, name="泉州纺织有限公司", representative=clerk, actor="test")
        until = datetime.now(UTC) + timedelta(days=30)
        enterprises.authorise_agent(db, credit_code=agent_for, representative_id=clerk, agent=boss, matters="*", expires_at=until)
        gone = enterprises.authorise_agent(db, credit_code=revoked_for, representative_id=clerk, agent=boss, matters="*", expires_at=until)
        enterprises.revoke_agent(db, credit_code=revoked_for, authorisation_id=gone.id, by_account=clerk)

    assert _signed_in(oidc, directory, None) is None
    assert _signed_in(oidc, directory, "forged-sid") is None

    me = _signed_in(oidc, directory, oidc.login(boss))
    proofing = _proofing(oidc, boss)
    assert me.account_id == boss and me.display_name == "boss display" and me.acr == "urn:hallmark:loa:2"
    assert me.holders[0] == people.HolderRef("111", proofing.resident_id_hash, "110***********002X", "张三")
    key = oidc.ctx.lookup_key
    assert set(me.holders[1:]) == {
        people.HolderRef("001", lookup_hash(key, "credit_code", represented), mask_credit_code(represented), "闽南茶业有限公司"),
        people.HolderRef("001", lookup_hash(key, "credit_code", agent_for), mask_credit_code(agent_for), "厦门港务有限公司"),
    }  # the revoked authorisation is not a holder
    assert all("*" in h.masked for h in me.holders)

    unproofed = _signed_in(oidc, directory, oidc.login(plain))
    assert unproofed.acr == "urn:hallmark:loa:1" and unproofed.holders == ()

    sid = oidc.login(boss)
    with oidc.tx() as db:
        sessions.end(db, sid, actor="test")
    assert _signed_in(oidc, directory, sid) is None


def test_login_url_is_the_login_page_or_step_up_with_a_local_next(directory):
    def parts(url):
        split = urlsplit(url)
        return split.path, {k: v[0] for k, v in parse_qs(split.query).items()}

    assert parts(directory.login_url("/licences?tab=mine")) == ("/login", {"next": "/licences?tab=mine"})
    assert parts(directory.login_url(ISSUER + "/licences")) == ("/login", {"next": "/licences"})
    assert parts(directory.login_url("/licences", acr="urn:hallmark:loa:1")) == ("/login", {"next": "/licences"})
    assert parts(directory.login_url("/licences", acr="urn:hallmark:loa:3")) == ("/login/step-up", {"next": "/licences", "level": "3"})
    for bad in ("https://evil.test/licences", "//evil.test/x", "licences", "/a\\b", "/a\nb", ISSUER + ".evil.test/x", "/" + "a" * 20000):
        with pytest.raises(ValueError):
            directory.login_url(bad)
    with pytest.raises(ValueError):
        directory.login_url("/licences", acr="urn:other:high")


def test_login_url_is_followed_by_the_login_page(oidc, directory):
    oidc.account("zhang")
    page = oidc.browser.get(directory.login_url("/licences?x=1", acr="urn:hallmark:loa:2"))
    assert page.status_code == 302 and page.location.startswith("/login?")  # step-up signs in first
    assert oidc.browser.get(page.location).status_code == 200


def test_holders_of_token(oidc, directory):
    secret = oidc.client(scopes=["openid", "profile"])
    person = oidc.account("proofed", proofed=True)
    oidc.login(person)
    body = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()

    claims = decode(oidc, body["access_token"]).claims
    proofing = _proofing(oidc, person)
    assert directory.holders_of_token(claims) == (people.HolderRef("111", proofing.resident_id_hash, proofing.resident_id_masked, "张三"),)

    unproofed = oidc.account("unproofed")
    assert directory.holders_of_token({**claims, "sub": unproofed}) == ()

    code = new_credit_code()
    with oidc.tx() as db:
        enterprises.add(db, credit_code=code, name="闽南茶业有限公司", representative=person, actor="test")
    acting = {**claims, "org_id": code, "org_name": "old name", "org_role": "representative"}
    assert directory.holders_of_token(acting) == (
        people.HolderRef("001", lookup_hash(oidc.ctx.lookup_key, "credit_code", code), mask_credit_code(code), "闽南茶业有限公司"),
    )

    approval = oidc.client("approval", redirect_uris=[], grant_types=["client_credentials"], scopes=["ca:read"], first_party=False)
    own = decode(oidc, oidc.token({"grant_type": "client_credentials"}, "approval", approval).get_json()["access_token"]).claims
    assert directory.holders_of_token(own) == ()  # a client's own token stands for nobody


def test_token_inactive_says_why(oidc, directory):

    secret = oidc.client()
    oidc.login(oidc.account(proofed=True))
    body = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()
    claims = decode(oidc, body["access_token"]).claims
    assert directory.token_inactive(claims) is None
    assert oidc.rp.post("/oauth/revoke", data={"token": body["access_token"]}, headers=basic("hall", secret)).status_code == 200
    assert directory.token_inactive(claims) == "revoked"
    assert directory.token_inactive({k: v for k, v in claims.items() if k != "jti"}) == "not an access token of this provider"

    approval = oidc.client("approval", redirect_uris=[], grant_types=["client_credentials"], scopes=["ca:read"], first_party=False)
    own = decode(oidc, oidc.token({"grant_type": "client_credentials"}, "approval", approval).get_json()["access_token"]).claims
    assert directory.token_inactive(own) is None
    with oidc.tx() as db:
        clients.remove(oidc.ctx, db, "approval", actor="test")
    assert directory.token_inactive(own) == "client removed"

    # Removed by another process: this one's client cache still has it, the directory asks the database.
    other = oidc.client("other-approval", redirect_uris=[], grant_types=["client_credentials"], scopes=["ca:read"], first_party=False)
    theirs = decode(oidc, oidc.token({"grant_type": "client_credentials"}, "other-approval", other).get_json()["access_token"]).claims
    assert directory.token_inactive(theirs) is None and clients.get(oidc.ctx, "other-approval") is not None  # cached
    with oidc.tx() as db:
        db.delete(db.get(Client, "other-approval"))
    assert clients.get(oidc.ctx, "other-approval") is not None  # still cached here
    assert directory.token_inactive(theirs) == "client removed"

    sid = oidc.login(oidc.account("other"))
    second = oidc.token({"grant_type": "authorization_code", "code": oidc.code(), "redirect_uri": CB}, "hall", secret).get_json()
    with oidc.tx() as db:
        sessions.end(db, sid, actor="test")
    assert directory.token_inactive(decode(oidc, second["access_token"]).claims) in ("revoked", "session ended")


def test_client_names_are_the_registered_display_names(oidc, directory):
    oidc.client("named-approval", redirect_uris=[], grant_types=["client_credentials"], scopes=["ca:read"], first_party=False)
    names = directory.client_names(["named-approval", "no-such-client", ""])
    assert set(names) == {"named-approval"} and names["named-approval"]
    assert directory.client_names([]) == {}
