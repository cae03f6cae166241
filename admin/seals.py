"""The seal keeper's work: their departments' seals, who may use them, new seals through four eyes, retirement.

A seal keeper holds the role in one or more departments (known by unified social
credit code); every function here checks the department of what it touches
against the person's grants, on the server, and records a refused attempt in the
audit trail (``admin.seal.refused``). The work itself is done by ``signing.seals``,
which records it too:

* a new seal is only ever proposed here (``seal.create``, ``admin.operations``):
  :func:`check_creation` checks what is proposed, :func:`recheck_creation` checks
  at approval that its name is still free, :func:`create` has ``signing.seals.add``
  generate the HSM key and issue the certificate once a second seal keeper of the
  department has approved;
* the use of a department's seals is granted to a client (hall, approval system)
  that may ask for ``sign:seal`` tokens, as ``signing.seals`` models it (client →
  department; ``/api/sign/pdf`` enforces it), and taken back;
* a seal is retired, with a reason and a confirmation, after a fresh USB-key login:
  it signs no more and its certificate is revoked (cessationOfOperation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from admin import roles
from admin.context import AdminContext
from admin.critical import Checked, ProposalRefusal, fresh
from admin.models import Proposal
from admin.roles import Staff
from core import audit
from core import db as core_db
from core.db import utc_now
from core.problems import Problem
from core.web.i18n import N_, Refusal

KEEPER = roles.SEAL_KEEPER
CREATE, ROTATE = "seal.create", "seal.rotate"
SEAL_SCOPE = "sign:seal"
MIN_REASON, MAX_REASON = 4, 500


class SealRefusal(Refusal):
    status = 409


class OutsideDepartment(Refusal):
    """The seal, grant or department is not one of the person's (the page is a 403)."""

    status = 403


class NotFresh(Refusal):
    """Retiring needs a fresh USB-key login (the view sends the browser to re-authenticate)."""

    status = 401


@dataclass(frozen=True)
class SealView:
    name: str
    department: str
    credit_code: str
    certificate_serial: str
    not_after: str
    status: str  # active | retired
    pending_proposal: str | None  # a rotation waiting for a second seal keeper
    certificate_status: str = "valid"  # valid | revoked | expired


@dataclass(frozen=True)
class GrantView:
    client_id: str
    client_name: str
    granted_at: datetime
    granted_by: str


@dataclass(frozen=True)
class CreationView:
    proposal_id: str
    name: str
    department: str
    proposed_by: str  # account id
    expires_at: datetime


@dataclass(frozen=True)
class DepartmentView:
    credit_code: str
    name: str  # as its seals or the licence library know it ("" when neither does)
    seals: list[SealView] = field(default_factory=list)
    grants: list[GrantView] = field(default_factory=list)
    creations: list[CreationView] = field(default_factory=list)


def _who(person: Staff) -> str:
    return f"account:{person.account_id}"


def _refused(ctx: AdminContext, person: Staff, attempt: str, target: str, refusal: Refusal) -> Refusal:
    """Record a refused attempt in its own transaction and hand the refusal back to be raised."""
    with core_db.transaction(ctx.sessions) as db:
        audit.record(db, actor=_who(person), action="admin.seal.refused", target=target[:200],
                     details={"attempt": attempt, "reason": refusal.code})  # fmt: skip
    return refusal


def _pending(db: Session, kind: str, departments) -> list[Proposal]:
    return list(
        db.scalars(
            select(Proposal)
            .where(Proposal.kind == kind, Proposal.status == "pending", Proposal.expires_at > utc_now(), departments)
            .order_by(Proposal.created_at)
        )
    )


def _certificate_status(status: str, not_after: datetime, now: datetime) -> str:
    return "expired" if status == "valid" and not_after <= now else status


def visible(ctx: AdminContext, person: Staff) -> list[SealView]:
    """The seals of the departments where ``person`` is a seal keeper (the department scope is applied in the query)."""
    from ca.models import Certificate
    from signing.models import Seal

    with core_db.read_only(ctx.sessions) as db:
        rows = db.execute(
            select(Seal, Certificate.not_after, Certificate.status)
            .join(Certificate, Certificate.serial == Seal.certificate_serial)
            .where(roles.in_departments(Seal.credit_code, person, (KEEPER,)))
            .order_by(Seal.credit_code, Seal.status, Seal.name)
        ).all()
        now = utc_now()
        pending = {}
        for proposal in _pending(db, ROTATE, roles.in_departments(Proposal.department, person, (KEEPER,))):
            pending.setdefault(json.loads(proposal.parameters).get("seal"), proposal.id)
        return [
            SealView(
                seal.name,
                seal.department,
                seal.credit_code,
                seal.certificate_serial,
                not_after.date().isoformat(),
                seal.status,
                pending.get(seal.name) if seal.status == "active" else None,
                _certificate_status(status, not_after, now),
            )
            for seal, not_after, status in rows
        ]


