"""Roles on the server: each role is refused the pages of the others (403, recorded), department administrators act in
their own departments only, administrator roles are given through four eyes, and ``hallmark admin grant|revoke|roles``."""

from __future__ import annotations

import json
import re

import pytest

from admin import proposals, roles
from tests.admin.conftest import DEPT_A, DEPT_B
from tests.conftest import run_hallmark

pytestmark = pytest.mark.slow

PAGES = {
    "/admin": set(roles.ROLES),
    "/admin/proposals": {roles.SEAL_KEEPER, roles.SYSTEM_ADMIN, roles.LICENCE_OFFICER, roles.CA_OFFICER},
    "/admin/licences": {roles.LICENCE_OFFICER},
    "/admin/seals": {roles.SEAL_KEEPER},
    "/admin/pki": {roles.CA_OFFICER},
    "/admin/counter": {roles.COUNTER_CLERK},
    "/admin/clients": {roles.SYSTEM_ADMIN},
    "/admin/matters": {roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN},
    "/admin/roles": {roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN},
    "/admin/audit": {roles.AUDITOR, roles.SYSTEM_ADMIN},
    "/admin/supervision": {roles.AUDITOR, roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN},
}
API_ALLOWED = {roles.SEAL_KEEPER, roles.SYSTEM_ADMIN, roles.LICENCE_OFFICER, roles.CA_OFFICER}
# A form each role is not allowed to send, and where it goes.
POSTS = {
    "/admin/roles/grant": ({"account": "nobody", "role": roles.AUDITOR}, {roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN}),
    "/admin/seals/rotate": ({"seal": "x", "reason": "试试看"}, {roles.SEAL_KEEPER}),
    "/admin/roles/revoke": ({"grant": "1"}, {roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN}),
    "/admin/pki/issue": ({"profile": "server-tls", "name": "x"}, {roles.CA_OFFICER}),
    "/admin/counter/search": ({"resident_id": "x", "reason": "试试看"}, {roles.COUNTER_CLERK}),
}


def grant_for(role: str) -> tuple[str, str | None]:
    return (role, DEPT_A if role in roles.DEPARTMENT_ROLES else None)


@pytest.mark.parametrize("role", roles.ROLES)
def test_each_role_is_refused_the_pages_of_the_others(console, role):
    person = console.person(grant_for(role), usb=False)
    browser = console.browser(person)
    home = browser.sign_in()
    assert home.status_code == 200
    for path, allowed in PAGES.items():
        answer = browser.get(path)
        if role in allowed:
            assert answer.status_code == 200, (role, path)
            assert f'href="{path}"' in home.text, f"{role} should find {path} in the navigation"
        else:
            assert answer.status_code == 403, (role, path)
            assert "无权操作" in answer.text and "此次访问已被记录" in answer.text
            assert f'href="{path}"' not in home.text, f"{role} should not be shown {path}"
    for path, (data, allowed) in POSTS.items():
        if role not in allowed:
            assert browser.post(path, data).status_code == 403, (role, path)
    api = browser.get("/admin/api/proposals")
    if role in API_ALLOWED:
        assert api.status_code == 200 and isinstance(api.json()["proposals"], list)
    else:
        assert api.status_code == 403 and api.headers["Content-Type"] == "application/problem+json"
        assert api.json()["code"] == "role_required"
    refused = [e for e in console.audit("admin.refused") if e.actor == f"account:{person.account_id}"]
    expected = sum(role not in allowed for allowed in PAGES.values()) + sum(role not in a for _, a in POSTS.values())
    assert len(refused) == expected + (role not in API_ALLOWED)


def test_the_api_wants_a_console_session(console):
    import requests

    answer = requests.get(console.base + "/admin/api/proposals", timeout=10)
    assert answer.status_code == 401 and answer.json()["code"] == "not_signed_in"


