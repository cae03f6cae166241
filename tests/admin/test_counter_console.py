"""The counter desk over HTTP, signed in through the real IdP, and its service rules.

A counter clerk finds a person by resident ID with a reason (the search is audited with
the ID masked), verifies them in person with a photo (sealed at rest, audited by its
SHA-256, recorded through the IdP's own counter verification), unlocks the account and
resets the password (every IdP session of the person ends, the owner is texted). Refused:
no reason, a forged CSRF token, an upload that is not a JPEG/PNG, a reset before the
in-person check, a clerk of another department, a staff member without the role.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from sqlalchemy import select

from admin import counter, roles
from admin.models import CounterVisit
from core import db as core_db
from core.models import AuditEvent
from idp.models import Account, SSOSession
from licenses import privacy
from tests.admin.conftest import CSRF, DEPT_A, DEPT_B
from tests.admin.test_licences_console import enter

pytestmark = pytest.mark.slow

# A tiny real PNG (1×1, grey) and the start of a JPEG: what the server checks is the signature.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b550000000a4944415478da63680000008200816b8b6a8a0000000049454e44ae426082"
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200) + b"\xff\xd9"
NEW_PASSWORD = "Banyan-root 2027 counter"


def clerk_of(console, department: str):
    """A counter clerk of ``department`` in the console who is also the IdP's counter clerk (``realname.verify_at_counter``)."""
    person = console.person((roles.COUNTER_CLERK, department), usb=False, name="柜员")
    with core_db.transaction(console.services.sessions) as db:
        account = db.get(Account, person.account_id)
        account.roles = " ".join(sorted(set((account.roles or "").split()) | {"clerk"}))
    return person


def staff(console, person):
    with console.services.sessions() as db:
        return roles.staff(db, person.account_id, person.name)


@pytest.fixture(scope="module")
def clerk(console):
    return clerk_of(console, DEPT_A)


def details(event: AuditEvent) -> dict:
    return json.loads(event.details) if isinstance(event.details, str) else event.details


def events(console, action: str, target: str) -> list[AuditEvent]:
    with console.services.sessions() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action, AuditEvent.target == target)))


# -- the service ----------------------------------------------------------------------------------------------------


def test_search_needs_a_reason_and_is_audited_masked(console, clerk):
    ctx, me = console.admin, staff(console, clerk)
    resident = console.person(usb=False, name="李四")
    with pytest.raises(counter.CounterRefusal) as refused:
        counter.search(ctx, me, resident_id=resident.resident_id, reason="  ", department=DEPT_A)
    assert refused.value.code == "reason_missing"
    assert events(console, "admin.counter.search", resident.account_id) == []
    found = counter.search(ctx, me, resident_id=resident.resident_id.lower(), reason="办理社保卡", department=DEPT_A)
    assert found.account_id == resident.account_id and found.legal_name == "李四"
    assert found.resident_id_masked != resident.resident_id and found.resident_id_masked.endswith(resident.resident_id[-4:])
    (event,) = events(console, "admin.counter.search", resident.account_id)
    assert details(event)["reason"] == "办理社保卡" and details(event)["found"] is True
    assert resident.resident_id not in str(details(event)) and event.actor == f"account:{clerk.account_id}"


