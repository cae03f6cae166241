"""The licence officer's section over HTTP, signed in through the real IdP: the issuing form generated from the type's
JSON Schema, lifecycle actions with reasons, a penalty revocation through four eyes, the 索取 queue, bulk imports and
their error reports; a clerk of another department refused each page (403), bad input refused with nothing written.
"""

from __future__ import annotations

import csv
import re
import secrets
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from admin import proposals, roles
from licenses import demo, imports, issuance, lifecycle, verification
from licenses import requests as licence_requests
from licenses.models import ImportRun, Licence, LicenceRequest
from tests.admin.conftest import CSRF, DEPT_B
from tests.admin.test_four_eyes import proposal_id, status_of
from tests.licenses.conftest import person_code

pytestmark = pytest.mark.slow

DRIVING = demo.DRIVING_LICENCE
POLICE = demo.issuer_for(DRIVING).code
TEACHER = demo.TEACHER_QUALIFICATION
EDUCATION = demo.issuer_for(TEACHER).code
ACTOR = "test:licences-console"


def enter(browser):
    """Sign in through the IdP; a privacy notice the IdP asks to accept first is accepted (as a person would)."""
    page = browser.sign_in()
    if "/account/privacy/accept" in page.url:
        version = re.search(r'name="accept" value="([^"]+)"', page.text).group(1)
        next_url = re.search(r'name="next" value="([^"]*)"', page.text).group(1).replace("&amp;", "&")
        token = CSRF.search(page.text).group(1)
        sent = browser.http.post(
            browser.url("/account/privacy/accept"),
            data={"csrf_token": token, "next": next_url, "accept": version},
            allow_redirects=False,
            timeout=30,
        )
        page = browser.follow(sent)
    assert page.status_code == 200 and "/admin" in page.url, page.url
    return page


@pytest.fixture(scope="module")
def library(console):
    ctx = console.services["licenses"]
    demo.prepare_catalogue(ctx, actor=ACTOR)
    return ctx


def _licence_count(console) -> int:
    with console.services.sessions() as db:
        return db.scalar(select(func.count()).select_from(Licence))


def _state(console, identifier: str) -> str:
    with console.services.sessions() as db:
        return db.get(Licence, identifier).state


def _form(holder: str, **face) -> dict:
    base = {
        "type": DRIVING,
        "issuer": POLICE,
        "holder_code": holder,
        "licence_number": holder,
        "name": "林驾驶",
        "sex": "男" if int(holder[16]) % 2 else "女",
        "nationality": "中国",
        "address": "示范市仓山区上渡路8号",
        "birth_date": f"{holder[6:10]}-{holder[10:12]}-{holder[12:14]}",
        "first_issued_on": "2015-06-01",
        "vehicle_class": "C1",
    }
    return {**base, **face}


def _issued(console, officer, holder: str) -> str:
    page = officer.get(f"/admin/licences/issue?type={DRIVING}")
    request_id = re.search(r'name="request_id" value="([^"]+)"', page.text).group(1)
    sent = officer.post(
        "/admin/licences/issue", {**_form(holder), "request_id": request_id}, csrf_from=f"/admin/licences/issue?type={DRIVING}"
    )
    assert sent.status_code == 303, sent.text[:800]
    return re.match(r"/admin/licences/l/([^?]+)\?notice=issued$", sent.headers["Location"]).group(1)


