"""Four eyes, end to end over HTTP: one seal keeper proposes a seal rotation, the same one cannot approve, a seal
keeper of another department cannot either, a second seal keeper of the seal's department approves after a fresh
USB-key login, and only then does the new seal sign (checked with the signing package's own validation report).

Also: an approval replayed after the decision is refused, a proposal without a fresh certificate login is sent to
re-authenticate first, and a lapsed proposal cannot be approved. Every step is in the audit trail.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from admin import proposals, roles
from admin.models import Proposal
from core import db as core_db
from core.db import utc_now
from tests.admin.conftest import DEPT_A, DEPT_B

pytestmark = pytest.mark.slow


def seal_of(console, department: str):
    from sqlalchemy import select

    from signing.models import Seal

    with console.services.sessions() as db:
        return db.scalars(select(Seal).where(Seal.credit_code == department)).one()


def sealed_by(console, seal_name: str) -> dict:
    """Seal a sample PDF in this process with the seal as it now is; the signing package's validation report of it."""
    from signing import report
    from signing.pdf import pades
    from signing.pdf.sample import sample_pdf

    result = pades.seal_pdf(console.services["signing"], sample_pdf(), seal_name=seal_name, reason="测试", actor="test")
    found = report.validate(console.services["ca"], result.pdf)
    assert len(found["signatures"]) == 1
    return found["signatures"][0]


def proposal_id(response) -> str:
    assert response.status_code == 303, response.text[:500]
    return re.match(r"/admin/proposals/([0-9a-f]{32})\?notice=proposed$", response.headers["Location"]).group(1)


def status_of(console, pid: str) -> str:
    with console.services.sessions() as db:
        return db.get(Proposal, pid).status


def test_one_proposes_a_seal_rotation_the_same_one_cannot_approve_a_second_does_and_only_then_the_new_seal_signs(console):
    seal = seal_of(console, DEPT_A)
    old_serial = seal.certificate_serial
    first = console.person((roles.SEAL_KEEPER, DEPT_A), name="印章甲")
    second = console.person((roles.SEAL_KEEPER, DEPT_A), name="印章乙")
    elsewhere = console.person((roles.SEAL_KEEPER, DEPT_B), name="印章丙")
    proposer = console.browser(first)
    assert proposer.sign_in().status_code == 200

    # The seal keeper sees the department's seals only (scoped in the query).
    page = proposer.get("/admin/seals")
    assert page.status_code == 200 and seal.name in page.text and seal_of(console, DEPT_B).name not in page.text

    # Proposing needs a fresh USB-key login: the console sends the browser to re-authenticate first.
    asked = proposer.post("/admin/seals/rotate", {"seal": seal.name, "reason": "密钥到期轮换"}, csrf_from="/admin/seals")
    assert asked.status_code == 303 and asked.headers["Location"].startswith("/admin/reauth?next=")
    back = proposer.follow(asked, usb=True)
    assert back.status_code == 200 and "您已用 USB Key 完成确认" in back.text
    pid = proposal_id(proposer.post("/admin/seals/rotate", {"seal": seal.name, "reason": "密钥到期轮换"}, csrf_from="/admin/seals"))
    assert status_of(console, pid) == proposals.PENDING

    # Proposed, not done: the seal still signs with its old certificate.
    before = sealed_by(console, seal.name)
    assert before["certificate"]["serial"] == format(int(old_serial, 16), "x") or before["certificate"]["serial"] == old_serial.lower()

    # The proposer cannot approve their own proposal (fresh USB-key login and all): 403, recorded, still pending.
    shown = proposer.get(f"/admin/proposals/{pid}")
    assert shown.status_code == 200 and "批准并执行" not in shown.text and "撤回" in shown.text
    own = proposer.post(f"/admin/proposals/{pid}/approve", {"reason": "我自己批"}, csrf_from=f"/admin/proposals/{pid}")
    assert own.status_code == 403 and "必须由另一人批准" in own.text
    assert status_of(console, pid) == proposals.PENDING
    assert [e for e in console.audit("admin.proposal.approval_refused", pid) if '"own_proposal"' in e.details]

    # A seal keeper of another department cannot see or approve it.
    outsider = console.browser(elsewhere)
    assert outsider.sign_in().status_code == 200
    assert outsider.confirm_with_usb_key("/admin").status_code == 200
    assert outsider.get(f"/admin/proposals/{pid}").status_code == 403
    assert pid not in outsider.get("/admin/proposals").text
    assert pid not in [p["id"] for p in outsider.get("/admin/api/proposals").json()["proposals"]]
    refused = outsider.post(f"/admin/proposals/{pid}/approve", {}, csrf_from="/admin")
    assert refused.status_code == 403
    assert status_of(console, pid) == proposals.PENDING

    # A second seal keeper of the department approves, after confirming with their own USB key.
    approver = console.browser(second)
    assert approver.sign_in().status_code == 200
    listed = approver.get("/admin/proposals")
    assert pid in listed.text and "等待批准" in listed.text
    mine = {p["id"]: p for p in approver.get("/admin/api/proposals").json()["proposals"]}
    assert mine[pid]["may_decide"] is True and mine[pid]["status"] == "pending" and mine[pid]["parameters"]["seal"] == seal.name
    theirs = {p["id"]: p for p in proposer.get("/admin/api/proposals").json()["proposals"]}
    assert theirs[pid]["may_decide"] is False  # their own
    asked = approver.post(f"/admin/proposals/{pid}/approve", {"reason": "同意"}, csrf_from=f"/admin/proposals/{pid}")
    assert asked.status_code == 303 and asked.headers["Location"] == f"/admin/reauth?next=%2Fadmin%2Fproposals%2F{pid}"
    assert status_of(console, pid) == proposals.PENDING  # not approved by a session without a fresh certificate login
    assert approver.follow(asked, usb=True).status_code == 200
    done = approver.post(f"/admin/proposals/{pid}/approve", {"reason": "同意"}, csrf_from=f"/admin/proposals/{pid}")
    assert done.status_code == 303 and done.headers["Location"] == f"/admin/proposals/{pid}?notice=approved"
    assert status_of(console, pid) == proposals.DONE
    outcome = approver.get(f"/admin/proposals/{pid}")
    assert "已批准并执行" in outcome.text

    # Only now: the seal signs with a new certificate, and the signing package's validation accepts it.
    rotated = seal_of(console, DEPT_A)
    assert rotated.certificate_serial != old_serial and rotated.key_uri != seal.key_uri
    after = sealed_by(console, seal.name)
    assert after["certificate"]["serial"] != before["certificate"]["serial"]
    assert int(after["certificate"]["serial"], 16) == int(rotated.certificate_serial, 16)
    assert after["indication"] == "TOTAL_PASSED", after

    # The approval cannot be used again.
    replay = approver.post(f"/admin/proposals/{pid}/approve", {"reason": "同意"}, csrf_from=f"/admin/proposals/{pid}")
    assert replay.status_code == 409 and "已经处理过了" in replay.text
    assert seal_of(console, DEPT_A).certificate_serial == rotated.certificate_serial

    # The audit trail tells the story.
    made = console.audit("admin.proposal.made", pid)
    approved = console.audit("admin.proposal.approved", pid)
    assert made[0].actor == f"account:{first.account_id}" and approved[0].actor == f"account:{second.account_id}"
    assert json.loads(console.audit("admin.proposal.done", pid)[0].details)["outcome"]["certificate"] == rotated.certificate_serial
    assert [e for e in console.audit("signing.seal.rotated", seal.name) if e.actor == f"account:{second.account_id}"]
    assert console.audit("admin.proposal.approval_refused", pid)


