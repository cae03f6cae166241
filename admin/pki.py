"""The CA officer's work in the console: thin rules over ``ca`` (queries, issuance, revocation, trust, health).

Nothing here signs, stores or revokes by itself: every change is a ``ca`` service call,
which audits it. The two four-eyes operations (``admin.operations`` registers them):

* ``ca.revoke_authority``: a CA certificate Hallmark issued (a cross-certificate) is
  revoked (``ca.revocation.revoke_authority``); proposed and approved by CA officers.
* ``trust.add_anchor``: an external CA certificate becomes a trust anchor
  (``ca.trust.add_anchor``); proposed and approved by CA officers. The certificate is
  checked at proposal and again at approval.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session

from admin import roles
from admin.context import AdminContext
from admin.critical import Checked, Operation, ProposalRefusal
from core.problems import Problem
from core.web.i18n import N_

REVOKE_AUTHORITY = "ca.revoke_authority"
ADD_ANCHOR = "trust.add_anchor"
MAX_PEM = 64 * 1024

# Readable names of the subject attributes a Hallmark certificate carries (msgids).
ATTRIBUTE_NAMES = {
    NameOID.COMMON_NAME: N_("Common name"),
    NameOID.ORGANIZATION_NAME: N_("Organisation"),
    NameOID.ORGANIZATIONAL_UNIT_NAME: N_("Unit"),
    NameOID.COUNTRY_NAME: N_("Country"),
    NameOID.SERIAL_NUMBER: N_("Subject identifier"),
    NameOID.ORGANIZATION_IDENTIFIER: N_("Organisation identifier"),
}


def _refusal(problem: Problem, status: int | None = None) -> ProposalRefusal:
    return ProposalRefusal(N_("The CA refused: %(detail)s"), code="ca_refused", status=status or problem.status,
                           detail=str(problem.detail or problem.title)[:300])  # fmt: skip


@dataclass(frozen=True)
class Subject:
    parts: list[tuple[str, str]]  # (msgid or dotted OID, value), resident IDs masked
    dn: str


def readable_subject(der: bytes, masked_id: str | None) -> Subject:
    """The subject as name/value lines; a person's resident ID shows masked, as stored (``subject_id_masked``)."""
    certificate = x509.load_der_x509_certificate(der)
    parts = []
    for attribute in certificate.subject:
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
        if attribute.oid == NameOID.SERIAL_NUMBER and value.startswith("IDC"):
            value = "IDC" + (masked_id or "****")
        parts.append((ATTRIBUTE_NAMES.get(attribute.oid, attribute.oid.dotted_string), value))
    dn = ", ".join(f"{name}={value}" for name, value in reversed(parts) if name in ATTRIBUTE_NAMES.values())
    return Subject(parts, dn)


def pem_of(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()


# -- four eyes: revoking a CA certificate ---------------------------------------------------------------------


def _check_authority_revocation(ctx: AdminContext, db: Session, parameters: dict) -> Checked:
    from ca import revocation
    from ca.models import Certificate

    reason = parameters.get("reason_code")
    if reason not in revocation.REASONS:
        raise ProposalRefusal(N_("Choose a revocation reason."), code="bad_reason", status=422)
    try:
        serial = revocation.normalise_serial(str(parameters.get("serial") or "")[:60])
    except Problem as problem:
        raise _refusal(problem) from None
    row = db.get(Certificate, serial)
    if row is None:
        raise ProposalRefusal(
            N_("No certificate with serial %(serial)s was issued here."), code="unknown_serial", status=404, serial=serial
        )
    if not revocation.is_authority_certificate(row):
        raise ProposalRefusal(N_("Certificate %(serial)s is not a CA certificate; revoke it directly."), code="not_ca", serial=serial)
    if row.status == "revoked":
        raise ProposalRefusal(N_("Certificate %(serial)s is already revoked."), code="already_revoked", serial=serial)
    return Checked({"serial": serial, "subject": row.subject[:300], "profile": row.profile, "reason_code": reason}, None)


def _recheck_authority_revocation(ctx: AdminContext, db: Session, parameters: dict) -> None:
    _check_authority_revocation(ctx, db, parameters)


def _revoke_authority(ctx: AdminContext, parameters: dict, actor: str) -> dict:
    from ca import revocation

    row = revocation.revoke_authority(ctx.ca, parameters["serial"], parameters["reason_code"], actor=actor)
    return {"serial": row.serial, "status": row.status, "reason": row.revocation_reason}


AUTHORITY_REVOCATION = Operation(
    kind=REVOKE_AUTHORITY,
    title=N_("Revoke a CA certificate"),
    description=N_("Revoke the CA certificate %(serial)s (%(subject)s), reason %(reason_code)s; this is final."),
    propose_roles=(roles.CA_OFFICER,),
    approve_roles=(roles.CA_OFFICER,),
    check=_check_authority_revocation,
    execute=_revoke_authority,
    recheck=_recheck_authority_revocation,
)


# -- four eyes: adding a trust anchor -------------------------------------------------------------------------


def _check_anchor(ctx: AdminContext, db: Session, parameters: dict) -> Checked:
    from ca import trust
    from ca.models import RecognisedCA

    pem = parameters.get("pem")
    if not isinstance(pem, str) or not pem.strip() or len(pem) > MAX_PEM:
        raise ProposalRefusal(N_("Paste or upload one CA certificate in PEM."), code="no_certificate", status=400)
    policy = parameters.get("revocation_policy") or "hard"
    try:
        trust.check_policy(policy)
        facts = trust.inspect_ca_certificate(pem.encode())
        # In the caller's session (one database): a second connection here would wait on the pool.
        trust.refuse_our_own(db, facts.certificate)
        existing = db.get(RecognisedCA, facts.fingerprint)
    except Problem as problem:
        raise _refusal(problem, 422 if problem.status == 400 else None) from None
    if existing is not None:
        raise ProposalRefusal(N_("%(subject)s is already recognised."), code="already_recognised", subject=existing.subject)
    certificate = facts.certificate
    return Checked(
        {
            "pem": certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "subject": certificate.subject.rfc4514_string()[:300],
            "fingerprint": facts.fingerprint,
            "revocation_policy": policy,
            "note": str(parameters.get("note") or "")[:200],
        },
        None,
    )


def _recheck_anchor(ctx: AdminContext, db: Session, parameters: dict) -> None:
    _check_anchor(ctx, db, parameters)


def _add_anchor(ctx: AdminContext, parameters: dict, actor: str) -> dict:
    from ca import trust

    row = trust.add_anchor(
        ctx.ca, parameters["pem"].encode(), actor=actor, revocation_policy=parameters["revocation_policy"], note=parameters["note"]
    )
    return {"fingerprint": row.fingerprint, "subject": row.subject}


ANCHOR_ADDITION = Operation(
    kind=ADD_ANCHOR,
    title=N_("Add a trust anchor"),
    description=N_("Recognise %(subject)s (SHA-256 %(fingerprint)s) as a trust anchor, revocation checking %(revocation_policy)s."),
    propose_roles=(roles.CA_OFFICER,),
    approve_roles=(roles.CA_OFFICER,),
    check=_check_anchor,
    execute=_add_anchor,
    recheck=_recheck_anchor,
)
