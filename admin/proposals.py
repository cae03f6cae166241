"""Four eyes: a critical operation is proposed by one person and takes effect only when a second one approves.

A proposal records the kind of operation, its parameters (JSON), the department
it concerns, who proposed it, why, and when it lapses (``admin_proposal_hours``).
The operation itself is described by an :class:`Operation` (``admin.operations``):
which roles may propose and approve it, how its parameters are checked, and the
service function that carries it out.

The rules, all enforced here (views only call these functions):

* proposer and approver must each hold one of the operation's roles for the
  proposal's department, and both must have logged in with a USB key (level 3)
  within ``admin_reauth_minutes`` (the caller passes the session's level and time);
* the proposer cannot approve (or refuse) their own proposal; they may withdraw it;
* an operation may check again, at approval, that what was proposed can still be
  done (``Operation.recheck``: a seal name taken meanwhile); if not, the approval is
  refused and the proposal stays pending, to be refused or to lapse;
* a proposal is decided once: the approval claims it with a conditional update
  (``pending`` → ``executing``), so a replayed or concurrent approval finds it
  taken and is refused; an expired, refused, withdrawn or carried-out proposal
  cannot be approved;
* the operation runs after the claim is committed; its outcome (``done`` with what
  it did, or ``failed`` with why) is recorded; a failed operation is not retried,
  a new proposal is needed;
* every step, and every refused attempt, is in the audit trail.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from admin import roles
from admin.context import AdminContext
from admin.critical import Operation, ProposalRefusal, Signer, fresh_at
from admin.models import Proposal
from admin.operations import OPERATIONS
from admin.roles import Staff
from core import audit
from core import db as core_db
from core.db import utc_now
from core.problems import Problem
from core.web.i18n import N_, Refusal

log = logging.getLogger("hallmark.admin.proposals")

PENDING, EXECUTING, DONE, FAILED, REFUSED, WITHDRAWN, EXPIRED = "pending", "executing", "done", "failed", "refused", "withdrawn", "expired"
STATUS_NAMES = {
    PENDING: N_("Waiting for approval"),
    EXECUTING: N_("Being carried out"),
    DONE: N_("Approved and carried out"),
    FAILED: N_("Approved, but it failed"),
    REFUSED: N_("Refused"),
    WITHDRAWN: N_("Withdrawn by the proposer"),
    EXPIRED: N_("Lapsed"),
}
MIN_REASON, MAX_REASON = 4, 500


class NotFresh(Refusal):
    """The session must log in again with a USB key before this (the view sends the browser to re-authenticate)."""

    status = 401


def operation(kind: str) -> Operation:
    found = OPERATIONS.get(kind)
    if found is None:
        raise ProposalRefusal(N_("There is no operation %(kind)s."), code="unknown_operation", status=400, kind=kind[:40])
    return found


def operations() -> tuple[Operation, ...]:
    return tuple(OPERATIONS.values())


def roles_involved() -> frozenset[str]:
    """Every role that may propose or approve something: who gets the proposals page."""
    return frozenset(role for op in operations() for role in (*op.propose_roles, *op.approve_roles))


def _reason(text: str | None) -> str:
    text = " ".join((text or "").split())
    if not MIN_REASON <= len(text) <= MAX_REASON:
        raise ProposalRefusal(
            N_("Give a reason of %(min)s to %(max)s characters."), code="reason", status=400, min=MIN_REASON, max=MAX_REASON
        )
    return text


def _may(person: Staff, roles_: tuple[str, ...], department: str | None) -> bool:
    return any(person.may(role, department) for role in roles_)


def _refused(ctx: AdminContext, signer: Signer, action: str, target: str, refusal: Refusal) -> Refusal:
    """Record a refused attempt in its own transaction and hand the refusal back to be raised."""
    with core_db.transaction(ctx.sessions) as db:
        audit.record(db, actor=f"account:{signer.person.account_id}", action=action, target=target, details={"reason": refusal.code})
    return refusal


def propose(ctx: AdminContext, signer: Signer, kind: str, parameters: dict, reason: str) -> Proposal:
    """Put a critical operation up for approval. Raises a :class:`Refusal` (audited) when it may not be proposed."""
    now = utc_now()
    op = operation(kind)
    try:
        reason = _reason(reason)
        with core_db.transaction(ctx.sessions) as db:
            checked = op.check(ctx, db, dict(parameters))
            if not _may(signer.person, op.propose_roles, checked.department):
                raise ProposalRefusal(N_("You may not propose this operation for this department."), code="not_your_department", status=403)
            if not fresh_at(ctx, signer, now):
                raise NotFresh(N_("Confirm with your USB key first: critical operations need a fresh certificate login."), code="reauth")
            row = Proposal(
                id=secrets.token_hex(16),
                kind=kind,
                parameters=json.dumps(checked.parameters, ensure_ascii=False, sort_keys=True),
                department=checked.department,
                reason=reason,
                proposed_by=signer.person.account_id,
                created_at=now,
                expires_at=now + timedelta(hours=ctx.settings.admin_proposal_hours),
                status=PENDING,
            )
            db.add(row)
            db.flush()
            audit.record(
                db,
                actor=f"account:{signer.person.account_id}",
                action="admin.proposal.made",
                target=row.id,
                details={
                    "kind": kind,
                    "parameters": checked.parameters,
                    "department": checked.department,
                    "reason": reason,
                    "acr": signer.acr,
                },
            )
            db.expunge(row)
            return row
    except NotFresh:
        raise
    except Refusal as refusal:
        raise _refused(ctx, signer, "admin.proposal.refused", kind, refusal) from None


def get(db: Session, proposal_id: str) -> Proposal:
    row = db.get(Proposal, proposal_id) if isinstance(proposal_id, str) and len(proposal_id) <= 32 else None
    if row is None:
        raise ProposalRefusal(N_("There is no such proposal."), code="no_such_proposal", status=404)
    return row


def status_of(row: Proposal, now: datetime | None = None) -> str:
    """The status as people should read it: a pending proposal past its time has lapsed."""
    if row.status == PENDING and row.expires_at <= (now or utc_now()):
        return EXPIRED
    return row.status


def approve(ctx: AdminContext, signer: Signer, proposal_id: str, reason: str = "") -> Proposal:
    """Approve and carry out a proposal; raises a :class:`Refusal` (audited) when this approval does not count."""
    now = utc_now()
    approver = signer.person.account_id
    try:
        reason = " ".join((reason or "").split())[:MAX_REASON]
        with core_db.transaction(ctx.sessions) as db:
            row = get(db, proposal_id)
            op = operation(row.kind)
            _check_decidable(row, now)
            if row.proposed_by == approver:
                raise ProposalRefusal(N_("You proposed this yourself: a second person must approve it."), code="own_proposal", status=403)
            if not _may(signer.person, op.approve_roles, row.department):
                raise ProposalRefusal(N_("You may not approve this operation for this department."), code="not_your_department", status=403)
            if not fresh_at(ctx, signer, now):
                raise NotFresh(N_("Confirm with your USB key first: critical operations need a fresh certificate login."), code="reauth")
            if op.recheck is not None:
                op.recheck(ctx, db, json.loads(row.parameters))
            # The claim: only one approval can move it out of pending (a replay or a second click finds it taken).
            claimed = db.execute(
                update(Proposal)
                .where(Proposal.id == row.id, Proposal.status == PENDING, Proposal.expires_at > now, Proposal.proposed_by != approver)
                .values(status=EXECUTING, decided_by=approver, decided_at=now, decision_reason=reason or None)
                .execution_options(synchronize_session=False)
            ).rowcount
            if claimed != 1:
                raise ProposalRefusal(N_("This proposal has already been decided."), code="decided")
            parameters, kind, proposer = json.loads(row.parameters), row.kind, row.proposed_by
            audit.record(
                db,
                actor=f"account:{approver}",
                action="admin.proposal.approved",
                target=row.id,
                details={"kind": kind, "proposed_by": proposer, "reason": reason, "acr": signer.acr},
            )
    except NotFresh:
        raise
    except Refusal as refusal:
        raise _refused(ctx, signer, "admin.proposal.approval_refused", str(proposal_id)[:40], refusal) from None

    try:
        outcome, status = op.execute(ctx, parameters, f"account:{approver}"), DONE
    except (Problem, Refusal, ValueError) as exc:
        outcome, status = {"error": str(exc)[:500]}, FAILED
    except Exception as exc:  # an unexpected failure is recorded too, then raised for the log
        log.exception("four-eyes operation %s of proposal %s failed", kind, proposal_id)
        outcome, status = {"error": type(exc).__name__}, FAILED
    with core_db.transaction(ctx.sessions) as db:
        row = get(db, proposal_id)
        row.status, row.result = status, json.dumps(outcome, ensure_ascii=False, sort_keys=True)
        audit.record(
            db, actor=f"account:{approver}", action=f"admin.proposal.{status}", target=row.id, details={"kind": kind, "outcome": outcome}
        )
        db.flush()
        db.expunge(row)
    return row


def refuse(ctx: AdminContext, signer: Signer, proposal_id: str, reason: str) -> Proposal:
    """Refuse a proposal (someone who could approve it) or withdraw it (its proposer); a reason is required."""
    now = utc_now()
    person = signer.person
    try:
        reason = _reason(reason)
        with core_db.transaction(ctx.sessions) as db:
            row = get(db, proposal_id)
            op = operation(row.kind)
            _check_decidable(row, now)
            own = row.proposed_by == person.account_id
            if not own and not _may(person, op.approve_roles, row.department):
                raise ProposalRefusal(N_("You may not decide this operation for this department."), code="not_your_department", status=403)
            status = WITHDRAWN if own else REFUSED
            done = db.execute(
                update(Proposal)
                .where(Proposal.id == row.id, Proposal.status == PENDING)
                .values(status=status, decided_by=person.account_id, decided_at=now, decision_reason=reason)
                .execution_options(synchronize_session=False)
            ).rowcount
            if done != 1:
                raise ProposalRefusal(N_("This proposal has already been decided."), code="decided")
            audit.record(
                db,
                actor=f"account:{person.account_id}",
                action=f"admin.proposal.{status}",
                target=row.id,
                details={"kind": row.kind, "reason": reason},
            )
            db.expire(row)
            db.refresh(row)
            db.expunge(row)
            return row
    except Refusal as refusal:
        raise _refused(ctx, signer, "admin.proposal.refusal_refused", str(proposal_id)[:40], refusal) from None


def _check_decidable(row: Proposal, now: datetime) -> None:
    status = status_of(row, now)
    if status == EXPIRED:
        raise ProposalRefusal(N_("This proposal has lapsed; propose it again if it is still needed."), code="expired")
    if status != PENDING:
        raise ProposalRefusal(N_("This proposal has already been decided."), code="decided")


def visible(db: Session, person: Staff, *, limit: int = 200) -> list[Proposal]:
    """The proposals this person may see: those of operations they may propose or approve, in their departments."""
    kinds = [op.kind for op in operations() if person.has(*op.propose_roles, *op.approve_roles)]
    if not kinds:
        return []
    involved = tuple(roles_involved())
    query = (
        select(Proposal)
        .where(Proposal.kind.in_(kinds), or_(Proposal.department.is_(None), roles.in_departments(Proposal.department, person, involved)))
        .order_by(Proposal.created_at.desc(), Proposal.id)
        .limit(limit)
    )
    return [row for row in db.scalars(query) if may_see(person, row)]


def may_see(person: Staff, row: Proposal) -> bool:
    """Whether the person may look at this proposal: its proposer, or someone who may propose or approve it there."""
    op = operation(row.kind)
    return row.proposed_by == person.account_id or _may(person, (*op.propose_roles, *op.approve_roles), row.department)


def may_decide(person: Staff, row: Proposal) -> bool:
    """Whether the page should offer this person approve/refuse (the service checks again when they do)."""
    return row.proposed_by != person.account_id and _may(person, operation(row.kind).approve_roles, row.department)


def describe(row: Proposal) -> tuple[str, dict]:
    """(msgid, values) saying what the proposal would do."""
    op = operation(row.kind)
    return op.description, json.loads(row.parameters)