def test_a_lapsed_proposal_cannot_be_approved_and_a_refused_one_is_final(console):
    seal = seal_of(console, DEPT_B)
    first = console.person((roles.SEAL_KEEPER, DEPT_B))
    second = console.person((roles.SEAL_KEEPER, DEPT_B))
    fresh_first = proposals.Signer(roles.Staff(first.account_id, "", frozenset({(roles.SEAL_KEEPER, DEPT_B)})), 3, utc_now())
    fresh_second = proposals.Signer(roles.Staff(second.account_id, "", frozenset({(roles.SEAL_KEEPER, DEPT_B)})), 3, utc_now())
    ctx = console.admin

    lapsing = proposals.propose(ctx, fresh_first, "seal.rotate", {"seal": seal.name}, "测试过期")
    with core_db.transaction(ctx.sessions) as db:
        db.get(Proposal, lapsing.id).expires_at = utc_now() - timedelta(seconds=1)
    with pytest.raises(proposals.ProposalRefusal) as lapsed:
        proposals.approve(ctx, fresh_second, lapsing.id)
    assert lapsed.value.code == "expired"

    refused = proposals.propose(ctx, fresh_first, "seal.rotate", {"seal": seal.name}, "测试驳回")
    with pytest.raises(proposals.ProposalRefusal) as short:
        proposals.refuse(ctx, fresh_second, refused.id, "")
    assert short.value.code == "reason"
    assert proposals.refuse(ctx, fresh_second, refused.id, "理由不充分").status == proposals.REFUSED
    with pytest.raises(proposals.ProposalRefusal) as decided:
        proposals.approve(ctx, fresh_second, refused.id)
    assert decided.value.code == "decided"

    # A login that is level 3 but too old counts as not fresh.
    stale = proposals.Signer(fresh_second.person, 3, utc_now() - timedelta(minutes=ctx.settings.admin_reauth_minutes + 1))
    waiting = proposals.propose(ctx, fresh_first, "seal.rotate", {"seal": seal.name}, "测试重新认证")
    with pytest.raises(proposals.NotFresh):
        proposals.approve(ctx, stale, waiting.id)
    level_two = proposals.Signer(fresh_second.person, 2, utc_now())
    with pytest.raises(proposals.NotFresh):
        proposals.approve(ctx, level_two, waiting.id)
    assert seal_of(console, DEPT_B).certificate_serial == seal.certificate_serial
    assert status_of(console, waiting.id) == proposals.PENDING


def test_two_approvals_at_once_carry_the_operation_out_once(console):
    import threading

    seal = seal_of(console, DEPT_B)
    keepers = [console.person((roles.SEAL_KEEPER, DEPT_B), usb=False) for _ in range(3)]
    signers = [proposals.Signer(roles.Staff(k.account_id, "", frozenset({(roles.SEAL_KEEPER, DEPT_B)})), 3, utc_now()) for k in keepers]
    pending = proposals.propose(console.admin, signers[0], "seal.rotate", {"seal": seal.name}, "并发批准测试")
    rotations_before = len(console.audit("signing.seal.rotated", seal.name))
    outcomes: list = []
    start = threading.Barrier(2)

    def approve(signer):
        start.wait()
        try:
            outcomes.append(proposals.approve(console.admin, signer, pending.id).status)
        except proposals.ProposalRefusal as refusal:
            outcomes.append(refusal.code)

    threads = [threading.Thread(target=approve, args=(signer,)) for signer in signers[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == sorted([proposals.DONE, "decided"])
    assert len(console.audit("signing.seal.rotated", seal.name)) == rotations_before + 1
    assert len(console.audit("admin.proposal.approved", pending.id)) == 1