def test_a_licence_officer_issues_from_the_generated_form_suspends_resumes_and_a_penalty_needs_a_second_officer(console, library):
    officer = console.person((roles.LICENCE_OFFICER, POLICE), name="证照甲")
    colleague = console.person((roles.LICENCE_OFFICER, POLICE), name="证照乙")
    browser = console.browser(officer)
    enter(browser)
    home = browser.get("/admin")
    assert 'href="/admin/licences"' in home.text

    # The form is generated from the type's face schema: one input per property, Chinese titles as labels,
    # inputs by type/format/enum, required ones marked.
    form = browser.get(f"/admin/licences/issue?type={DRIVING}")
    assert form.status_code == 200
    for name, label in (("name", "姓名"), ("vehicle_class", "准驾车型"), ("first_issued_on", "初次领证日期")):
        assert re.search(rf'<label for="f-{name}">{label} <span class="muted">（必填）</span>', form.text), name
    assert 'type="date" id="f-birth_date"' in form.text
    assert re.search(r'<select id="f-sex" name="sex" required>\s*<option value="">', form.text)
    assert '<option value="女"' in form.text

    # Missing a required field: refused next to the field, nothing written.
    holder = person_code(810_000 + secrets.randbelow(10_000))
    before = _licence_count(console)
    missing = browser.post("/admin/licences/issue", {**_form(holder), "vehicle_class": ""}, csrf_from="/admin/licences/issue")
    assert missing.status_code == 422
    assert re.search(r'<p class="field-error" id="e-vehicle_class">此项必填。</p>', missing.text), missing.text[-3000:]
    assert 'aria-invalid="true" aria-describedby="e-vehicle_class"' in missing.text
    assert 'value="林驾驶"' in missing.text  # what was typed stays
    # An unknown type, a bad holder code: clear refusals, nothing written.
    unknown = browser.post("/admin/licences/issue", {**_form(holder), "type": "11100000000013952E999"}, csrf_from="/admin/licences/issue")
    assert unknown.status_code == 422 and "没有这种证照类型" in unknown.text
    bad_holder = browser.post("/admin/licences/issue", {**_form(holder), "holder_code": "123"}, csrf_from="/admin/licences/issue")
    assert bad_holder.status_code == 422 and 'id="e-holder_code"' in bad_holder.text
    # Another department as the issuer: refused on the server.
    other = browser.post("/admin/licences/issue", {**_form(holder), "issuer": EDUCATION}, csrf_from="/admin/licences/issue")
    assert other.status_code == 403
    # A forged CSRF token: refused and recorded.
    forged = browser.http.post(browser.url("/admin/licences/issue"), data={**_form(holder), "csrf_token": "forged"}, allow_redirects=False)
    assert forged.status_code in (400, 403) and "admin.csrf_refused" in {e.action for e in console.audit("admin.csrf_refused")}
    assert _licence_count(console) == before

    # Issued from the form: in the library, its sealed file verifies as the current genuine licence.
    identifier = _issued(console, browser, holder)
    assert _licence_count(console) == before + 1
    with console.services.sessions() as db:
        row = db.get(Licence, identifier)
        assert (row.type_code, row.issuer_code, row.state, row.holder_name) == (DRIVING, POLICE, "valid", "林驾驶")
        assert row.issued_by == f"account:{officer.account_id}"
        pdf = db.get(Licence, identifier).pdf
    verdict = verification.verify_file(library, pdf)
    assert verdict["usable"] is True and verdict["licence"]["identifier"] == identifier
    shown = browser.get(f"/admin/licences/l/{identifier}?notice=issued")
    assert shown.status_code == 200 and "证照已签发" in shown.text
    assert identifier in browser.get("/admin/licences").text

    # Suspend needs a reason; with one it is suspended; resume lifts it. Each with the reason in the history and audit.
    no_reason = browser.post(f"/admin/licences/l/{identifier}/suspend", {"reason": ""}, csrf_from=f"/admin/licences/l/{identifier}")
    assert no_reason.status_code == 422 and _state(console, identifier) == "valid"
    done = browser.post(
        f"/admin/licences/l/{identifier}/suspend", {"reason": "交通违法记分满12分"}, csrf_from=f"/admin/licences/l/{identifier}"
    )
    assert done.status_code == 303 and _state(console, identifier) == "suspended"
    assert any("交通违法记分满12分" in e.details for e in console.audit("licences.suspend", identifier))
    done = browser.post(f"/admin/licences/l/{identifier}/resume", {"reason": "学习考试合格"}, csrf_from=f"/admin/licences/l/{identifier}")
    assert done.status_code == 303 and _state(console, identifier) == "valid"
    page = browser.get(f"/admin/licences/l/{identifier}")
    assert "交通违法记分满12分" in page.text and "学习考试合格" in page.text

    # Revoking as a penalty: a proposal (after a fresh USB-key login); the licence stays valid until a second officer approves.
    asked = browser.post(
        f"/admin/licences/l/{identifier}/revoke", {"reason": "吊销：醉酒驾驶"}, csrf_from=f"/admin/licences/l/{identifier}"
    )
    assert asked.status_code == 303 and asked.headers["Location"].startswith("/admin/reauth?next=")
    assert browser.follow(asked, usb=True).status_code == 200
    pid = proposal_id(
        browser.post(f"/admin/licences/l/{identifier}/revoke", {"reason": "吊销：醉酒驾驶"}, csrf_from=f"/admin/licences/l/{identifier}")
    )
    assert status_of(console, pid) == proposals.PENDING and _state(console, identifier) == "valid"
    own = browser.post(f"/admin/proposals/{pid}/approve", {"reason": "自己批"}, csrf_from=f"/admin/proposals/{pid}")
    assert own.status_code == 403 and _state(console, identifier) == "valid"

    second = console.browser(colleague)
    enter(second)
    assert "吊销" in second.get(f"/admin/proposals/{pid}").text
    asked = second.post(f"/admin/proposals/{pid}/approve", {"reason": "同意"}, csrf_from=f"/admin/proposals/{pid}")
    assert second.follow(asked, usb=True).status_code == 200
    approved = second.post(f"/admin/proposals/{pid}/approve", {"reason": "同意"}, csrf_from=f"/admin/proposals/{pid}")
    assert approved.headers["Location"] == f"/admin/proposals/{pid}?notice=approved"
    assert status_of(console, pid) == proposals.DONE
    with console.services.sessions() as db:
        row = db.get(Licence, identifier)
        assert (row.state, row.state_reason) == ("revoked", "吊销：醉酒驾驶")
    assert [e.actor for e in console.audit("licences.revoke", identifier)] == [f"account:{colleague.account_id}"]


