"""The seal keeper's pages under ``/admin/seals``: thin views over ``admin.seals`` and ``admin.proposals``.

Every view is wrapped in :func:`admin.access.requires` (seal keeper); the department
of the seal, grant or proposal is checked by ``admin.seals`` / ``admin.proposals`` on
the server, and a refusal is the page again with the reason (403 for another
department's seal), recorded in the audit trail.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, g, redirect, render_template, request
from flask_babel import gettext

from admin import access, proposals, roles, seals
from admin.access import requires
from admin.context import current
from core import web
from core.web import N_, Refusal

bp = Blueprint("admin_seals", __name__, template_folder="templates", url_prefix="/admin/seals")
web.pages(bp, csrf=True, form_action="'self'")
KEEPER = roles.SEAL_KEEPER

NOTICES = {
    "seal-granted": N_("The client may now use the department's seals."),
    "seal-grant-kept": N_("The client could already use the department's seals."),
    "seal-grant-revoked": N_("The client may no longer use the department's seals."),
    "seal-retired": N_("The seal was retired and its certificate revoked."),
}
CERTIFICATE_STATES = {"valid": N_("Valid"), "revoked": N_("Revoked"), "expired": N_("Expired")}
FIELDS = ("credit_code", "department", "name", "reason", "client")


@bp.errorhandler(web.CSRFRefused)
def _csrf_refused(refusal):
    from admin import pages

    return pages._csrf_refused(refusal)


def _render(template: str, status: int = 200, **values):
    notice = NOTICES.get(request.args.get("notice", ""))
    if notice and "notice" not in values:
        values["notice"] = gettext(notice)
    values["certificate_state"] = lambda state: gettext(CERTIFICATE_STATES.get(state, state))
    return render_template(template, **values), status


def _forbidden(refusal: Refusal):
    """Another department's seal: the console's 403 page (admin.seals has recorded the attempt)."""
    return render_template("admin/forbidden.html", needed=[gettext(roles.NAMES[KEEPER])], error=refusal.translated()), 403


def _page(status: int = 200, error: str | None = None, form: dict | None = None):
    from admin import pages

    ctx = current()
    departments = seals.overview(ctx, g.staff)
    creations = {c.proposal_id: pages._name(c.proposed_by) for d in departments for c in d.creations}
    return _render(
        "admin/seals.html",
        status,
        departments=departments,
        clients=seals.sealing_clients(ctx),
        proposers=creations,
        error=error,
        form=form or {},
    )


def _refused(refusal: Refusal, form: dict | None = None):
    if isinstance(refusal, seals.OutsideDepartment) or refusal.status == 403:
        return _forbidden(refusal)
    return _page(refusal.status, refusal.translated(), form)


def _form() -> dict:
    return {name: request.form.get(name, "")[:1000] for name in FIELDS}


def _reauth(next_path: str):
    return redirect("/admin/reauth?next=" + quote(next_path, safe=""), 303)


@bp.get("")
@requires(KEEPER)
def seal_list():
    return _page()


@bp.post("/propose")
@requires(KEEPER)
def seal_propose():
    """Propose a new seal: it is created (HSM key, certificate) only when a second seal keeper of the department approves."""
    form = _form()
    parameters = {"credit_code": form["credit_code"], "department": form["department"], "name": form["name"]}
    try:
        row = proposals.propose(current(), access.signer(), seals.CREATE, parameters, form["reason"])
    except proposals.NotFresh:
        return _reauth("/admin/seals")
    except Refusal as refusal:
        return _refused(refusal, {**form, "open": "create-" + form["credit_code"][:18]})
    return redirect(f"/admin/proposals/{row.id}?notice=proposed", 303)


@bp.post("/rotate")
@requires(KEEPER)
def seal_rotate():
    form = _form()
    try:
        row = proposals.propose(current(), access.signer(), seals.ROTATE, {"seal": request.form.get("seal", "")[:100]}, form["reason"])
    except proposals.NotFresh:
        return _reauth("/admin/seals")
    except Refusal as refusal:
        return _refused(refusal)
    return redirect(f"/admin/proposals/{row.id}?notice=proposed", 303)


@bp.post("/grants")
@requires(KEEPER)
def grant_use():
    form = _form()
    try:
        made = seals.grant(current(), g.staff, form["credit_code"], form["client"])
    except Refusal as refusal:
        return _refused(refusal, form)
    return redirect("/admin/seals?notice=" + ("seal-granted" if made else "seal-grant-kept"), 303)


@bp.post("/grants/revoke")
@requires(KEEPER)
def revoke_use():
    form = _form()
    try:
        seals.revoke_grant(current(), g.staff, form["credit_code"], form["client"])
    except Refusal as refusal:
        return _refused(refusal)
    return redirect("/admin/seals?notice=seal-grant-revoked", 303)


def _retire_page(name: str, status: int = 200, error: str | None = None, form: dict | None = None):
    try:
        shown = seals.retirement(current(), g.staff, name)
    except Refusal as refusal:
        if refusal.status == 403:
            return _forbidden(refusal)
        return _render("admin/refused.html", refusal.status, error=refusal.translated())
    return _render("admin/seal_retire.html", status, retirement=shown, error=error, form=form or {})


@bp.get("/retire")
@requires(KEEPER)
def retire_confirm():
    return _retire_page(request.args.get("seal", "")[:100])


@bp.post("/retire")
@requires(KEEPER)
def retire():
    name = request.form.get("seal", "")[:100]
    form = _form()
    try:
        seals.retire(current(), access.signer(), name, form["reason"], request.form.get("confirm") == "yes")
    except seals.NotFresh:
        return _reauth("/admin/seals/retire?seal=" + quote(name, safe=""))
    except Refusal as refusal:
        if refusal.code in ("reason", "not_confirmed", "seal_retired"):
            return _retire_page(name, refusal.status, refusal.translated(), form)
        return _refused(refusal)
    return redirect("/admin/seals?notice=seal-retired", 303)