def _department_name(db: Session, code: str) -> str:
    from licenses.models import Issuer
    from signing.models import Seal

    named = db.scalar(select(Seal.department).where(Seal.credit_code == code).order_by(Seal.created_at.desc()).limit(1))
    if named is None:
        issuer = db.get(Issuer, code)
        named = issuer.name if issuer is not None else ""
    return named


def overview(ctx: AdminContext, person: Staff) -> list[DepartmentView]:
    """Per department of the seal keeper: its seals, the clients that may use them and the seals proposed for it."""
    from idp.models import Client
    from signing.models import SealGrant

    seals = visible(ctx, person)
    codes = sorted(person.departments(KEEPER))
    with core_db.read_only(ctx.sessions) as db:
        names = dict(db.execute(select(Client.client_id, Client.name)).all())
        grants = db.scalars(
            select(SealGrant).where(SealGrant.credit_code.in_(codes)).order_by(SealGrant.credit_code, SealGrant.client_id)
        ).all()
        creations = _pending(db, CREATE, Proposal.department.in_(codes))
        shown = []
        for code in codes:
            shown.append(
                DepartmentView(
                    credit_code=code,
                    name=_department_name(db, code),
                    seals=[seal for seal in seals if seal.credit_code == code],
                    grants=[
                        GrantView(row.client_id, names.get(row.client_id, ""), row.granted_at, row.granted_by)
                        for row in grants
                        if row.credit_code == code
                    ],
                    creations=[
                        CreationView(row.id, parameters["name"], parameters["department"], row.proposed_by, row.expires_at)
                        for row in creations
                        if row.department == code
                        for parameters in (json.loads(row.parameters),)
                    ],
                )
            )
    return shown


def sealing_clients(ctx: AdminContext) -> list[tuple[str, str]]:
    """The registered clients that may ask for ``sign:seal`` tokens: (client id, name), those a grant is useful to."""
    from idp.models import Client

    with core_db.read_only(ctx.sessions) as db:
        rows = db.execute(select(Client.client_id, Client.name, Client.scope).order_by(Client.name, Client.client_id)).all()
    return [(client_id, name) for client_id, name, scope in rows if SEAL_SCOPE in (scope or "").split()]


# -- a new seal, through four eyes (the seal.create operation) --------------------------------------------------


def check_creation(ctx: AdminContext, db: Session, parameters: dict) -> Checked:
    """What a seal keeper proposes: the department (credit code), its name as the certificate shows it, the seal's name."""
    from ca import issuance
    from signing import seals as signing_seals
    from signing.models import Seal

    code = roles.check_department(KEEPER, str(parameters.get("credit_code") or "")[:40])
    try:
        department = issuance.check_name(" ".join(str(parameters.get("department") or "").split()), "department name")
    except Problem:
        raise ProposalRefusal(
            N_("Give the department's name as its certificate will show it: 1 to 64 characters."), code="bad_department_name", status=400
        ) from None
    try:
        _, code, name = signing_seals.check_new(department=department, credit_code=code, name=str(parameters.get("name") or "")[:200])
    except Problem:
        raise ProposalRefusal(
            N_(
                "A seal's name has 1 to 100 characters: no control characters, slashes, backslashes, question marks, hash or percent signs."
            ),
            code="bad_seal_name",
            status=400,
        ) from None
    if db.get(Seal, name) is not None:
        raise ProposalRefusal(N_("There is already a seal named %(seal)s."), code="seal_exists", seal=name)
    for row in _pending(db, CREATE, Proposal.department == code):
        if json.loads(row.parameters).get("name") == name:
            raise ProposalRefusal(
                N_("A seal named %(seal)s is already proposed and waiting for approval."), code="seal_proposed", seal=name
            )
    return Checked({"name": name, "department": department, "credit_code": code}, code)


def recheck_creation(ctx: AdminContext, db: Session, parameters: dict) -> None:
    """At approval: the name may have been taken since it was proposed (by the CLI, or another proposal approved first)."""
    from signing.models import Seal

    if db.get(Seal, parameters["name"]) is not None:
        raise ProposalRefusal(
            N_(
                "A seal named %(seal)s was created after this was proposed: refuse this proposal, then propose the seal again under another name."
            ),
            code="seal_exists",
            seal=parameters["name"],
        )


def create(ctx: AdminContext, parameters: dict, actor: str) -> dict:
    """Carry out an approved creation: ``signing.seals.add`` generates the HSM key and issues the certificate (audited there)."""
    from signing import seals as signing_seals

    seal = signing_seals.add(
        ctx.ca, department=parameters["department"], credit_code=parameters["credit_code"], name=parameters["name"], actor=actor
    )
    return {"seal": seal.name, "certificate": seal.certificate_serial, "key": seal.key_uri}


# -- who may use the department's seals ----------------------------------------------------------------------------


def _department(ctx: AdminContext, person: Staff, attempt: str, text: str) -> str:
    try:
        code = roles.check_department(KEEPER, (text or "")[:40])
    except Refusal as refusal:
        raise _refused(ctx, person, attempt, str(text)[:40], refusal) from None
    if not person.may(KEEPER, code):
        raise _refused(
            ctx, person, attempt, code, OutsideDepartment(N_("You are not a seal keeper of this department."), code="not_your_department")
        )
    return code