def licence_of_another(library) -> str:
    code = person_code(840_000 + secrets.randbelow(10_000))
    face = demo.sample_face(DRIVING, holder_code=code, holder_name="林别人")
    return issuance.issue(library, issuance.Order(DRIVING, POLICE, code, face), actor=ACTOR, requester=ACTOR).identifier


def test_the_request_queue_shows_deadlines_and_overdue_ones_and_an_officer_fulfils_one_and_refuses_one(console, library):
    officer = console.person((roles.LICENCE_OFFICER, POLICE), usb=False, name="索取甲")
    browser = console.browser(officer)
    enter(browser)
    base = 830_000 + secrets.randbelow(10_000)
    holders = [person_code(base + n) for n in range(3)]
    existing = issuance.issue(
        library,
        issuance.Order(DRIVING, POLICE, holders[0], demo.sample_face(DRIVING, holder_code=holders[0], holder_name="林已有")),
        actor=ACTOR,
        requester=ACTOR,
    )
    asked = [
        licence_requests.ask(
            library, type_code=DRIVING, issuer_code=POLICE, holder_type="111", holder_code=code,
            matter="机动车驾驶证补领", reason=f"证照库中没有-{n}", requested_by="client:test",
        )
        for n, code in enumerate(holders)
    ]  # fmt: skip
    overdue_day = lifecycle.today() - timedelta(days=3)
    with console.services.sessions() as db, db.begin():
        db.get(LicenceRequest, asked[2].id).deadline = overdue_day

    queue = browser.get("/admin/licences/requests")
    assert queue.status_code == 200
    for row in asked:
        assert f'data-request="{row.id}"' in queue.text
    assert re.search(rf'<tr data-request="{asked[2].id}" class="overdue">', queue.text)
    assert f'{overdue_day.isoformat()} <span class="status overdue">已超期</span>' in queue.text
    assert not re.search(rf'<tr data-request="{asked[0].id}" class="overdue">', queue.text)

    # Fulfil one by linking the licence already in the library (a wrong identifier first: refused, nothing changes).
    wrong = browser.post(f"/admin/licences/requests/{asked[0].id}/link", {"licence": "nonsense"}, csrf_from="/admin/licences/requests")
    assert wrong.status_code == 422  # not an identifier at all
    other = browser.post(
        f"/admin/licences/requests/{asked[0].id}/link", {"licence": licence_of_another(library)}, csrf_from="/admin/licences/requests"
    )
    assert other.status_code == 422 and "不是这个申请所要的类型或持证主体" in other.text
    with console.services.sessions() as db:
        assert db.get(LicenceRequest, asked[0].id).state == "open"
    linked = browser.post(
        f"/admin/licences/requests/{asked[0].id}/link", {"licence": existing.identifier}, csrf_from="/admin/licences/requests"
    )
    assert linked.status_code == 303
    # Fulfil one by issuing from the generated form.
    face = demo.sample_face(DRIVING, holder_code=holders[1], holder_name="林新证")
    issued = browser.post(f"/admin/licences/requests/{asked[1].id}/issue", face, csrf_from="/admin/licences/requests")
    assert issued.status_code == 303, issued.text[-2000:]
    # Refuse one: a reason is needed.
    empty = browser.post(f"/admin/licences/requests/{asked[2].id}/refuse", {"reason": ""}, csrf_from="/admin/licences/requests")
    assert empty.status_code == 422
    refused = browser.post(
        f"/admin/licences/requests/{asked[2].id}/refuse", {"reason": "该人未取得驾驶证"}, csrf_from="/admin/licences/requests"
    )
    assert refused.status_code == 303
    with console.services.sessions() as db:
        rows = {r.id: r for r in db.scalars(select(LicenceRequest).where(LicenceRequest.id.in_([a.id for a in asked])))}
        assert (rows[asked[0].id].state, rows[asked[0].id].identifier) == ("fulfilled", existing.identifier)
        made = db.get(Licence, rows[asked[1].id].identifier)
        assert rows[asked[1].id].state == "fulfilled" and made.holder_name == "林新证" and made.issuer_code == POLICE
        assert (rows[asked[2].id].state, rows[asked[2].id].decision) == ("refused", "该人未取得驾驶证")
    again = browser.post(f"/admin/licences/requests/{asked[2].id}/refuse", {"reason": "再拒"}, csrf_from="/admin/licences/requests")
    assert again.status_code == 409