def test_photo_is_sealed_at_rest_and_audited_by_digest(console, clerk):
    ctx, me = console.admin, staff(console, clerk)
    resident = console.person(usb=False, name="王五")
    visit = counter.search(ctx, me, resident_id=resident.resident_id, reason="现场核验", department=DEPT_A)
    with pytest.raises(counter.CounterRefusal) as refused:
        counter.reset_password(ctx, me, visit.visit_id, new_password=NEW_PASSWORD)
    assert refused.value.code == "not_verified"
    for bad, code in ((b"GIF89a" + bytes(50), "photo_type"), (b"%PDF-1.7\n", "photo_type"), (b"", "photo_missing")):
        with pytest.raises(counter.CounterRefusal) as refused:
            counter.verify(
                ctx,
                me,
                visit.visit_id,
                name="王五",
                resident_id=resident.resident_id,
                documents=["resident-card"],
                location="测试中心",
                photo=bad,
            )
        assert refused.value.code == code
    with pytest.raises(counter.CounterRefusal) as refused:
        counter.verify(
            ctx,
            me,
            visit.visit_id,
            name="王五",
            resident_id=resident.resident_id,
            documents=["resident-card"],
            location="x",
            photo=JPEG + bytes(counter.MAX_PHOTO),
        )
    assert refused.value.status == 413
    done = counter.verify(
        ctx,
        me,
        visit.visit_id,
        name="王五",
        resident_id=resident.resident_id,
        documents=["resident-card", "household-register"],
        location="测试中心",
        photo=PNG,
    )
    assert done.verified_at is not None and done.documents == ("resident-card", "household-register")
    with console.services.sessions() as db:
        row = db.get(CounterVisit, visit.visit_id)
        assert PNG not in row.photo_sealed and row.photo_sha256 == hashlib.sha256(PNG).hexdigest()
        assert (
            privacy.open_value(
                console.services["licenses"], db, row.photo_key_id, row.photo_sealed, b"admin-counter-photo\x00" + row.id.encode()
            )
            == PNG
        )
    (event,) = events(console, "admin.counter.verified", resident.account_id)
    assert details(event)["photo_sha256"] == hashlib.sha256(PNG).hexdigest()
    assert details(event)["originals_seen"] == ["resident-card", "household-register"]
    # The IdP's own counter verification recorded the check (its proofing names the clerk and the centre).
    (proofed,) = events(console, "idp.proofing.confirmed", resident.account_id)
    assert proofed.actor == f"account:{clerk.account_id}" and details(proofed)["via"] == "console"


def test_a_clerk_of_another_department_is_refused_the_visit(console, clerk):
    ctx = console.admin
    resident = console.person(usb=False)
    visit = counter.search(ctx, staff(console, clerk), resident_id=resident.resident_id, reason="咨询", department=DEPT_A)
    other = staff(console, clerk_of(console, DEPT_B))
    for attempt in (
        lambda: counter.person(ctx, other, visit.visit_id),
        lambda: counter.unlock(ctx, other, visit.visit_id),
        lambda: counter.reset_password(ctx, other, visit.visit_id, new_password=NEW_PASSWORD),
    ):
        with pytest.raises(counter.OutsideDepartment):
            attempt()
    assert len([e for e in events(console, "admin.refused", resident.account_id) if details(e).get("reason") == "outside_department"]) == 3
    with pytest.raises(counter.OutsideDepartment):
        counter.search(ctx, other, resident_id=resident.resident_id, reason="咨询", department=DEPT_A)


# -- the pages ------------------------------------------------------------------------------------------------------


def _verify_form(page_text: str) -> str:
    return CSRF.search(page_text).group(1)


