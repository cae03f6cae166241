"""The licence library's JSON API over real HTTP (``hallmark serve`` on the licence world's instance).

An approval system is played with ``requests`` and Authlib's OAuth client: a
client-credentials token with no grant gets 403 ``no_grant`` (what to ask for
included), with a standing grant an answer; a holder-consent token comes from the
real authorization-code flow with ``authorization_details`` (sign-in cookie, the
consent page's form, Authlib's token request) and reaches that holder's licences
only. Every access lands in the holder's access log, and every receipt and
compare result is verified with ``cryptography`` alone from the published JWKS.
Revoked licences are answered *revoked*, not an error; bad input is a 4xx problem.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from core import db as core_db
from licenses import accesslog, demo, grants, lifecycle, qrpayload, receipts
from tests.licenses.conftest import ACTOR, person_code
from tests.licenses.test_grants_and_log import independently_verified
from tests.licenses.test_pages import add_person

pytestmark = pytest.mark.slow
CALLBACK = "http://127.0.0.1:8931/callback"
MATTER = "JT-0001"
PURPOSE = "核验申请人驾驶证"
DRIVING = demo.DRIVING_LICENCE


class Api:
    def __init__(self, world):
        self.world = world
        self.base = world.serve()
        self.meta = requests.get(self.base + "/.well-known/openid-configuration", timeout=10).json()
        self.jwks = requests.get(self.base + "/api/licences/jwks", timeout=10).json()

    @property
    def idp(self):
        return self.world.services["idp"]

    def client(self, *, grant_types=("client_credentials",), scopes=("licences:read",), **kw) -> tuple[str, str]:
        from idp.oidc import clients

        client_id = "t-" + uuid.uuid4().hex[:10]
        with core_db.transaction(self.idp.sessions) as db:
            made = clients.add(
                self.idp,
                db,
                name=f"审批系统 {client_id}",
                client_type="confidential",
                grant_types=list(grant_types),
                scopes=list(scopes),
                client_id=client_id,
                actor=ACTOR,
                **kw,
            )
        return made.client_id, made.client_secret

    def token(self, client: tuple[str, str], scope: str = "licences:read") -> str:
        answer = requests.post(
            self.meta["token_endpoint"], data={"grant_type": "client_credentials", "scope": scope}, auth=client, timeout=10
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def grant(self, client_id: str, type_code: str = DRIVING, mode: str = "compare", matters=(MATTER,)):
        with core_db.transaction(self.world.ctx.sessions) as db:
            row, _ = grants.add(db, client_id=client_id, type_code=type_code, mode=mode, matters=list(matters), actor=ACTOR)
            return row.id

    def get(self, path: str, token: str | None, **params) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.base + path, params=params, headers=headers, timeout=30)

    def post(self, path: str, token: str | None, body: dict) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(self.base + path, json=body, headers=headers, timeout=60)

    def lookup(self, token, identifier, **params) -> requests.Response:
        return self.get(f"/api/licences/{identifier}", token, **{"purpose": PURPOSE, "matter": MATTER, **params})

    def receipt(self, answer: dict) -> dict:
        """The answer's receipt, verified independently, checked against the answer's access entry."""
        header, claims = independently_verified(answer["receipt"], self.jwks)
        assert header["typ"] == receipts.TYP and claims["seq"] == answer["access"]["seq"]
        return claims

    def log_of(self, holder_hash: str) -> list:
        with self.world.ctx.sessions() as db:
            return accesslog.for_holder(db, [holder_hash])

    # -- the authorization code flow, as a hall does it ---------------------------------------

    def consent_token(self, client: tuple[str, str], account_id: str, detail: dict) -> dict:
        from idp.models import Account
        from idp.people import sessions

        with core_db.transaction(self.idp.sessions) as db:
            row = sessions.start(db, db.get(Account, account_id), {"pwd"})
            cookie = sessions.cookie_value(self.idp.secret_key, row.sid, row.secret)
        browser = requests.Session()
        browser.cookies.set(sessions.COOKIE, cookie, domain="127.0.0.1", path="/")
        hall = OAuth2Session(client[0], client[1], scope="openid", redirect_uri=CALLBACK, code_challenge_method="S256")
        verifier = generate_token(48)
        url, state = hall.create_authorization_url(
            self.meta["authorization_endpoint"],
            code_verifier=verifier,
            nonce=generate_token(12),
            authorization_details=json.dumps([detail], ensure_ascii=False),
        )
        location = url
        for _ in range(6):  # to the consent page
            response = browser.get(location if location.startswith("http") else self.base + location, allow_redirects=False, timeout=10)
            location = response.headers.get("Location", "")
            if response.status_code == 200 or location.startswith(CALLBACK):
                break
        assert response.status_code == 200, (response.status_code, location, response.text[:500])
        page = response.text
        # The detail in plain Chinese (the licence library's describe, through its own catalogue).
        assert "证照：机动车驾驶证" in page and f"用途：{detail['purpose']}" in page and f"办理事项：{detail['matter']}" in page
        assert "只核对您提供的信息与证照是否一致" in page
        form_token = page.split('name="form_token" value="')[1].split('"')[0]
        next_url = page.split('name="next" value="')[1].split('"')[0].replace("&amp;", "&")
        allowed = browser.post(
            self.base + "/consent",
            data={"next": next_url, "form_token": form_token, "decision": "allow"},
            allow_redirects=False,
            timeout=10,
        )
        assert allowed.status_code in (302, 303) and allowed.headers["Location"].startswith(CALLBACK), allowed.text[:300]
        token = hall.fetch_token(
            self.meta["token_endpoint"], authorization_response=allowed.headers["Location"], code_verifier=verifier, state=state
        )
        assert token["authorization_details"][0]["type"] == "hallmark_licence"
        return token


@pytest.fixture(scope="module")
def api(licence_world):
    return Api(licence_world)


@pytest.fixture(scope="module")
def driver(licence_world):
    """A real-name verified person holding a driving licence, and another person's driving licence."""
    n = int(uuid.uuid4().hex[:6], 16)
    mine, other = person_code(20000 + n % 20000), person_code(50000 + n % 20000)
    account = add_person(licence_world, name="郑海燕", resident_id=mine, username=f"driver{n}")
    licence = licence_world.issue(DRIVING, holder_code=mine, holder_name="郑海燕")
    others = licence_world.issue(DRIVING, holder_code=other, holder_name="周建华")
    return {"account": account, "code": mine, "licence": licence, "other": others}


