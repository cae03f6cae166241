"""The seal keeper's section over HTTP: a new seal only through four eyes (and then it seals documents that validate),
a rival name taken meanwhile refused at approval, a client's use of the seals granted and taken back (enforced where
seals are used), retirement (it signs no more, its certificate revoked), and another department's seal refused."""

from __future__ import annotations

import re
import uuid

import pytest

from admin import critical, proposals, roles
from admin.models import Proposal
from ca.models import Certificate
from core.db import utc_now
from core.problems import Problem
from tests.admin.conftest import department_code

pytestmark = pytest.mark.slow
DEPT_C, DEPT_D = department_code(3), department_code(4)


def fresh(person, department):
    return critical.Signer(roles.Staff(person.account_id, "", frozenset({(roles.SEAL_KEEPER, department)})), 3, utc_now())


def seal_row(console, name):
    from signing.models import Seal

    with console.services.sessions() as db:
        return db.get(Seal, name)


def seal_and_validate(console, name) -> dict:
    from signing import report
    from signing.pdf import pades
    from signing.pdf.sample import sample_pdf

    result = pades.seal_pdf(console.services["signing"], sample_pdf(), seal_name=name, reason="测试", actor="test")
    return report.validate(console.services["ca"], result.pdf)


def test_a_new_seal_only_through_four_eyes_then_it_seals_and_validates(console):
    first = console.person((roles.SEAL_KEEPER, DEPT_C), name="印章丁")
    second = console.person((roles.SEAL_KEEPER, DEPT_C), name="印章戊")
    name = f"测试市税务局印章-{uuid.uuid4().hex[:6]}"
    proposer = console.browser(first)
    assert proposer.sign_in().status_code == 200
    assert proposer.confirm_with_usb_key("/admin/seals").status_code == 200
    form = {"credit_code": DEPT_C, "department": "测试市税务局", "name": name, "reason": "新设业务专用章"}

    # Bad input: a 4xx page, nothing proposed.
    bad = proposer.post("/admin/seals/propose", {**form, "name": "a/b"}, csrf_from="/admin/seals")
    assert bad.status_code == 400 and "印章名称为 1 至 100 个字符" in bad.text
    # Another department: refused, recorded.
    outside = proposer.post("/admin/seals/propose", {**form, "credit_code": DEPT_D}, csrf_from="/admin/seals")
    assert outside.status_code == 403
    # Without the form's token: refused.
    assert proposer.http.post(proposer.url("/admin/seals/propose"), data=form, allow_redirects=False).status_code in (400, 403)

    made = proposer.post("/admin/seals/propose", form, csrf_from="/admin/seals")
    assert made.status_code == 303, made.text[:500]
    pid = re.match(r"/admin/proposals/([0-9a-f]{32})\?notice=proposed$", made.headers["Location"]).group(1)
    assert seal_row(console, name) is None  # nothing made yet
    assert name in proposer.get("/admin/seals").text
    again = proposer.post("/admin/seals/propose", form, csrf_from="/admin/seals")
    assert again.status_code == 409  # the same name already proposed

    own = proposer.post(f"/admin/proposals/{pid}/approve", {}, csrf_from=f"/admin/proposals/{pid}")
    assert own.status_code == 403 and seal_row(console, name) is None

    approver = console.browser(second)
    assert approver.sign_in().status_code == 200
    assert approver.confirm_with_usb_key(f"/admin/proposals/{pid}").status_code == 200
    done = approver.post(f"/admin/proposals/{pid}/approve", {"reason": "同意"}, csrf_from=f"/admin/proposals/{pid}")
    assert done.status_code == 303 and done.headers["Location"].endswith("notice=approved"), done.text[:500]
    created = seal_row(console, name)
    assert created is not None and created.credit_code == DEPT_C and created.created_by == f"account:{second.account_id}"
    replay = approver.post(f"/admin/proposals/{pid}/approve", {}, csrf_from=f"/admin/proposals/{pid}")
    assert replay.status_code == 409

    found = seal_and_validate(console, name)
    assert found["indication"] == "TOTAL_PASSED", found
    assert int(found["signatures"][0]["certificate"]["serial"], 16) == int(created.certificate_serial, 16)
    assert console.audit("signing.seal.added", name)


def test_a_name_taken_between_proposal_and_approval_is_refused_cleanly(console):
    from signing import seals

    first = console.person((roles.SEAL_KEEPER, DEPT_C), usb=False)
    second = console.person((roles.SEAL_KEEPER, DEPT_C), usb=False)
    name = f"抢注印章-{uuid.uuid4().hex[:6]}"
    row = proposals.propose(
        console.admin, fresh(first, DEPT_C), "seal.create", {"credit_code": DEPT_C, "department": "测试市税务局", "name": name}, "测试抢注"
    )
    seals.add(console.services["ca"], department="测试市税务局", credit_code=DEPT_C, name=name, actor="test")
    with pytest.raises(proposals.ProposalRefusal) as refused:
        proposals.approve(console.admin, fresh(second, DEPT_C), row.id)
    assert refused.value.code == "seal_exists"
    with console.services.sessions() as db:
        assert db.get(Proposal, row.id).status == proposals.PENDING
    assert proposals.refuse(console.admin, fresh(second, DEPT_C), row.id, "名称已被占用").status == proposals.REFUSED


