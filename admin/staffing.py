"""Giving and taking back roles from the console: who may do it, for which department, and through four eyes where needed.

* A system administrator gives and takes back any working role; an administrator
  role (system or department administrator) is only *proposed* here and given when a
  second system administrator approves (``role.grant_admin``, ``admin.proposals``).
* A department administrator gives and takes back the working roles of their own
  departments (licence officer, counter clerk, seal keeper).
* Nobody takes the last system administrator's role away from the console (the CLI can).

Refused attempts are recorded in the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from admin import proposals, roles
from admin.context import AdminContext
from admin.critical import Signer
from admin.models import Proposal, RoleGrant
from admin.roles import Staff
from core import audit
from core import db as core_db
from core.web.i18n import N_, Refusal


class StaffingRefusal(Refusal):
    status = 400


@dataclass(frozen=True)
class Outcome:
    granted: RoleGrant | None = None
    proposal: Proposal | None = None


def offered(person: Staff) -> list[str]:
    """The roles the console offers this person to give: every role to a system administrator (administrator roles
    through four eyes), the working roles of a department to a department administrator."""
    if person.has(roles.SYSTEM_ADMIN):
        return list(roles.ROLES)
    return [role for role in roles.ROLES if role in roles.DEPARTMENT_ROLES - roles.ADMINISTRATOR_ROLES]


def _account(db, identifier: str):
    from idp.people import accounts

    account = accounts.find(db, identifier, by_id=True) if identifier else None
    if account is None or account.status != "active":
        raise StaffingRefusal(
            N_("There is no active account %(account)s."), code="no_such_account", status=404, account=(identifier or "")[:64]
        )
    return account


def _refused(ctx: AdminContext, signer: Signer, action: str, refusal: Refusal, details: dict) -> Refusal:
    with core_db.transaction(ctx.sessions) as db:
        audit.record(db, actor=f"account:{signer.person.account_id}", action=action, details={"reason": refusal.code, **details})
    return refusal


def grant(ctx: AdminContext, signer: Signer, identifier: str, role: str, department: str | None, reason: str = "") -> Outcome:
    """Give ``role`` (in ``department``) to the account ``identifier`` (username, mobile or id)."""
    person = signer.person
    try:
        role = roles.check_role(role)
        department = roles.check_department(role, department)
        with core_db.read_only(ctx.sessions) as db:
            account_id = _account(db, identifier.strip()).id
        if role in roles.ADMINISTRATOR_ROLES:
            if not person.has(roles.SYSTEM_ADMIN):
                raise StaffingRefusal(N_("Only a system administrator may propose an administrator role."), code="not_allowed", status=403)
            parameters = {"account_id": account_id, "role": role, "department": department}
            return Outcome(proposal=proposals.propose(ctx, signer, "role.grant_admin", parameters, reason))
        if not roles.may_grant(person, role, department):
            raise StaffingRefusal(N_("You may not give this role in this department."), code="not_allowed", status=403)
        with core_db.transaction(ctx.sessions) as db:
            row, _ = roles.grant(db, account_id, role, department, actor=f"account:{person.account_id}")
            db.expunge(row)
        return Outcome(granted=row)
    except proposals.NotFresh:
        raise
    except Refusal as refusal:
        if isinstance(refusal, proposals.ProposalRefusal):
            raise  # audited by the proposals module already
        raise _refused(ctx, signer, "admin.role.grant_refused", refusal, {"role": role, "department": department}) from None


def revoke(ctx: AdminContext, signer: Signer, grant_id: int) -> RoleGrant:
    """Take back the grant ``grant_id`` (the console's rules above)."""
    person = signer.person
    try:
        with core_db.transaction(ctx.sessions) as db:
            row = db.get(RoleGrant, grant_id)
            if row is None:
                raise StaffingRefusal(N_("There is no such role grant."), code="no_such_grant", status=404)
            allowed = person.has(roles.SYSTEM_ADMIN) or (
                row.role in roles.DEPARTMENT_ROLES - roles.ADMINISTRATOR_ROLES and person.may(roles.DEPARTMENT_ADMIN, row.department)
            )
            if not allowed:
                raise StaffingRefusal(N_("You may not take back this role."), code="not_allowed", status=403)
            if (
                row.role == roles.SYSTEM_ADMIN
                and len(set(db.scalars(select(RoleGrant.account_id).where(RoleGrant.role == roles.SYSTEM_ADMIN)))) <= 1
            ):
                raise StaffingRefusal(
                    N_("This is the last system administrator; give the role to someone else first."), code="last_admin", status=409
                )
            roles.revoke(db, row.account_id, row.role, row.department, actor=f"account:{person.account_id}")
            db.expunge(row)
            return row
    except Refusal as refusal:
        raise _refused(ctx, signer, "admin.role.revoke_refused", refusal, {"grant": grant_id}) from None