def _consent_detail(**changes) -> dict:
    return {"type": "hallmark_licence", "datatypes": [DRIVING], "actions": ["compare"], "matter": MATTER, "purpose": PURPOSE, **changes}


# -- client credentials: no grant, then a grant -------------------------------------------------


def test_no_grant_is_403_saying_what_to_ask_for_and_is_logged(api, driver):
    client = api.client()
    token = api.token(client)
    identifier = driver["licence"].identifier
    refused = api.lookup(token, identifier)
    assert refused.status_code == 403 and refused.headers["Content-Type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "no_grant" and client[0] in problem["detail"]
    assert problem["ask_for"]["grant"] == {"client_id": client[0], "type": DRIVING, "mode": "compare", "matters": [MATTER]}
    assert problem["ask_for"]["authorization_details"][0]["datatypes"] == [DRIVING]
    claims = api.receipt(problem)
    assert claims["result"] == "no_grant" and claims["route"] == "none" and claims["identifier"] == identifier
    entry = next(e for e in api.log_of(driver["licence"].holder_hash) if e.seq == claims["seq"])
    assert entry.client_id == client[0] and entry.result == "no_grant" and entry.hash == claims["hash"]


def test_with_a_grant_compare_lookup_query_and_read(api, driver):
    client = api.client()
    token = api.token(client)
    licence = driver["licence"]
    api.grant(client[0])

    found = api.lookup(token, licence.identifier)
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["licence"]["identifier"] == licence.identifier and body["licence"]["status"]["state"] == "valid"
    assert "face" not in body["licence"]  # compare mode: the standing, not the face
    assert body["access"]["route"] == "grant"
    claims = api.receipt(body)
    assert (claims["client"], claims["purpose"], claims["matter"], claims["result"]) == (client[0], PURPOSE, MATTER, "answered")

    # Reading the face needs a read grant; the matter must be one the grant names.
    assert api.lookup(token, licence.identifier, mode="read").json()["code"] == "no_grant"
    assert api.lookup(token, licence.identifier, matter="OTHER-MATTER").status_code == 403
    api.grant(client[0], mode="read")
    read = api.lookup(token, licence.identifier, mode="read", fields="name,vehicle_class")
    assert read.status_code == 200, read.text
    assert set(read.json()["licence"]["face"]) == {"name", "vehicle_class"} and read.json()["licence"]["face"]["name"] == "郑海燕"
    assert api.receipt(read.json())["fields"] == ["name", "vehicle_class"]

    by_holder = api.get("/api/licences", token, type=DRIVING, holder_type="111", holder=driver["code"], purpose=PURPOSE, matter=MATTER)
    assert by_holder.status_code == 200, by_holder.text
    assert [item["identifier"] for item in by_holder.json()["licences"]] == [licence.identifier]
    api.receipt(by_holder.json())

    # Compare only: per field, nothing disclosed, the result itself signed.
    compared = api.post(
        "/api/licences/compare",
        token,
        {
            "identifier": licence.identifier,
            "claims": {"name": "郑海燕", "vehicle_class": "Z9", "licence_number": driver["code"]},
            "purpose": PURPOSE,
            "matter": MATTER,
        },
    )
    assert compared.status_code == 200, compared.text
    answer = compared.json()
    assert answer["fields"] == {"name": "match", "vehicle_class": "no_match", "licence_number": "match"}
    assert answer["all_match"] is False and answer["status"]["state"] == "valid"
    assert "face" not in answer and driver["code"] not in compared.text  # the sensitive value is not echoed
    # One signature for the access and its result: the receipt, checked with cryptography alone, carries the comparison.
    assert "signed" not in answer
    receipt = api.receipt(answer)
    assert receipt["result"] == "no_match" and receipt["identifier"] == licence.identifier
    assert receipt["comparison"] == {"status": "valid", "fields": answer["fields"], "all_match": False}

    # Every one of these accesses is in the holder's log, each receipt checks against it.
    log = api.log_of(licence.holder_hash)
    assert {e.client_id for e in log} >= {client[0]}
    with api.world.ctx.sessions() as db:
        assert receipts.check(api.world.ctx, db, answer["receipt"])["valid"]
        assert accesslog.verify(db).ok


def test_revoked_licence_is_answered_revoked_not_an_error(api, licence_world):
    client = api.client()
    token = api.token(client)
    api.grant(client[0])
    licence = licence_world.issue(DRIVING, holder_code=person_code(70000 + int(uuid.uuid4().hex[:4], 16)))
    with licence_world.ctx.sessions() as db, db.begin():
        lifecycle.change_state(db, licence.identifier, "revoke", reason="记满12分", actor=ACTOR)
    answer = api.lookup(token, licence.identifier)
    assert answer.status_code == 200, answer.text
    status = answer.json()["licence"]["status"]
    assert status["state"] == "revoked" and status["usable"] is False and status["national_code"] == "07"
    # compare mode tells whether it stands, not who holds it or why it was revoked
    described = answer.json()["licence"]
    assert described["holder"]["name"] == "****人" and "reason" not in status and "face" not in described
    assert "记满12分" not in answer.text and "测试持证人" not in answer.text
    compared = api.post(
        "/api/licences/compare",
        token,
        {"identifier": licence.identifier, "claims": {"name": "测试持证人"}, "purpose": PURPOSE, "matter": MATTER},
    )
    assert compared.status_code == 200 and compared.json()["status"]["state"] == "revoked"


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"purpose": "为" * 201}, 422, "bad_purpose"),
        ({"purpose": ""}, 422, "bad_purpose"),
        ({"matter": ""}, 422, "bad_matter"),
        ({"mode": "steal"}, 422, "bad_mode"),
    ],
)
def test_bad_input_is_a_problem(api, driver, params, status, code):
    token = api.token(api.client())
    answer = api.lookup(token, driver["licence"].identifier, **params)
    assert answer.status_code == status and answer.json()["code"] == code, answer.text