def test_grant_revoke_and_retire_are_enforced_where_seals_are_used(console):
    from idp.oidc import clients
    from signing import seals

    keeper = console.person((roles.SEAL_KEEPER, DEPT_D), name="印章己")
    other = console.person((roles.SEAL_KEEPER, DEPT_C), usb=False, name="印章庚")
    name = f"测试市人社局印章-{uuid.uuid4().hex[:6]}"
    seals.add(console.services["ca"], department="测试市人社局", credit_code=DEPT_D, name=name, actor="test")
    client_id = f"seal-client-{uuid.uuid4().hex[:6]}"
    with console.services.sessions() as db, db.begin():
        clients.add(console.services["idp"], db, name="人社审批系统", client_type="confidential", client_id=client_id, grant_types=["client_credentials"],
                    scopes=["sign:seal"], redirect_uris=[], actor="test")  # fmt: skip
    browser = console.browser(keeper)
    assert browser.sign_in().status_code == 200

    with pytest.raises(Problem) as before:
        seals.choose_for_client(console.services["ca"], client_id, name)
    assert before.value.status == 403
    granted = browser.post("/admin/seals/grants", {"credit_code": DEPT_D, "client": client_id}, csrf_from="/admin/seals")
    assert granted.status_code == 303 and granted.headers["Location"].endswith("seal-granted")
    assert seals.choose_for_client(console.services["ca"], client_id, name) == name
    assert browser.post("/admin/seals/grants", {"credit_code": DEPT_D, "client": "no-such"}, csrf_from="/admin/seals").status_code == 404
    # Another department's keeper can neither grant nor take back here.
    outsider = console.browser(other)
    assert outsider.sign_in().status_code == 200
    assert name not in outsider.get("/admin/seals").text
    taken = outsider.post("/admin/seals/grants/revoke", {"credit_code": DEPT_D, "client": client_id}, csrf_from="/admin/seals")
    assert taken.status_code == 403
    assert outsider.get("/admin/seals/retire?seal=" + name).status_code == 403
    assert (
        outsider.post("/admin/seals/retire", {"seal": name, "reason": "越权停用", "confirm": "yes"}, csrf_from="/admin/seals").status_code
        == 403
    )
    assert [e for e in console.audit("admin.seal.refused") if '"not_your_department"' in e.details]

    revoked = browser.post("/admin/seals/grants/revoke", {"credit_code": DEPT_D, "client": client_id}, csrf_from="/admin/seals")
    assert revoked.status_code == 303
    with pytest.raises(Problem) as after:
        seals.choose_for_client(console.services["ca"], client_id, name)
    assert after.value.status == 403

    # Retire: a reason and the confirmation are needed, then a fresh USB-key login; then it signs no more.
    page = browser.get("/admin/seals/retire?seal=" + name)
    assert page.status_code == 200 and "停用的后果" in page.text
    unconfirmed = browser.post("/admin/seals/retire", {"seal": name, "reason": "部门撤并"}, csrf_from="/admin/seals")
    assert unconfirmed.status_code == 400 and seal_row(console, name).status == "active"
    asked = browser.post("/admin/seals/retire", {"seal": name, "reason": "部门撤并", "confirm": "yes"}, csrf_from="/admin/seals")
    assert asked.status_code == 303 and asked.headers["Location"].startswith("/admin/reauth?next=")
    assert seal_row(console, name).status == "active"
    assert browser.follow(asked, usb=True).status_code == 200
    done = browser.post("/admin/seals/retire", {"seal": name, "reason": "部门撤并", "confirm": "yes"}, csrf_from="/admin/seals")
    assert done.status_code == 303 and done.headers["Location"].endswith("seal-retired"), done.text[:500]
    row = seal_row(console, name)
    assert row.status == "retired"
    with console.services.sessions() as db:
        certificate = db.get(Certificate, row.certificate_serial)
        assert certificate.status == "revoked" and certificate.revocation_reason == "cessationOfOperation"
    with pytest.raises(Problem) as retired:
        seal_and_validate(console, name)
    assert retired.value.status == 409
    again = browser.post("/admin/seals/retire", {"seal": name, "reason": "部门撤并", "confirm": "yes"}, csrf_from="/admin/seals")
    assert again.status_code == 409