def test_a_department_administrator_gives_working_roles_in_their_own_department_only(console):
    head = console.person((roles.DEPARTMENT_ADMIN, DEPT_A), usb=False, name="部门管理员甲")
    newcomer = console.person(usb=False, name="新同事")
    browser = console.browser(head)
    assert browser.sign_in().status_code == 200
    page = browser.get("/admin/roles")
    assert page.status_code == 200 and "部门管理员甲" in page.text
    # Grants of other departments are not listed (scoped in the query).
    other_keeper = console.person((roles.SEAL_KEEPER, DEPT_B), usb=False, name="别的部门的人")
    assert "别的部门的人" not in browser.get("/admin/roles").text

    given = browser.post(
        "/admin/roles/grant", {"account": newcomer.username, "role": roles.LICENCE_OFFICER, "department": DEPT_A}, csrf_from="/admin/roles"
    )
    assert given.status_code == 303 and given.headers["Location"] == "/admin/roles?notice=granted"
    with console.services.sessions() as db:
        assert roles.staff(db, newcomer.account_id).grants == {(roles.LICENCE_OFFICER, DEPT_A)}
    elsewhere = browser.post(
        "/admin/roles/grant", {"account": newcomer.username, "role": roles.LICENCE_OFFICER, "department": DEPT_B}, csrf_from="/admin/roles"
    )
    assert elsewhere.status_code == 403 and "您不能在该部门授予此角色" in elsewhere.text
    upward = browser.post(
        "/admin/roles/grant", {"account": newcomer.username, "role": roles.DEPARTMENT_ADMIN, "department": DEPT_A}, csrf_from="/admin/roles"
    )
    assert upward.status_code == 403
    province = browser.post("/admin/roles/grant", {"account": newcomer.username, "role": roles.CA_OFFICER}, csrf_from="/admin/roles")
    assert province.status_code == 403
    with console.services.sessions() as db:
        grant_ids = {g.role: g.id for g in roles.all_grants(db) if g.account_id in (newcomer.account_id, other_keeper.account_id)}
        outside = next(g.id for g in roles.all_grants(db) if g.account_id == other_keeper.account_id)
    assert browser.post("/admin/roles/revoke", {"grant": str(outside)}, csrf_from="/admin/roles").status_code == 403
    taken = browser.post("/admin/roles/revoke", {"grant": str(grant_ids[roles.LICENCE_OFFICER])}, csrf_from="/admin/roles")
    assert taken.status_code == 303
    with console.services.sessions() as db:
        assert roles.staff(db, newcomer.account_id).grants == frozenset()
        assert roles.staff(db, other_keeper.account_id).grants == {(roles.SEAL_KEEPER, DEPT_B)}
    assert [e for e in console.audit("admin.role.grant_refused") if e.actor == f"account:{head.account_id}"]


def test_an_administrator_role_is_given_only_when_a_second_system_administrator_approves(console):
    first = console.person((roles.SYSTEM_ADMIN, None), name="系统管理员甲")
    second = console.person((roles.SYSTEM_ADMIN, None), name="系统管理员乙")
    candidate = console.person(usb=False, name="候选人")
    proposer = console.browser(first)
    assert proposer.sign_in().status_code == 200
    assert proposer.confirm_with_usb_key("/admin/roles").status_code == 200
    asked = proposer.post(
        "/admin/roles/grant",
        {"account": candidate.username, "role": roles.SYSTEM_ADMIN, "reason": "新增值班管理员"},
        csrf_from="/admin/roles",
    )
    assert asked.status_code == 303, asked.text[:300]
    pid = re.match(r"/admin/proposals/([0-9a-f]{32})\?notice=proposed$", asked.headers["Location"]).group(1)
    with console.services.sessions() as db:
        assert roles.staff(db, candidate.account_id).grants == frozenset()  # not yet
    assert proposer.post(f"/admin/proposals/{pid}/approve", {}, csrf_from="/admin").status_code == 403

    approver = console.browser(second)
    assert approver.sign_in().status_code == 200
    assert approver.confirm_with_usb_key(f"/admin/proposals/{pid}").status_code == 200
    page = approver.get(f"/admin/proposals/{pid}")
    assert "授予候选人角色：系统管理员。" in page.text or "授予 候选人 角色：系统管理员。" in page.text
    done = approver.post(f"/admin/proposals/{pid}/approve", {}, csrf_from=f"/admin/proposals/{pid}")
    assert done.headers["Location"] == f"/admin/proposals/{pid}?notice=approved"
    with console.services.sessions() as db:
        assert roles.staff(db, candidate.account_id).grants == {(roles.SYSTEM_ADMIN, None)}
    granted = console.audit("admin.role.granted", candidate.account_id)
    assert granted and granted[-1].actor == f"account:{second.account_id}"