def test_wrong_check_character_unknown_licence_and_type(api, driver):
    token = api.token(api.client())
    identifier = driver["licence"].identifier
    wrong = identifier[:-1] + ("A" if identifier[-1] != "A" else "B")
    answer = api.lookup(token, wrong)
    assert answer.status_code == 422 and answer.json()["code"] == "bad_identifier" and "check character" in answer.json()["detail"]
    assert api.get(f"/api/licences/types/{DRIVING}/fields", token).json()["fields"][0]["name"] == "licence_number"
    assert api.get("/api/licences/types/11100000000013952E999/fields", token).json()["code"] == "unknown_type"
    assert api.get(f"/api/licences/types/{DRIVING}/fields", None).status_code == 401
    assert (
        api.post("/api/licences/compare", token, {"identifier": identifier, "claims": {}, "purpose": "p", "matter": "m"}).status_code == 422
    )
    assert api.get("/api/licences/jwks", None).json()["keys"][0]["alg"] == "ES256"


# -- the holder's consent -----------------------------------------------------------------------


def test_consent_token_reaches_its_holder_only(api, driver):
    hall = api.client(grant_types=("authorization_code", "refresh_token"), scopes=("openid",), redirect_uris=[CALLBACK])
    token = api.consent_token(hall, driver["account"], _consent_detail())
    access = token["access_token"]
    mine = api.lookup(access, driver["licence"].identifier)
    assert mine.status_code == 200, mine.text
    assert mine.json()["access"]["route"] == "consent"
    assert api.receipt(mine.json())["route"] == "consent"

    # Without a holder in the query, the holder is the token's; another holder named in the query is not swapped for
    # the token's (that would answer about the wrong person): it needs a grant, which this client does not have.
    listed = api.get("/api/licences", access, type=DRIVING, purpose=PURPOSE, matter=MATTER)
    assert [item["identifier"] for item in listed.json()["licences"]] == [driver["licence"].identifier]
    someone_else = api.get("/api/licences", access, type=DRIVING, purpose=PURPOSE, matter=MATTER, holder_type="111", holder=person_code(3))
    assert someone_else.status_code == 403 and someone_else.json()["code"] == "no_grant"

    theirs = api.lookup(access, driver["other"].identifier)
    assert theirs.status_code == 403 and theirs.json()["code"] == "no_grant"
    assert api.lookup(access, driver["licence"].identifier, mode="read").status_code == 403  # consent was for compare
    assert api.lookup(access, driver["licence"].identifier, purpose="另一个用途").json()["code"] == "no_grant"

    seqs = {e.seq: e for e in api.log_of(driver["licence"].holder_hash)}
    assert seqs[mine.json()["access"]["seq"]].route == "consent"


