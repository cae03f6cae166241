"""Requests for missing licences (索取): from the holder's page or an approval system's API to a department's queue and back.

A holder asks on ``/licences`` (the real app through Flask's test client, CSRF
token and all); the request is in the department's queue (``hallmark licences
requests``, in process); staff fulfil it by issuing (``request fulfil --face``);
the holder sees the licence, the answer and a notice that goes away once read.
A refusal carries its reason to the holder; overdue requests are listed for
supervisors; an approval system files one and reads it back, only its own. Bad
input is a 4xx and writes nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from core import db as core_db
from core.identifiers import mask_resident_id
from core.models import AuditEvent
from licenses import demo, grants, lifecycle
from licenses import requests as licence_requests
from licenses.models import LicenceRequest
from tests.conftest import run_hallmark
from tests.licenses.conftest import ACTOR, enterprise_code, person_code
from tests.licenses.test_pages import FULL_ID, add_person, app, sign_in, text  # noqa: F401 - app is a fixture

DRIVING, TEACHER, BUSINESS = demo.DRIVING_LICENCE, demo.TEACHER_QUALIFICATION, demo.BUSINESS_LICENCE
POLICE, EDUCATION = demo.issuer_for(DRIVING).code, demo.issuer_for(TEACHER).code


def cli(world, *args) -> str:
    result = run_hallmark(world.instance, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def cli_fails(world, *args) -> str:
    result = run_hallmark(world.instance, *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    return result.stderr


def count(world) -> int:
    with world.ctx.sessions() as db:
        return db.scalar(select(func.count()).select_from(LicenceRequest))


def audit_actions(world, target: str) -> list[str]:
    with world.ctx.sessions() as db:
        return list(db.scalars(select(AuditEvent.action).where(AuditEvent.target == target).order_by(AuditEvent.seq)))


def csrf(page) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)


@pytest.fixture
def person(licence_world):
    n = uuid.uuid4().hex[:8]
    code = person_code(40000 + int(n, 16) % 20000)
    account = add_person(licence_world, name="林晓红", resident_id=code, username=f"asker{n}")
    return {"account": account, "code": code}


def ask_form(client, holder_code: str, **changes) -> dict:
    page = client.get("/licences")
    form = {"csrf_token": csrf(page), "holder": "1", "type": TEACHER, "issuer": EDUCATION, "matter": "教师资格认定", "code": holder_code}
    form["reason"] = "办理教师岗位聘用，需出示教师资格证书"
    return {**form, **changes}


def test_a_holder_asks_the_department_fulfils_and_the_holder_sees_the_licence(app, licence_world, person, tmp_path):
    client = app.test_client()
    sign_in(licence_world, client, person["account"])
    page = client.get("/licences")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "索取证照" in html and 'action="/licences/requests"' in html
    assert "我的索取" in text(page) and "您还没有索取过证照" in text(page)

    sent = client.post("/licences/requests", data=ask_form(client, person["code"]))
    assert sent.status_code == 303 and sent.location.endswith("/licences#my-requests")
    with licence_world.ctx.sessions() as db:
        row = db.scalars(select(LicenceRequest).where(LicenceRequest.requested_by == f"account:{person['account']}")).one()
        assert licence_requests.holder_code(licence_world.ctx, db, row) == person["code"], "the department can read the holder's code"
    assert row.state == "open" and row.holder_masked == mask_resident_id(person["code"])
    assert row.deadline == licence_requests.working_days_after(lifecycle.today(), 5)
    assert row.deadline.weekday() < 5 and timedelta(days=5) <= row.deadline - lifecycle.today() <= timedelta(days=9)
    assert row.holder_cipher and person["code"].encode() not in row.holder_cipher

    mine = client.get("/licences")
    item = mine.get_data(as_text=True).split(f'data-request="{row.id}"')[1]
    assert 'data-state="open"' in item and "办理中" in item and row.deadline.isoformat() in item and "教师资格证书" in item
    assert person["code"] not in mine.get_data(as_text=True) and not FULL_ID.search(mine.get_data(as_text=True))

    # The education department's queue (CLI, in process) has it; staff issue the licence.
    queued = json.loads(cli(licence_world, "licences", "requests", "--issuer", EDUCATION, "--json"))
    assert row.id in [r["id"] for r in queued]
    assert person["code"] not in cli(licence_world, "licences", "requests", "--issuer", EDUCATION)
    face = demo.sample_face(TEACHER, holder_code=person["code"], holder_name="林晓红", seed=row.id)
    (tmp_path / "face.json").write_text(json.dumps(face, ensure_ascii=False), encoding="utf-8")
    done = json.loads(cli(licence_world, "licences", "request", "fulfil", row.id, "--face", f"@{tmp_path / 'face.json'}", "--json"))
    assert done["state"] == "fulfilled" and done["answer"]["licence"]["status"]["state"] == "valid"
    identifier = done["answer"]["licence"]["identifier"]
    assert "already fulfilled" in cli_fails(licence_world, "licences", "request", "refuse", row.id, "--reason", "重复")
    assert audit_actions(licence_world, row.id) == ["licences.request.filed", "licences.request.fulfilled"]

    # The holder sees the licence among theirs, the answer in the list, and a notice until they mark it read.
    answered = client.get("/licences")
    html = answered.get_data(as_text=True)
    assert f'li class="licence" data-identifier="{identifier}"' in html
    assert "您索取的证照已办结：教师资格证书" in text(answered)
    assert f'href="/licences/verify/{identifier}"' in html
    item = html.split(f'<li class="request" data-request="{row.id}"')[1]
    assert 'data-state="fulfilled"' in item and "已办结" in item and identifier in item
    seen = client.post(f"/licences/requests/{row.id}/seen", data={"csrf_token": csrf(answered)})
    assert seen.status_code == 303
    after = client.get("/licences")
    assert "您索取的证照已办结" not in text(after) and f'data-request="{row.id}" data-state="fulfilled"' in after.get_data(as_text=True)
    assert audit_actions(licence_world, row.id)[-1] == "licences.request.seen"


def test_a_refusal_reaches_the_holder_with_its_reason(app, licence_world, person):
    row = licence_requests.ask(
        licence_world.ctx,
        type_code=DRIVING,
        issuer_code=POLICE,
        holder_type="111",
        holder_code=person["code"],
        matter="机动车驾驶证补领",
        reason="证照库中没有我的驾驶证",
        requested_by=f"account:{person['account']}",
    )
    refused = json.loads(cli(licence_world, "licences", "request", "refuse", row.id, "--reason", "经查无此驾驶证档案", "--json"))
    assert refused["state"] == "refused" and refused["answer"]["decision"] == "经查无此驾驶证档案"
    assert "licences.request.refused" in audit_actions(licence_world, row.id)
    client = app.test_client()
    sign_in(licence_world, client, person["account"])
    page = text(client.get("/licences"))
    assert "您索取的机动车驾驶证未予办理" in page and "理由：经查无此驾驶证档案" in page and "不予办理" in page
    # Someone else cannot mark it read: 404, the notice stays.
    other = app.test_client()
    stranger = add_person(licence_world, name="陈大文", resident_id=person_code(70000 + len(row.id)), username=f"x{uuid.uuid4().hex[:8]}")
    sign_in(licence_world, other, stranger)
    assert other.post(f"/licences/requests/{row.id}/seen", data={"csrf_token": csrf(other.get("/licences"))}).status_code == 404
    # Without the form's CSRF token nothing happens.
    assert client.post(f"/licences/requests/{row.id}/seen").status_code == 400
    assert "理由：经查无此驾驶证档案" in text(client.get("/licences"))


def test_overdue_requests_are_listed_for_supervisors(licence_world):
    code = enterprise_code(500000 + int(uuid.uuid4().hex[:5], 16) % 400000)
    market = demo.issuer_for(BUSINESS).code
    row = licence_requests.ask(
        licence_world.ctx, type_code=BUSINESS, issuer_code=market, holder_type="001", holder_code=code,
        matter="企业开办", reason="营业执照未入库", requested_by="client:test",
    )  # fmt: skip
    assert row.id not in [r["id"] for r in json.loads(cli(licence_world, "licences", "requests", "--overdue", "--json"))]
    with core_db.transaction(licence_world.ctx.sessions) as db:  # as if asked two weeks ago
        db.execute(update(LicenceRequest).where(LicenceRequest.id == row.id).values(deadline=lifecycle.today() - timedelta(days=3)))
    everywhere = json.loads(cli(licence_world, "licences", "requests", "--overdue", "--json"))
    assert row.id in [r["id"] for r in everywhere] and all(r["overdue"] and r["state"] == "open" for r in everywhere)
    mine = json.loads(cli(licence_world, "licences", "requests", "--issuer", market, "--overdue", "--json"))
    assert [r["id"] for r in mine if r["id"] == row.id] and {r["issuer"]["code"] for r in mine} == {market}
    assert "OVERDUE" in cli(licence_world, "licences", "requests", "--issuer", market)
    with licence_world.ctx.sessions() as db:
        assert row.id in [r.id for r in licence_requests.overdue(db)]
        assert row.id not in [r.id for r in licence_requests.overdue(db, lifecycle.today() - timedelta(days=10))]
    assert "--issuer" in cli_fails(licence_world, "licences", "requests")


def test_bad_input_is_refused_and_writes_nothing(app, licence_world, person):
    client = app.test_client()
    sign_in(licence_world, client, person["account"])
    before = count(licence_world)
    for changes, status, words in (
        ({"type": "1110000000001375XN999"}, 422, "请从列表中选择证照类型"),
        ({"issuer": "11350100MA0000000X"}, 422, "请从列表中选择发证机关"),
        ({"type": BUSINESS}, 422, "该持证主体不持有此类证照"),
        ({"reason": "理" * 201}, 422, "请说明索取理由"),
        ({"reason": "  "}, 422, "请说明索取理由"),
        ({"matter": ""}, 422, "请填写用于办理的事项"),
        ({"code": person_code(3)}, 422, "填写的号码与该持证主体不符"),
        ({"code": "350102199001011234"}, 422, "填写的号码无效"),
        ({"code": ""}, 422, "请填写完整号码"),
    ):
        answer = client.post("/licences/requests", data=ask_form(client, person["code"], **changes))
        assert answer.status_code == status and words in text(answer), (changes, answer.status_code, text(answer)[:400])
        assert person["code"] not in answer.get_data(as_text=True)
    assert client.post("/licences/requests", data={**ask_form(client, person["code"]), "csrf_token": "x"}).status_code == 400
    assert count(licence_world) == before

    # A second open request for the same licence: 409 naming the first, on the page and in the service.
    assert client.post("/licences/requests", data=ask_form(client, person["code"])).status_code == 303
    again = client.post("/licences/requests", data=ask_form(client, person["code"], matter="另一事项"))
    assert again.status_code == 409 and "您已向该部门索取过此证照" in text(again)
    with licence_world.ctx.sessions() as db:
        first = db.scalars(select(LicenceRequest.id).where(LicenceRequest.requested_by == f"account:{person['account']}")).one()
    with pytest.raises(Exception) as raised:
        licence_requests.ask(
            licence_world.ctx, type_code=TEACHER, issuer_code=EDUCATION, holder_type="111", holder_code=person["code"],
            matter="x", reason="y", requested_by=f"account:{person['account']}",
        )  # fmt: skip
    assert raised.value.status == 409 and raised.value.extensions["code"] == "duplicate_request"
    assert raised.value.extensions["existing"] == first
    assert count(licence_world) == before + 1
    # another requester's open request neither blocks this one nor is revealed to it
    other = licence_requests.ask(
        licence_world.ctx, type_code=TEACHER, issuer_code=EDUCATION, holder_type="111", holder_code=person["code"],
        matter="x", reason="y", requested_by="client:z",
    )  # fmt: skip
    assert other.id != first
    before += 1
    # Fulfilling with another holder's licence, or refusing without a reason, changes nothing.
    other = licence_world.issue(TEACHER)
    assert "this request's holder" in cli_fails(licence_world, "licences", "request", "fulfil", first, "--licence", other.identifier)
    assert "reason" in cli_fails(licence_world, "licences", "request", "refuse", first, "--reason", " ")
    assert "200" in cli_fails(licence_world, "licences", "request", "refuse", first, "--reason", "x" * 201)
    with licence_world.ctx.sessions() as db:
        assert licence_requests.get(db, first).state == "open"


def test_every_string_of_the_request_pages_has_a_chinese_translation():
    from pathlib import Path

    from tests.catalogue_checks import bare_percents, gaps, msgids

    package = Path(__file__).resolve().parents[2] / "licenses"
    templates = [package / "templates" / "licenses" / name for name in ("_requests.html", "request_new.html")]
    wanted = msgids([package / "request_pages.py"], templates)
    assert len(wanted) > 30
    assert gaps(package / "translations", wanted) == []
    assert bare_percents(templates) == []


# -- approval systems -----------------------------------------------------------------------------


def token_for(app, licence_world, client_id: str, secret: str) -> str:
    from idp.oidc import grants as oidc_grants

    answer = app.test_client().post(
        oidc_grants.TOKEN_PATH, data={"grant_type": "client_credentials", "scope": "licences:read"}, auth=(client_id, secret)
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()["access_token"]


def new_client(licence_world) -> tuple[str, str]:
    from idp.oidc import clients

    client_id = "rq-" + uuid.uuid4().hex[:10]
    with core_db.transaction(licence_world.services["idp"].sessions) as db:
        made = clients.add(
            licence_world.services["idp"], db, name=f"审批系统 {client_id}", client_type="confidential",
            grant_types=["client_credentials"], scopes=["licences:read"], client_id=client_id, actor=ACTOR,
        )  # fmt: skip
    return made.client_id, made.client_secret


def test_an_approval_system_asks_and_reads_back_only_its_own(app, licence_world):
    client_id, secret = new_client(licence_world)
    token = token_for(app, licence_world, client_id, secret)
    api = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    holder = person_code(80000 + int(uuid.uuid4().hex[:4], 16))
    body = {"type": DRIVING, "issuer": POLICE, "holder_type": "111", "holder": holder, "matter": "JT-0042", "reason": "申请人驾驶证未入库"}
    before = count(licence_world)

    refused = api.post("/api/licences/requests", json=body, headers=headers)
    assert refused.status_code == 403 and refused.get_json()["code"] == "no_grant", "no grant: it could not check the licence either"
    assert api.post("/api/licences/requests", json=body).status_code == 401
    with core_db.transaction(licence_world.ctx.sessions) as db:
        grants.add(db, client_id=client_id, type_code=DRIVING, mode="compare", matters=["JT-0042"], actor=ACTOR)
    for changes, code in (
        ({"type": "1110000000001375XN999"}, "unknown_type"),
        ({"issuer": "nope"}, "unknown_issuer"),
        ({"holder_type": "001", "holder": enterprise_code(77)}, "wrong_holder_kind"),
        ({"reason": "x" * 201}, "bad_reason"),
        ({"holder": "350102199001011234"}, "bad_holder"),
    ):
        answer = api.post("/api/licences/requests", json={**body, **changes}, headers=headers)
        assert answer.status_code == 422 and answer.get_json()["code"] == code, (changes, answer.get_json())
        assert answer.mimetype == "application/problem+json"
    assert count(licence_world) == before

    made = api.post("/api/licences/requests", json=body, headers=headers)
    assert made.status_code == 201, made.get_json()
    filed = made.get_json()
    assert filed["state"] == "open" and filed["deadline"] and made.headers["Location"] == f"/api/licences/requests/{filed['id']}"
    assert filed["holder"]["code"] == mask_resident_id(holder) and holder not in made.get_data(as_text=True)
    duplicate = api.post("/api/licences/requests", json=body, headers=headers)
    assert duplicate.status_code == 409 and duplicate.get_json()["existing"] == filed["id"]
    assert count(licence_world) == before + 1

    licence = licence_world.issue(DRIVING, holder_code=holder, holder_name="周六")
    cli(licence_world, "licences", "request", "fulfil", filed["id"], "--licence", licence.identifier)
    read = api.get(f"/api/licences/requests/{filed['id']}", headers=headers)
    assert read.status_code == 200
    answer = read.get_json()
    assert answer["state"] == "fulfilled" and answer["answer"]["licence"]["identifier"] == licence.identifier
    assert answer["answer"]["licence"]["status"]["state"] == "valid"

    other_id, other_secret = new_client(licence_world)
    other = {"Authorization": f"Bearer {token_for(app, licence_world, other_id, other_secret)}"}
    assert api.get(f"/api/licences/requests/{filed['id']}", headers=other).status_code == 404
    assert api.get("/api/licences/requests/nosuchrequest", headers=headers).status_code == 404


@pytest.mark.slow
def test_under_a_holders_consent_the_holder_comes_from_the_token(licence_world, tmp_path):
    """A consent token needs no holder code; the department gives it when it issues, checked against the token's holder."""
    from tests.licenses.test_api import CALLBACK, MATTER, Api, _consent_detail

    api = Api(licence_world)
    n = uuid.uuid4().hex[:8]
    code = person_code(90000 + int(n, 16) % 9000)
    account = add_person(licence_world, name="吴思远", resident_id=code, username=f"consent{n}")
    hall = api.client(grant_types=("authorization_code",), scopes=("openid",), redirect_uris=[CALLBACK])
    access = api.consent_token(hall, account, _consent_detail())["access_token"]

    body = {"type": DRIVING, "issuer": POLICE, "matter": MATTER, "reason": "申请人的驾驶证不在证照库中"}
    assert api.post("/api/licences/requests", access, {**body, "matter": "另一事项"}).json()["code"] == "no_grant"
    made = api.post("/api/licences/requests", access, body)
    assert made.status_code == 201, made.text
    filed = made.json()
    assert filed["holder"]["code"] == mask_resident_id(code) and filed["state"] == "open"
    assert api.get(f"/api/licences/requests/{filed['id']}", access).json()["state"] == "open"

    face = demo.sample_face(DRIVING, holder_code=code, holder_name="吴思远", seed=n)
    (tmp_path / "face.json").write_text(json.dumps(face, ensure_ascii=False), encoding="utf-8")
    fulfil = ("licences", "request", "fulfil", filed["id"], "--face", f"@{tmp_path / 'face.json'}")
    assert "holder" in cli_fails(licence_world, *fulfil)  # the request has no code: the department must give it
    assert "not this request's holder" in cli_fails(licence_world, *fulfil, "--holder", person_code(4))
    done = json.loads(cli(licence_world, *fulfil, "--holder", code, "--json"))
    assert done["state"] == "fulfilled"
    answer = api.get(f"/api/licences/requests/{filed['id']}", access).json()
    assert answer["answer"]["licence"]["identifier"] == done["answer"]["licence"]["identifier"]
    with licence_world.ctx.sessions() as db:
        assert licence_requests.get(db, filed["id"]).requested_by == f"client:{hall[0]}"


def test_the_form_on_a_page_of_its_own(app, licence_world, person):
    client = app.test_client()
    sign_in(licence_world, client, person["account"])
    page = client.get("/licences/requests/new?holder=1")
    assert page.status_code == 200 and "索取证照" in text(page) and "教师资格证书" in text(page) and "营业执照" not in text(page)
    assert client.get("/licences/requests/new?holder=9").status_code == 303
    assert app.test_client().get("/licences/requests/new").status_code == 302  # not signed in: to the login page