def test_an_officer_sees_the_departments_imports_and_downloads_an_error_report(console, library, tmp_path):
    officer = console.person((roles.LICENCE_OFFICER, POLICE), usb=False, name="导入甲")
    browser = console.browser(officer)
    enter(browser)
    source = tmp_path / f"legacy-{uuid.uuid4().hex[:6]}.csv"
    base = 850_000 + secrets.randbelow(10_000)
    fields = ["holder_code", "serial", "valid_from", "licence_number", "name", "sex", "nationality", "address", "birth_date",
              "first_issued_on", "vehicle_class"]  # fmt: skip
    with source.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for n in range(4):
            code = person_code(base + n)
            face = demo.sample_face(DRIVING, holder_code=code, holder_name="林导入", seed=str(n))
            row = {"holder_code": code, "serial": f"IMP{base}{n:02d}", "valid_from": "2020-01-01", **face}
            if n == 3:
                row["vehicle_class"] = "ZZ9"  # rejected: does not fit the schema
            writer.writerow({k: row[k] for k in fields})
    report = tmp_path / "errors.csv"
    result = imports.import_file(library, source, type_code=DRIVING, issuer_code=POLICE, actor=ACTOR, error_report=report)
    assert (result.rows_added, result.rows_rejected) == (3, 1)

    page = browser.get("/admin/licences/imports")
    assert page.status_code == 200
    row = re.search(rf'<tr data-import="{result.run_id}">(.*?)</tr>', page.text, re.S).group(1)
    assert source.name in row and "已完成" in row
    assert [int(n) for n in re.findall(r"<td>(\d+)</td>", row)] == [4, 3, 0, 1, 5]
    download = browser.get(f"/admin/licences/imports/{result.run_id}/errors.csv")
    assert download.status_code == 200 and download.headers["Content-Type"].startswith("text/csv")
    assert download.content == report.read_bytes() and download.text.startswith("line,reason,row")

    # An officer of another department does not see it and cannot download its report.
    outsider = console.browser(console.person((roles.LICENCE_OFFICER, EDUCATION), usb=False, name="导入乙"))
    enter(outsider)
    assert result.run_id not in outsider.get("/admin/licences/imports").text
    assert outsider.get(f"/admin/licences/imports/{result.run_id}/errors.csv").status_code == 403
    with console.services.sessions() as db:
        assert db.get(ImportRun, result.run_id).issuer_code == POLICE