def test_expired_consent_is_403_consent_expired(api, driver):
    hall = api.client(grant_types=("authorization_code",), scopes=("openid",), redirect_uris=[CALLBACK])
    token = api.consent_token(hall, driver["account"], _consent_detail(duration=1))
    ends = token["authorization_details"][0]["expires_at"]
    while time.time() <= ends:  # the consent lasts one second
        time.sleep(0.2)
    answer = api.lookup(token["access_token"], driver["licence"].identifier)
    assert answer.status_code == 403 and answer.json()["code"] == "consent_expired", answer.text


def test_removed_client_is_401(api, driver):
    from idp.oidc import clients

    client = api.client()
    api.grant(client[0])
    token = api.token(client)
    assert api.lookup(token, driver["licence"].identifier).status_code == 200
    with core_db.transaction(api.idp.sessions) as db:
        clients.remove(api.idp, db, client[0], actor=ACTOR)
    deadline = time.monotonic() + 15  # the serving processes see a removal within the client cache time (5 s)
    gone = api.lookup(token, driver["licence"].identifier)
    while gone.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        gone = api.lookup(token, driver["licence"].identifier)
    assert gone.status_code == 401 and gone.json()["code"] == "token_inactive", gone.text


# -- QR codes -------------------------------------------------------------------------------------


