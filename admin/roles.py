"""Staff roles, scoped to departments: who holds which role where, and the query helper that keeps staff to their departments.

A department is known by its unified social credit code (GB 32100), as seals and
licence issuers know it. Some roles are held in one department (a department
administrator, a licence officer, a counter clerk, a seal keeper); the others
are province-wide and take no department (a system administrator, a CA officer,
an auditor). One person may hold several roles, and a department role in
several departments, each a grant of its own.

Every grant and revocation is in the audit trail. Service modules scope their
queries with :func:`in_departments`; views never filter by department themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, false, select, true
from sqlalchemy.orm import Session

from admin.models import RoleGrant
from core import audit
from core.db import utc_now
from core.identifiers import InvalidIdentifier, validate_credit_code
from core.web.i18n import N_, Refusal

SYSTEM_ADMIN = "system_admin"
DEPARTMENT_ADMIN = "department_admin"
LICENCE_OFFICER = "licence_officer"
COUNTER_CLERK = "counter_clerk"
CA_OFFICER = "ca_officer"
SEAL_KEEPER = "seal_keeper"
AUDITOR = "auditor"

# In the order the console lists them; names are msgids (translated where shown).
NAMES = {
    SYSTEM_ADMIN: N_("System administrator"),
    DEPARTMENT_ADMIN: N_("Department administrator"),
    LICENCE_OFFICER: N_("Licence officer"),
    COUNTER_CLERK: N_("Counter clerk"),
    CA_OFFICER: N_("CA officer"),
    SEAL_KEEPER: N_("Seal keeper"),
    AUDITOR: N_("Auditor"),
}
ROLES = tuple(NAMES)
DEPARTMENT_ROLES = frozenset({DEPARTMENT_ADMIN, LICENCE_OFFICER, COUNTER_CLERK, SEAL_KEEPER})
PROVINCE_ROLES = frozenset(ROLES) - DEPARTMENT_ROLES
ADMINISTRATOR_ROLES = frozenset({SYSTEM_ADMIN, DEPARTMENT_ADMIN})


class RoleRefusal(Refusal):
    status = 400


def check_role(role: str) -> str:
    role = (role or "").strip().replace("-", "_")
    if role not in NAMES:
        raise RoleRefusal(
            N_("There is no role %(role)s. The roles are: %(roles)s."), code="unknown_role", role=role[:40], roles=", ".join(ROLES)
        )
    return role


def check_department(role: str, department: str | None) -> str | None:
    """The department a grant of ``role`` names: a valid credit code for a department role, none for a province-wide one."""
    department = (department or "").strip().upper() or None
    if role in PROVINCE_ROLES:
        if department is not None:
            raise RoleRefusal(
                N_("The role %(role)s is province-wide and is not given for a department."), code="department_not_allowed", role=role
            )
        return None
    if department is None:
        raise RoleRefusal(
            N_("The role %(role)s is held in a department: name the department by its unified social credit code."),
            code="department_required",
            role=role,
        )
    try:
        return validate_credit_code(department).value
    except InvalidIdentifier:
        raise RoleRefusal(
            N_("%(department)s is not a valid unified social credit code."), code="bad_department", department=department[:40]
        ) from None


@dataclass(frozen=True)
class Staff:
    """A signed-in staff member as the console's rules see them: the account and its grants (role, department or None)."""

    account_id: str
    name: str
    grants: frozenset[tuple[str, str | None]]

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(role for role, _ in self.grants)

    def has(self, *roles: str) -> bool:
        return any(role in self.roles for role in roles)

    def departments(self, *roles: str) -> frozenset[str]:
        """The departments where this person holds one of ``roles``."""
        return frozenset(department for role, department in self.grants if role in roles and department is not None)

    def may(self, role: str, department: str | None) -> bool:
        """Whether the person holds ``role`` for ``department`` (a province-wide role holds everywhere)."""
        if role in PROVINCE_ROLES:
            return (role, None) in self.grants
        return department is not None and (role, department) in self.grants


def staff(db: Session, account_id: str, name: str = "") -> Staff:
    rows = db.execute(select(RoleGrant.role, RoleGrant.department).where(RoleGrant.account_id == account_id)).all()
    return Staff(account_id, name, frozenset((role, department) for role, department in rows if role in NAMES))


def in_departments(column, person: Staff, roles: Iterable[str]):
    """A WHERE clause keeping rows whose department ``column`` is one where ``person`` holds one of ``roles``.

    A province-wide role among ``roles`` held by the person keeps every row; holding none of them keeps none.
    """
    roles = tuple(roles)
    if any((role, None) in person.grants for role in roles if role in PROVINCE_ROLES):
        return true()
    departments = person.departments(*roles)
    return column.in_(sorted(departments)) if departments else false()


def grant(db: Session, account_id: str, role: str, department: str | None, *, actor: str) -> tuple[RoleGrant, bool]:
    """Give a role (checked; the department checked against the role); returns (grant, made now)."""
    role = check_role(role)
    department = check_department(role, department)
    existing = db.scalar(select(RoleGrant).where(RoleGrant.account_id == account_id, RoleGrant.role == role, _same(department)))
    if existing is not None:
        return existing, False
    row = RoleGrant(account_id=account_id, role=role, department=department, granted_at=utc_now(), granted_by=actor[:200])
    db.add(row)
    db.flush()
    audit.record(db, actor=actor, action="admin.role.granted", target=account_id, details={"role": role, "department": department})
    return row, True


def revoke(db: Session, account_id: str, role: str, department: str | None, *, actor: str) -> bool:
    """Take a role back; False when the person did not hold it there."""
    role = check_role(role)
    department = check_department(role, department)
    removed = db.execute(delete(RoleGrant).where(RoleGrant.account_id == account_id, RoleGrant.role == role, _same(department))).rowcount
    if removed:
        audit.record(db, actor=actor, action="admin.role.revoked", target=account_id, details={"role": role, "department": department})
    return bool(removed)


def _same(department: str | None):
    return RoleGrant.department.is_(None) if department is None else RoleGrant.department == department


def all_grants(db: Session, *, scope: Staff | None = None) -> list[RoleGrant]:
    """Every grant, or only those ``scope`` may see: a system administrator all, a department administrator their departments'."""
    query = select(RoleGrant).order_by(RoleGrant.department, RoleGrant.role, RoleGrant.granted_at, RoleGrant.id)
    if scope is not None:
        query = query.where(in_departments(RoleGrant.department, scope, (SYSTEM_ADMIN, DEPARTMENT_ADMIN)))
    return list(db.scalars(query))


def may_grant(person: Staff, role: str, department: str | None) -> bool:
    """Whether ``person`` may give or take back ``role`` in ``department`` from the console.

    A system administrator any role but the administrator roles (those go through four eyes); a
    department administrator the department's working roles, in their own departments.
    """
    if role in ADMINISTRATOR_ROLES:
        return False
    if person.has(SYSTEM_ADMIN):
        return True
    return role in DEPARTMENT_ROLES and person.may(DEPARTMENT_ADMIN, department)


def count_holders(db: Session, role: str) -> int:
    return len(set(db.scalars(select(RoleGrant.account_id).where(RoleGrant.role == role))))