def test_staff_of_another_department_are_refused_the_licence_pages(console, library):
    licence = issuance.issue(
        library,
        issuance.Order(DRIVING, POLICE, (code := person_code(870_000 + secrets.randbelow(10_000))), demo.sample_face(DRIVING, holder_code=code, holder_name="林他部")),
        actor=ACTOR,
        requester=ACTOR,
    )  # fmt: skip
    asked = licence_requests.ask(
        library, type_code=DRIVING, issuer_code=POLICE, holder_type="111", holder_code=person_code(880_000 + secrets.randbelow(10_000)),
        matter="补领", reason="缺证", requested_by="client:test",
    )  # fmt: skip
    clerk = console.browser(console.person((roles.COUNTER_CLERK, DEPT_B), usb=False, name="窗口乙"))
    enter(clerk)
    for path in ("/admin/licences", f"/admin/licences/issue?type={DRIVING}", f"/admin/licences/l/{licence.identifier}",
                 "/admin/licences/requests", f"/admin/licences/requests/{asked.id}", "/admin/licences/imports"):  # fmt: skip
        answer = clerk.get(path)
        assert answer.status_code == 403, path
    for path, data in (
        (f"/admin/licences/l/{licence.identifier}/suspend", {"reason": "越权"}),
        (f"/admin/licences/requests/{asked.id}/refuse", {"reason": "越权"}),
        ("/admin/licences/issue", _form(person_code(890_000))),
    ):
        assert clerk.post(path, data).status_code == 403, path

    # A licence officer of another department: the section opens, this department's rows do not.
    teacher_officer = console.browser(console.person((roles.LICENCE_OFFICER, EDUCATION), usb=False, name="证照丙"))
    enter(teacher_officer)
    assert licence.identifier not in teacher_officer.get("/admin/licences").text
    assert asked.id not in teacher_officer.get("/admin/licences/requests").text
    assert teacher_officer.get(f"/admin/licences/l/{licence.identifier}").status_code == 403
    assert teacher_officer.get(f"/admin/licences/requests/{asked.id}").status_code == 403
    suspend = teacher_officer.post(f"/admin/licences/l/{licence.identifier}/suspend", {"reason": "越权"})
    assert suspend.status_code == 403 and _state(console, licence.identifier) == "valid"
    refuse = teacher_officer.post(f"/admin/licences/requests/{asked.id}/refuse", {"reason": "越权"})
    assert refuse.status_code == 403
    with console.services.sessions() as db:
        assert db.get(LicenceRequest, asked.id).state == "open"
    assert console.audit("admin.refused")