def grant(ctx: AdminContext, person: Staff, department: str, client_id: str) -> bool:
    """Let a client use the department's seals; False when it already could. The client must be able to ask for sign:seal."""
    from idp.models import Client
    from signing import seals as signing_seals
    from signing.models import SealGrant

    code = _department(ctx, person, "grant", department)
    client_id = (client_id or "").strip()[:100]
    with core_db.read_only(ctx.sessions) as db:
        client = db.get(Client, client_id) if client_id else None
        if client is None:
            raise _refused(ctx, person, "grant", client_id or "-",
                           SealRefusal(N_("There is no client %(client)s."), code="no_such_client", status=404, client=client_id))  # fmt: skip
        if SEAL_SCOPE not in (client.scope or "").split():
            raise _refused(ctx, person, "grant", client_id, SealRefusal(
                N_("The client %(client)s may not ask for sealing (scope sign:seal); a system administrator must give it that scope first."),
                code="no_seal_scope", status=422, client=client.name))  # fmt: skip
        if db.get(SealGrant, (client_id, code)) is not None:
            return False
    signing_seals.grant(ctx.ca, client_id, code, actor=_who(person))
    return True


def revoke_grant(ctx: AdminContext, person: Staff, department: str, client_id: str) -> None:
    from signing import seals as signing_seals

    code = _department(ctx, person, "revoke_grant", department)
    client_id = (client_id or "").strip()[:100]
    if not client_id or not signing_seals.revoke_grant(ctx.ca, client_id, code, actor=_who(person)):
        raise _refused(ctx, person, "revoke_grant", client_id or "-",
                       SealRefusal(N_("That client has no grant for this department's seals."), code="no_such_grant", status=404))  # fmt: skip


# -- retiring a seal ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retirement:
    """What the confirmation page says before a seal is retired."""

    seal: SealView
    issuers: list[str]  # licence issuers that seal their licences with it
    rotation: str | None  # a pending rotation that would then fail


def _own_seal(ctx: AdminContext, person: Staff, attempt: str, name: str) -> SealView:
    from signing.models import Seal

    name = (name or "")[:100]
    with core_db.read_only(ctx.sessions) as db:
        seal = db.get(Seal, name) if name else None
        code = seal.credit_code if seal is not None else None
    if seal is None:
        raise _refused(ctx, person, attempt, name or "-",
                       SealRefusal(N_("There is no seal named %(seal)s."), code="no_such_seal", status=404, seal=name))  # fmt: skip
    if not person.may(KEEPER, code):
        raise _refused(ctx, person, attempt, name,
                       OutsideDepartment(N_("You are not a seal keeper of this seal's department."), code="not_your_department"))  # fmt: skip
    return next(view for view in visible(ctx, person) if view.name == name)


def retirement(ctx: AdminContext, person: Staff, name: str) -> Retirement:
    from licenses.models import Issuer

    seal = _own_seal(ctx, person, "retire", name)
    with core_db.read_only(ctx.sessions) as db:
        issuers = list(db.scalars(select(Issuer.name).where(Issuer.seal_name == seal.name).order_by(Issuer.name)))
    return Retirement(seal, issuers, seal.pending_proposal)


def retire(ctx: AdminContext, signer, name: str, reason: str, confirmed: bool) -> SealView:
    """Retire a seal of the person's department: it signs no more and its certificate is revoked (cessationOfOperation).

    ``signer`` is the session as :class:`admin.critical.Signer`: a fresh USB-key login is needed, as for a
    critical operation (raises :class:`NotFresh`, not recorded: the browser is sent to confirm first).
    """
    from signing import seals as signing_seals

    person = signer.person
    seal = _own_seal(ctx, person, "retire", name)
    if seal.status != "active":
        raise _refused(
            ctx, person, "retire", seal.name, SealRefusal(N_("The seal %(seal)s is retired."), code="seal_retired", seal=seal.name)
        )
    reason = " ".join((reason or "").split())
    if not MIN_REASON <= len(reason) <= MAX_REASON:
        raise _refused(ctx, person, "retire", seal.name, SealRefusal(
            N_("Give a reason of %(min)s to %(max)s characters."), code="reason", status=400, min=MIN_REASON, max=MAX_REASON))  # fmt: skip
    if not confirmed:
        raise _refused(ctx, person, "retire", seal.name, SealRefusal(
            N_("Tick the box to confirm that the seal is to be retired for good."), code="not_confirmed", status=400))  # fmt: skip
    if not fresh(ctx, signer):
        raise NotFresh(N_("Confirm with your USB key first: critical operations need a fresh certificate login."), code="reauth")
    try:
        signing_seals.retire(ctx.ca, seal.name, actor=_who(person), reason=reason, revoke_certificate=True)
    except Problem as problem:
        if problem.status != 409:
            raise
        raise _refused(
            ctx, person, "retire", seal.name, SealRefusal(N_("The seal %(seal)s is retired."), code="seal_retired", seal=seal.name)
        ) from None
    return next(view for view in visible(ctx, person) if view.name == seal.name)
