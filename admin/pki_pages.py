"""The CA officer's pages under ``/admin/pki``: thin views over ``admin.pki``, ``ca`` services and ``admin.proposals``.

Every view is wrapped in :func:`admin.access.requires` (CA officer, a province-wide
role); every POST carries the shared CSRF token. Issuing and revoking an end-entity
certificate are ``ca.issuance.issue`` and ``ca.revocation.revoke_end_entity``, which
audit them; revoking a CA certificate and adding a trust anchor are proposals that a
second CA officer approves (``admin.pki``). Bad input (a bad CSR or PEM, an unknown
serial) is the page again with the CA's reason and a 4xx status, recorded in the audit trail.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, g, redirect, render_template, request
from flask_babel import gettext

from admin import access, pki, proposals, roles
from admin.access import requires
from admin.context import current
from core import audit, web
from core import db as core_db
from core.problems import Problem
from core.web import N_, Refusal

bp = Blueprint("admin_pki", __name__, template_folder="templates", url_prefix="/admin/pki")
web.pages(bp, csrf=True, form_action="'self'")
OFFICER = roles.CA_OFFICER
PAGE_SIZE = 50
MAX_UPLOAD = 64 * 1024

NOTICES = {
    "issued": N_("The certificate was issued."),
    "revoked": N_("The certificate was revoked; the CRL and OCSP answer say so now."),
}
STATES = {"valid": N_("Valid"), "revoked": N_("Revoked"), "expired": N_("Expired")}
HEALTH = {"ok": N_("OK"), "warning": N_("Warning"), "failed": N_("Failed")}
REASON_NAMES = {
    "unspecified": N_("Unspecified"),
    "keyCompromise": N_("Key compromise"),
    "cACompromise": N_("CA compromise"),
    "affiliationChanged": N_("Affiliation changed"),
    "superseded": N_("Superseded"),
    "cessationOfOperation": N_("Cessation of operation"),
    "privilegeWithdrawn": N_("Privilege withdrawn"),
    "aACompromise": N_("AA compromise"),
}


@bp.errorhandler(web.CSRFRefused)
def _csrf_refused(refusal):
    from admin import pages

    return pages._csrf_refused(refusal)


def _ctx():
    return current().ca


def _actor() -> str:
    return f"account:{g.staff.account_id}"


def _render(template: str, status: int = 200, **values):
    notice = NOTICES.get(request.args.get("notice", ""))
    if notice and "notice" not in values:
        values["notice"] = gettext(notice)
    values.setdefault("state_name", lambda state: gettext(STATES.get(state, state)))
    values.setdefault("health_name", lambda state: gettext(HEALTH.get(state, state)))
    values.setdefault("reason_name", lambda reason: gettext(REASON_NAMES.get(reason, reason or "")))
    values.setdefault("reasons", REASON_NAMES)
    return render_template(template, **values), status


def _record_refusal(action: str, target: str, problem: Problem) -> None:
    with core_db.transaction(current().sessions) as db:
        audit.record(db, actor=_actor(), action="admin.pki.refused", target=target[:300],
                     details={"action": action, "status": problem.status, "detail": str(problem.detail or problem.title)[:300]})  # fmt: skip


def _problem_page(action: str, target: str, problem: Problem, template: str = "admin/pki_refused.html", **values):
    _record_refusal(action, target, problem)
    status = problem.status if 400 <= problem.status < 500 else 422
    error = gettext("The CA refused: %(detail)s", detail=str(problem.detail or problem.title)[:300])
    return _render(template, status, error=error, **values)


def _reauth(next_path: str):
    return redirect("/admin/reauth?next=" + quote(next_path, safe=""), 303)


def _upload_or_text(file_field: str, text_field: str) -> str:
    upload = request.files.get(file_field)
    if upload is not None and upload.filename:
        data = upload.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            raise Problem(413, "Payload Too Large", "the file is larger than 64 KiB")
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise Problem(400, "Bad Request", "the file is not PEM text") from None
    return request.form.get(text_field, "")[:MAX_UPLOAD]


# -- certificates -----------------------------------------------------------------------------------------------


@bp.get("")
@requires(OFFICER)
def certificate_list():
    from ca import queries

    args = request.args
    search = {key: args.get(key, "").strip()[:60] for key in ("subject_id", "status", "profile", "authority")}
    after = args.get("after", "")[:120]
    try:
        rows = queries.search(
            _ctx(),
            subject_id=search["subject_id"] or None,
            status=search["status"] or None,
            profile=search["profile"] or None,
            authority=search["authority"] or None,
            limit=PAGE_SIZE + 1,
            after=after,
        )
    except Problem as problem:
        return _problem_page("search", "certificates", problem, "admin/pki_certificates.html", rows=[], search=search, next_cursor=None)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    items = [(row, queries.status_of(row), pki.readable_subject(row.der, row.subject_id_masked)) for row in rows]
    next_cursor = queries.cursor(rows[-1]) if more else None
    return _render("admin/pki_certificates.html", rows=items, search=search, next_cursor=next_cursor, paged=bool(after))


@bp.get("/certificates/<serial>")
@requires(OFFICER)
def certificate_view(serial):
    return _certificate_page(serial)


def _certificate_page(serial: str, status: int = 200, error: str | None = None):
    from ca import queries, revocation

    try:
        row = queries.get(_ctx(), serial[:60])
    except Problem as problem:
        return _problem_page("view", serial[:60], problem)
    return _render(
        "admin/pki_certificate.html",
        status,
        row=row,
        state=queries.status_of(row),
        subject=pki.readable_subject(row.der, row.subject_id_masked),
        is_ca=revocation.is_authority_certificate(row),
        pem=pki.pem_of(row.der),
        error=error,
    )


@bp.post("/certificates/<serial>/revoke")
@requires(OFFICER)
def certificate_revoke(serial):
    from ca import revocation

    reason = request.form.get("reason", "")[:40]
    try:
        row = revocation.revoke_end_entity(_ctx(), serial[:60], reason, actor=_actor())
    except Problem as problem:
        if problem.status == 404 or (problem.status == 400 and "serial" in str(problem.detail)):
            return _problem_page("revoke", serial[:60], problem)
        _record_refusal("revoke", serial[:60], problem)
        return _certificate_page(serial, problem.status, gettext("The CA refused: %(detail)s", detail=str(problem.detail)[:300]))
    return redirect(f"/admin/pki/certificates/{row.serial}?notice=revoked", 303)


@bp.post("/certificates/<serial>/propose-revoke")
@requires(OFFICER)
def authority_revoke(serial):
    """Propose revoking a CA certificate: it is revoked only when a second CA officer approves."""
    parameters = {"serial": serial[:60], "reason_code": request.form.get("reason", "")[:40]}
    try:
        row = proposals.propose(current(), access.signer(), pki.REVOKE_AUTHORITY, parameters, request.form.get("note", "")[:1000])
    except proposals.NotFresh:
        return _reauth(f"/admin/pki/certificates/{quote(serial[:60], safe='')}")
    except Refusal as refusal:
        return _render("admin/pki_refused.html", refusal.status, error=refusal.translated())
    return redirect(f"/admin/proposals/{row.id}?notice=proposed", 303)


def _issue_form() -> dict:
    return {name: request.form.get(name, "")[:1000] for name in ("profile", "name", "subject_id", "san")}


def _issuable():
    from ca import profiles

    return [p.name for p in profiles.load().values() if p.issuer != "*" and p.subject != "service"]


@bp.get("/issue")
@requires(OFFICER)
def issue_form():
    return _render("admin/pki_issue.html", profiles=_issuable(), form={})


@bp.post("/issue")
@requires(OFFICER)
def issue():
    from ca import issuance

    form = _issue_form()
    try:
        csr = _upload_or_text("csr_file", "csr")
        if not csr.strip():
            raise Problem(400, "Bad Request", "a certificate signing request (PEM) is required")
        sans = tuple(s.strip() for s in form["san"].replace(",", "\n").splitlines() if s.strip())
        identity = issuance.Identity(name=form["name"], subject_id=form["subject_id"] or None, sans=sans)
        row, _ = issuance.issue(_ctx(), form["profile"], csr, identity, actor=_actor())
    except Problem as problem:
        return _problem_page("issue", form["profile"] or "certificate", problem, "admin/pki_issue.html", profiles=_issuable(), form=form)
    return redirect(f"/admin/pki/certificates/{row.serial}?notice=issued", 303)


# -- health -----------------------------------------------------------------------------------------------------


@bp.get("/health")
@requires(OFFICER)
def health():
    from ca import health as ca_health

    crls, services = ca_health.check(_ctx())
    return _render("admin/pki_health.html", crls=crls, services=services)


# -- trust store ------------------------------------------------------------------------------------------------


def _trust_page(status: int = 200, error: str | None = None):
    from ca import trust

    anchors = [(row, trust.anchor_kind(row)) for row in trust.list_anchors(_ctx())]
    return _render("admin/pki_trust.html", status, anchors=anchors, cross=_cross_certificates(), error=error)


def _cross_certificates():
    from sqlalchemy import select

    from ca import crosscert, queries
    from ca.models import Certificate

    with _ctx().sessions() as session:
        rows = list(session.scalars(select(Certificate).where(Certificate.profile == crosscert.PROFILE).order_by(Certificate.issued_at)))
    return [(row, queries.status_of(row)) for row in rows]


@bp.get("/trust")
@requires(OFFICER)
def trust_store():
    return _trust_page()


@bp.post("/trust/propose")
@requires(OFFICER)
def trust_propose():
    """Propose a trust anchor: it is recognised only when a second CA officer approves."""
    try:
        pem = _upload_or_text("pem_file", "pem")
    except Problem as problem:
        return _problem_page("trust", "anchor", problem)
    parameters = {
        "pem": pem,
        "revocation_policy": request.form.get("revocation_policy", "hard")[:10],
        "note": request.form.get("note", "")[:200],
    }
    try:
        row = proposals.propose(current(), access.signer(), pki.ADD_ANCHOR, parameters, request.form.get("reason", "")[:1000])
    except proposals.NotFresh:
        return _reauth("/admin/pki/trust")
    except Refusal as refusal:
        return _trust_page(refusal.status, refusal.translated())
    return redirect(f"/admin/proposals/{row.id}?notice=proposed", 303)