def test_the_clerk_finds_verifies_unlocks_and_resets_over_http(console, clerk):
    resident = console.person(usb=False, name="赵六")
    # The resident is signed in at the IdP (a live session that the reset must end).
    console.browser(resident).sign_in()
    with console.services.sessions() as db:
        assert db.scalars(select(SSOSession).where(SSOSession.account_id == resident.account_id, SSOSession.ended_at.is_(None))).first()
    browser = console.browser(clerk)
    home = enter(browser)
    assert 'href="/admin/counter"' in home.text
    desk = browser.get("/admin/counter")
    assert desk.status_code == 200 and 'name="reason"' in desk.text
    # No reason: refused, nothing audited.
    refused = browser.post("/admin/counter/search", {"resident_id": resident.resident_id, "reason": ""}, csrf_from="/admin/counter")
    assert refused.status_code == 400 and 'id="error"' in refused.text
    assert events(console, "admin.counter.search", resident.account_id) == []
    # A forged CSRF token.
    forged = browser.http.post(
        browser.url("/admin/counter/search"),
        data={"csrf_token": "forged", "resident_id": resident.resident_id, "reason": "x"},
        allow_redirects=False,
    )
    assert forged.status_code in (400, 403) and events(console, "admin.counter.search", resident.account_id) == []
    found = browser.post("/admin/counter/search", {"resident_id": resident.resident_id, "reason": "忘记密码"}, csrf_from="/admin/counter")
    assert found.status_code == 303
    location = found.headers["Location"]
    page = browser.get(location)
    assert page.status_code == 200 and "赵六" in page.text and resident.resident_id not in page.text
    assert "/admin/counter/static/counter.js" in page.text
    visit_id = location.rsplit("/", 1)[1]
    token = CSRF.search(page.text).group(1)
    base = {
        "csrf_token": token,
        "name": "赵六",
        "resident_id": resident.resident_id,
        "location": "测试市民中心",
        "documents": "resident-card",
    }
    not_image = browser.http.post(
        browser.url(f"{location}/verify"),
        data=base,
        files={"photo": ("photo.jpg", b"<html>not an image</html>", "image/jpeg")},
        allow_redirects=False,
    )
    assert not_image.status_code == 415 and "JPEG" in not_image.text
    early = browser.post(f"{location}/password", {"password": NEW_PASSWORD}, csrf_from=location)
    assert early.status_code == 409
    verified = browser.http.post(
        browser.url(f"{location}/verify"), data=base, files={"photo": ("photo.png", PNG, "image/png")}, allow_redirects=False
    )
    assert verified.status_code == 303, verified.text[:500]
    photo = browser.get(f"{location}/photo")
    assert photo.status_code == 200 and photo.content == PNG and photo.headers["Content-Type"] == "image/png"
    unlocked = browser.post(f"{location}/unlock", {}, csrf_from=location)
    assert unlocked.status_code == 303 and events(console, "admin.counter.unlocked", resident.account_id)
    reset = browser.post(f"{location}/password", {"password": NEW_PASSWORD}, csrf_from=location)
    assert reset.status_code == 303 and reset.headers["Location"].endswith("notice=reset")
    with console.services.sessions() as db:
        assert (
            db.scalars(select(SSOSession).where(SSOSession.account_id == resident.account_id, SSOSession.ended_at.is_(None))).first()
            is None
        )
        row = db.get(CounterVisit, visit_id)
        assert row.clerk_id == clerk.account_id
    (event,) = events(console, "admin.counter.password_reset", resident.account_id)
    assert details(event)["originals_seen"] == ["resident-card"] and details(event)["photo_sha256"] == hashlib.sha256(PNG).hexdigest()
    # The resident signs in with the new password only.
    from idp.people import accounts

    assert accounts.authenticate(console.services["idp"], resident.username, NEW_PASSWORD).id == resident.account_id


def test_other_roles_and_other_departments_are_refused_the_desk(console, clerk):
    resident = console.person(usb=False)
    browser = console.browser(clerk)
    enter(browser)
    found = browser.post("/admin/counter/search", {"resident_id": resident.resident_id, "reason": "复核"}, csrf_from="/admin/counter")
    location = found.headers["Location"]
    officer = console.browser(console.person((roles.LICENCE_OFFICER, DEPT_A), usb=False))
    enter(officer)
    for path in ("/admin/counter", location):
        assert officer.get(path).status_code == 403
    assert officer.post("/admin/counter/search", {"resident_id": resident.resident_id, "reason": "x"}).status_code == 403
    stranger = console.browser(clerk_of(console, DEPT_B))
    enter(stranger)
    refused = stranger.get(location)
    assert refused.status_code == 403
    assert stranger.post(f"{location}/unlock", {}, csrf_from="/admin/counter").status_code == 403
    assert re.search(r"admin\.refused", "admin.refused") and len(events(console, "admin.refused", resident.account_id)) >= 2
