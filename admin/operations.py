"""The critical operations that go through four eyes (``admin.proposals``), each calling its package's service function.

* ``seal.create``: a department seal is created, HSM key and certificate (``admin.seals.create`` →
  ``signing.seals.add``); proposed and approved by seal keepers of the department; its name is
  checked again at approval (``admin.seals.recheck_creation``).
* ``seal.rotate``: a department seal gets a new HSM key and certificate
  (``signing.seals.rotate``); proposed and approved by seal keepers of the seal's department.
* ``role.grant_admin``: an administrator role (system or department administrator)
  is given (``admin.roles.grant``); proposed and approved by system administrators.
* ``licence.revoke``: a licence is revoked as a penalty (吊销, final;
  ``licenses.lifecycle.change_state``); proposed and approved by licence officers of
  the licence's issuing department. The proposal's reason is the licence's reason.
* ``ca.revoke_authority``, ``trust.add_anchor``: revoking a CA certificate and adding a trust
  anchor (``admin.pki``, calling ``ca.revocation`` and ``ca.trust``); CA officers propose and approve.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from admin import pki, roles, seals
from admin.context import AdminContext
from admin.critical import Checked, Operation, ProposalRefusal
from core import db as core_db
from core.web.i18n import N_

# -- seal rotation ------------------------------------------------------------------------------------------


def _check_seal(ctx: AdminContext, db: Session, parameters: dict) -> Checked:
    from signing.models import Seal

    name = parameters.get("seal")
    seal = db.get(Seal, name) if isinstance(name, str) and 0 < len(name) <= 100 else None
    if seal is None:
        raise ProposalRefusal(N_("There is no seal named %(seal)s."), code="no_such_seal", status=404, seal=str(name)[:100])
    if seal.status != "active":
        raise ProposalRefusal(N_("The seal %(seal)s is retired."), code="seal_retired", seal=seal.name)
    return Checked({"seal": seal.name, "department": seal.credit_code, "certificate": seal.certificate_serial}, seal.credit_code)


def _rotate_seal(ctx: AdminContext, parameters: dict, actor: str) -> dict:
    from signing import seals
    from signing.models import Seal

    with ctx.ca.sessions() as db:
        seal = db.get(Seal, parameters["seal"])
        if seal is None or seal.certificate_serial != parameters["certificate"]:
            # Rotated (or removed) since it was proposed: the approval was for a seal that is no longer there.
            raise ValueError("the seal changed after it was proposed; propose the rotation again")
    rotated = seals.rotate(ctx.ca, parameters["seal"], actor=actor)
    return {"seal": rotated.name, "old_certificate": parameters["certificate"], "certificate": rotated.certificate_serial}


SEAL_ROTATION = Operation(
    kind="seal.rotate",
    title=N_("Rotate a seal"),
    description=N_("Rotate the seal %(seal)s: a new key and certificate replace certificate %(certificate)s."),
    propose_roles=(roles.SEAL_KEEPER,),
    approve_roles=(roles.SEAL_KEEPER,),
    check=_check_seal,
    execute=_rotate_seal,
)


SEAL_CREATION = Operation(
    kind=seals.CREATE,
    title=N_("Create a seal"),
    description=N_("Create the seal %(name)s of %(department)s (%(credit_code)s): a new key in the HSM and a department-seal certificate."),
    propose_roles=(roles.SEAL_KEEPER,),
    approve_roles=(roles.SEAL_KEEPER,),
    check=seals.check_creation,
    execute=seals.create,
    recheck=seals.recheck_creation,
)


# -- administrator roles ------------------------------------------------------------------------------------


def _check_admin_grant(ctx: AdminContext, db: Session, parameters: dict) -> Checked:
    from idp.models import Account

    role = roles.check_role(str(parameters.get("role", "")))
    if role not in roles.ADMINISTRATOR_ROLES:
        raise ProposalRefusal(N_("Only administrator roles are granted through four eyes."), code="not_admin_role", status=400)
    department = roles.check_department(role, parameters.get("department"))
    account = db.get(Account, parameters.get("account_id")) if isinstance(parameters.get("account_id"), str) else None
    if account is None or account.status != "active":
        raise ProposalRefusal(N_("There is no such active account."), code="no_such_account", status=404)
    name = account.display_name or account.username or account.id[:8]
    return Checked({"account_id": account.id, "account": name, "role": role, "department": department}, department)


def _grant_admin(ctx: AdminContext, parameters: dict, actor: str) -> dict:
    with core_db.transaction(ctx.sessions) as db:
        row, made = roles.grant(db, parameters["account_id"], parameters["role"], parameters["department"], actor=actor)
        return {"grant": row.id, "made": made}


ADMIN_GRANT = Operation(
    kind="role.grant_admin",
    title=N_("Grant an administrator role"),
    description=N_("Give %(account)s the role %(role)s."),
    propose_roles=(roles.SYSTEM_ADMIN,),
    approve_roles=(roles.SYSTEM_ADMIN,),
    check=_check_admin_grant,
    execute=_grant_admin,
)


# -- revoking a licence as a penalty -------------------------------------------------------------------------


def _check_licence_revocation(ctx: AdminContext, db: Session, parameters: dict) -> Checked:
    from licenses import lifecycle
    from licenses.models import Licence

    identifier = parameters.get("licence")
    licence = db.get(Licence, identifier.strip()) if isinstance(identifier, str) and 0 < len(identifier) <= 120 else None
    if licence is None:
        raise ProposalRefusal(
            N_("There is no licence %(licence)s."), code="unknown_licence", status=404, licence=str(identifier or "")[:120]
        )
    state = lifecycle.effective_state(licence)
    if state not in lifecycle.ACTIONS["revoke"][0]:
        raise ProposalRefusal(N_("The licence %(licence)s is %(state)s and cannot be revoked."), code="wrong_state",
                              licence=licence.identifier, state=state)  # fmt: skip
    reason = " ".join(str(parameters.get("reason") or "").split())
    if not reason or len(reason) > lifecycle.MAX_REASON:
        raise ProposalRefusal(N_("A reason of 1 to 200 characters is required."), code="bad_reason", status=422)
    parameters = {"licence": licence.identifier, "holder": licence.holder_name, "state": state, "reason": reason}
    return Checked(parameters, licence.issuer_code)


def _revoke_licence(ctx: AdminContext, parameters: dict, actor: str) -> dict:
    from licenses import lifecycle

    with core_db.transaction(ctx.sessions) as db:
        licence = lifecycle.change_state(db, parameters["licence"], "revoke", reason=parameters["reason"], actor=actor)
        return {"licence": licence.identifier, "state": licence.state}


LICENCE_REVOCATION = Operation(
    kind="licence.revoke",
    title=N_("Revoke a licence as a penalty"),
    description=N_("Revoke licence %(licence)s of %(holder)s as a penalty (吊销); this is final."),
    propose_roles=(roles.LICENCE_OFFICER,),
    approve_roles=(roles.LICENCE_OFFICER,),
    check=_check_licence_revocation,
    execute=_revoke_licence,
)

OPERATIONS = {
    op.kind: op for op in (SEAL_CREATION, SEAL_ROTATION, ADMIN_GRANT, LICENCE_REVOCATION, pki.AUTHORITY_REVOCATION, pki.ANCHOR_ADDITION)
}