def test_the_cli_grants_lists_and_revokes(console):
    person = console.person(usb=False)
    grant = run_hallmark(console.instance, "admin", "grant", person.username, "seal_keeper", "--department", DEPT_A.lower())
    assert grant.returncode == 0, grant.stderr
    assert f"now holds seal_keeper in {DEPT_A}" in grant.stdout
    again = run_hallmark(console.instance, "admin", "grant", person.username, "seal_keeper", "--department", DEPT_A)
    assert again.returncode == 0 and "already held" in again.stdout
    listed = json.loads(run_hallmark(console.instance, "admin", "roles", "--json").stdout)["grants"]
    assert {"account": person.username, "role": "seal_keeper", "department": DEPT_A} in [
        {k: g[k] for k in ("account", "role", "department")} for g in listed
    ]
    no_department = run_hallmark(console.instance, "admin", "grant", person.username, "licence_officer")
    assert no_department.returncode == 1 and "unified social credit code" in no_department.stderr
    bad_department = run_hallmark(console.instance, "admin", "grant", person.username, "licence_officer", "--department", "12345")
    assert bad_department.returncode == 1 and "not a valid unified social credit code" in bad_department.stderr
    province = run_hallmark(console.instance, "admin", "grant", person.username, "auditor", "--department", DEPT_A)
    assert province.returncode == 1 and "province-wide" in province.stderr
    assert run_hallmark(console.instance, "admin", "grant", person.username, "janitor").returncode == 2
    assert run_hallmark(console.instance, "admin", "grant", "no-such-user", "auditor").returncode == 1
    revoked = run_hallmark(console.instance, "admin", "revoke", person.username, "seal_keeper", "--department", DEPT_A)
    assert revoked.returncode == 0 and "no longer holds" in revoked.stdout
    twice = run_hallmark(console.instance, "admin", "revoke", person.username, "seal_keeper", "--department", DEPT_A)
    assert twice.returncode == 1 and "does not hold" in twice.stderr
    actions = [
        e.action for e in console.audit("admin.role.granted", person.account_id) + console.audit("admin.role.revoked", person.account_id)
    ]
    assert actions == ["admin.role.granted", "admin.role.revoked"]


def test_a_proposal_for_an_unknown_seal_or_by_the_wrong_role_is_refused(console):
    from core.db import utc_now

    keeper = console.person((roles.SEAL_KEEPER, DEPT_A), usb=False)
    signer = proposals.Signer(roles.Staff(keeper.account_id, "", frozenset({(roles.SEAL_KEEPER, DEPT_A)})), 3, utc_now())
    with pytest.raises(proposals.ProposalRefusal) as unknown:
        proposals.propose(console.admin, signer, "seal.rotate", {"seal": "没有这个章"}, "测试理由")
    assert unknown.value.code == "no_such_seal"
    with pytest.raises(proposals.ProposalRefusal) as kind:
        proposals.propose(console.admin, signer, "ca.revoke-everything", {}, "测试理由")
    assert kind.value.code == "unknown_operation"
    clerk = proposals.Signer(roles.Staff(keeper.account_id, "", frozenset({(roles.COUNTER_CLERK, DEPT_A)})), 3, utc_now())
    from tests.admin.test_four_eyes import seal_of

    with pytest.raises(proposals.ProposalRefusal) as wrong:
        proposals.propose(console.admin, clerk, "seal.rotate", {"seal": seal_of(console, DEPT_A).name}, "测试理由")
    assert wrong.value.code == "not_your_department"