def test_scanned_qr_genuine_expired_and_forged(api, driver):
    client = api.client()
    token = api.token(client)
    api.grant(client[0])
    licence = driver["licence"]

    def code(now=None, lifetime=timedelta(minutes=3)):
        return qrpayload.payload(
            api.world.ctx,
            identifier=licence.identifier,
            type_code=licence.type_code,
            issuer_code=licence.issuer_code,
            holder_masked=licence.holder_masked,
            holder_name=licence.holder_name,
            valid_from=licence.valid_from,
            valid_until=licence.valid_until,
            kind="show",
            lifetime=lifetime,
            now=now,
        )

    scanned = api.post("/api/licences/qr", token, {"qr": code(), "purpose": PURPOSE, "matter": MATTER})
    assert scanned.status_code == 200, scanned.text
    assert scanned.json()["licence"]["status"]["state"] == "valid" and scanned.json()["qr"]["kind"] == "show"
    expired = api.post(
        "/api/licences/qr", token, {"qr": code(now=datetime.now(UTC) - timedelta(hours=1)), "purpose": PURPOSE, "matter": MATTER}
    )
    assert expired.status_code == 422 and expired.json()["code"] == "qr_expired"
    text = code()
    forged = text[:-8] + ("A" * 8 if not text.endswith("A" * 8) else "B" * 8)
    refused = api.post("/api/licences/qr", token, {"qr": forged, "purpose": PURPOSE, "matter": MATTER})
    assert refused.status_code == 422 and refused.json()["code"] == "bad_qr"
    with api.world.ctx.sessions() as db:
        from sqlalchemy import select

        from core.models import AuditEvent

        refusals = db.scalars(
            select(AuditEvent).where(AuditEvent.actor == f"client:{client[0]}", AuditEvent.action == "licences.qr.refused")
        )
        assert sorted(json.loads(e.details)["code"] for e in refusals) == ["forged_token", "qr_expired"]


# -- issuing systems --------------------------------------------------------------------------------


def test_issuing_client_needs_an_issue_grant_and_the_departments_seal(api, licence_world):
    from signing import seals

    client = api.client(scopes=("licences:issue",))
    token = api.token(client, "licences:issue")
    holder = person_code(90000 + int(uuid.uuid4().hex[:4], 16))
    issuer = demo.issuer_for(DRIVING)
    order = {
        "type": DRIVING,
        "issuer": issuer.code,
        "holder": holder,
        "face": demo.sample_face(DRIVING, holder_code=holder, holder_name="吴志强"),
        "request_id": "req-" + uuid.uuid4().hex,
    }
    refused = api.post("/api/licences/issue", token, order)
    assert refused.status_code == 403 and "--mode issue" in refused.json()["detail"]
    api.grant(client[0], mode="issue", matters=())
    no_seal = api.post("/api/licences/issue", token, order)
    assert no_seal.status_code == 403 and no_seal.json()["ask_for"]["seal_grant"]["department"] == issuer.code
    seals.grant(licence_world.ctx.signing.ca, client[0], issuer.name, actor=ACTOR)
    issued = api.post("/api/licences/issue", token, order)
    assert issued.status_code == 201, issued.text
    identifier = issued.json()["licence"]["identifier"]
    assert api.post("/api/licences/issue", token, order).json()["licence"]["identifier"] == identifier  # idempotent
    bad_face = api.post("/api/licences/issue", token, {**order, "request_id": "other", "face": {"name": 5}})
    assert bad_face.status_code == 422 and bad_face.json()["code"] == "bad_face" and bad_face.json()["errors"]

    revoked = api.post(f"/api/licences/{identifier}/revoke", token, {"reason": "以欺骗手段取得"})
    assert revoked.status_code == 200 and revoked.json()["licence"]["status"]["state"] == "revoked"
    again = api.post(f"/api/licences/{identifier}/revoke", token, {"reason": "again"})
    assert again.status_code == 409 and again.json()["code"] == "wrong_state"
    reader = api.token(api.client())
    assert api.post(f"/api/licences/{identifier}/suspend", reader, {"reason": "x"}).status_code == 403  # lacks licences:issue


def test_no_resident_id_in_the_access_log_or_receipts(api, driver):
    from sqlalchemy import select

    from licenses.models import AccessEntry

    with api.world.ctx.sessions() as db:
        rows = db.scalars(select(AccessEntry)).all()
    assert rows
    for row in rows:
        text = json.dumps([row.client_id, row.holder_hash, row.identifier, row.purpose, row.matter, row.fields], ensure_ascii=False)
        assert driver["code"] not in text


def test_stamped_copy_and_file_verification(api, driver):
    from licenses.models import Licence

    client = api.client()
    token = api.token(client)
    licence = driver["licence"]
    until = (datetime.now(UTC) + timedelta(days=7)).date().isoformat()
    body = {"purpose": PURPOSE, "matter": MATTER, "until": until}
    refused = api.post(f"/api/licences/{licence.identifier}/copy", token, body)
    assert refused.status_code == 403 and refused.json()["ask_for"]["grant"]["mode"] == "copy"
    api.grant(client[0], mode="copy")
    made = api.post(f"/api/licences/{licence.identifier}/copy", token, body)
    assert made.status_code == 200, made.text[:500]
    assert made.headers["Content-Type"] == "application/pdf" and made.content.startswith(b"%PDF-")
    header, claims = independently_verified(made.headers["Hallmark-Receipt"], api.jwks)
    assert claims["mode"] == "copy" and claims["result"] == "copy_made" and claims["seq"] == int(made.headers["Hallmark-Access-Seq"])
    text = subprocess.run(["pdftotext", "-", "-"], input=made.content, capture_output=True, timeout=60, check=True).stdout.decode()
    assert f"审批系统 {client[0]}" in " ".join(text.split())  # the band names the approval system by its registered name
    assert api.post(f"/api/licences/{licence.identifier}/copy", token, {**body, "until": "tomorrow"}).json()["code"] == "bad_date"

    with api.world.ctx.sessions() as db:
        pdf = db.get(Licence, licence.identifier).pdf
    verified = requests.post(
        api.base + "/api/licences/verify",
        params={"purpose": PURPOSE, "matter": MATTER},
        data=pdf,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/pdf"},
        timeout=120,
    )
    assert verified.status_code == 200, verified.text[:500]
    assert verified.json()["verdict"] == "genuine_current" and api.receipt(verified.json())["mode"] == "verify"
    not_pdf = requests.post(
        api.base + "/api/licences/verify",
        params={"purpose": PURPOSE, "matter": MATTER},
        data=b"not a pdf",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/pdf"},
        timeout=30,
    )
    assert not_pdf.status_code == 422 and not_pdf.json()["code"] == "not_a_pdf"
