"""The licence officer's pages under ``/admin/licences``: thin views over ``admin.licensing`` and ``admin.proposals``.

Every view is wrapped in :func:`admin.access.requires` (licence officer); a licence,
request or import of another department is refused on the server (403, audited).
"""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, send_file
from flask_babel import get_locale, gettext

from admin import access, licensing, proposals, roles
from admin.access import requires
from admin.context import current
from core import db as core_db
from core import web
from core.problems import Problem
from core.web import N_, Refusal

bp = Blueprint("admin_licences", __name__, template_folder="templates", url_prefix="/admin/licences")
web.pages(bp, csrf=True, form_action="'self'")
OFFICER = roles.LICENCE_OFFICER

NOTICES = {
    "issued": N_("The licence was issued."),
    "suspend": N_("The licence was suspended."),
    "resume": N_("The suspension was lifted."),
    "withdraw": N_("The licence was withdrawn."),
    "cancel": N_("The licence was cancelled."),
    "fulfilled": N_("The request was fulfilled."),
    "refused": N_("The request was refused."),
}
ACTION_NAMES = {
    "suspend": N_("Suspend (暂扣)"),
    "resume": N_("Lift the suspension"),
    "withdraw": N_("Withdraw (撤销)"),
    "cancel": N_("Cancel (注销)"),
}
STATE_NAMES = {
    "valid": N_("Valid"),
    "suspended": N_("Suspended"),
    "revoked": N_("Revoked"),
    "withdrawn": N_("Withdrawn"),
    "cancelled": N_("Cancelled"),
    "expired": N_("Expired"),
    "superseded": N_("Superseded"),
    "open": N_("Open (request)"),
    "fulfilled": N_("Fulfilled"),
    "refused": N_("Refused (request)"),
    "running": N_("Running"),
    "finished": N_("Finished"),
    "failed": N_("Failed"),
}


@bp.errorhandler(web.CSRFRefused)
def _csrf_refused(refusal):
    from admin import pages

    return pages._csrf_refused(refusal)


def _render(template: str, status: int = 200, **values):
    notice = NOTICES.get(request.args.get("notice", ""))
    if notice and "notice" not in values:
        values["notice"] = gettext(notice)
    values.setdefault("state_name", lambda state: gettext(STATE_NAMES[state]) if state in STATE_NAMES else state)
    return render_template(template, **values), status


def _refused(refusal: Refusal):
    if isinstance(refusal, licensing.OutsideDepartment):
        return access.forbidden((OFFICER,))
    return _render("admin/refused.html", refusal.status, error=refusal.translated())


def _english() -> bool:
    return str(get_locale() or "zh").startswith("en")


def _type_name(definition) -> str:
    return definition.name_en if _english() and definition.name_en else definition.name


# -- licences -----------------------------------------------------------------------------------------------------


@bp.get("")
@requires(OFFICER)
def licence_list():
    from licenses import lifecycle

    search = request.args.get("q", "")[:120]
    with core_db.read_only(current().sessions) as db:
        rows = licensing.licences(db, g.staff, search=search)
        shown = [
            {"row": row, "state": lifecycle.effective_state(row)}
            for row in rows
        ]  # fmt: skip
        departments = licensing.issuers(db, g.staff)
    return _render("admin/licences.html", licences=shown, search=search, departments=departments)


def _types():
    from licenses import catalogue

    with core_db.read_only(current().sessions) as db:
        return catalogue.all_types(db)


def _issue_page(status: int = 200, *, type_code: str = "", form=None, error: str | None = None, fields_errors=None):
    from licenses import catalogue

    types = _types()
    definition = next((t for t in types if t.code == type_code), None)
    with core_db.read_only(current().sessions) as db:
        departments = licensing.issuers(db, g.staff)
        if definition is None and type_code:
            try:
                definition = catalogue.get(db, type_code)
            except Problem:  # an unknown type: the choice again, with the error
                definition = None
                error = error or gettext("There is no such licence type.")
                status = 422 if status == 200 else status
    fields = licensing.form_fields(definition, english=_english()) if definition else []
    return _render(
        "admin/licence_issue.html",
        status,
        types=[{"code": t.code, "name": _type_name(t)} for t in types],
        definition=definition,
        type_name=_type_name(definition) if definition else "",
        fields=fields,
        departments=departments,
        form=form or {},
        errors=fields_errors or {},
        error=error,
        request_id=(form or {}).get("request_id") or licensing.new_request_id(),
        holder_kind=definition.holder_kind if definition else "",
    )


@bp.get("/issue")
@requires(OFFICER)
def issue_form():
    return _issue_page(type_code=request.args.get("type", "")[:40])


def _field_errors(refusal: licensing.FormRefusal) -> dict:
    return {name: gettext(message, **params) for name, (message, params) in refusal.fields.items()}


@bp.post("/issue")
@requires(OFFICER)
def issue():
    form = request.form.to_dict()
    try:
        licence = licensing.issue(current(), g.staff, request.form)
    except licensing.FormRefusal as refusal:
        if refusal.status == 403:
            return access.forbidden((OFFICER,))
        return _issue_page(
            refusal.status,
            type_code=form.get("type", "")[:40],
            form=form,
            error=gettext(refusal.message, **refusal.params),
            fields_errors=_field_errors(refusal),
        )
    return redirect(f"/admin/licences/l/{licence.identifier}?notice=issued", 303)


def _licence_page(identifier: str, status: int = 200, error: str | None = None):
    from licenses import lifecycle

    with core_db.read_only(current().sessions) as db:
        try:
            row = licensing.licence(db, g.staff, identifier)
        except Refusal as refusal:
            return _refused(refusal)
        state = lifecycle.effective_state(row)
        history = lifecycle.history(db, row.identifier)
        actions = [a for a in licensing.DIRECT_ACTIONS if state in lifecycle.ACTIONS[a][0]]
        revocable = state in lifecycle.ACTIONS["revoke"][0]
    return _render(
        "admin/licence.html",
        status,
        licence=row,
        state=state,
        history=history,
        actions=[{"action": a, "name": gettext(ACTION_NAMES[a])} for a in actions],
        revocable=revocable,
        error=error,
    )


@bp.get("/l/<identifier>")
@requires(OFFICER)
def licence_page(identifier):
    return _licence_page(identifier[:120])


@bp.post("/l/<identifier>/<action>")
@requires(OFFICER)
def licence_action(identifier, action):
    identifier = identifier[:120]
    if action == "revoke":
        return _propose_revocation(identifier)
    try:
        licensing.change(current(), g.staff, identifier, action, request.form.get("reason", "")[:1000])
    except licensing.OutsideDepartment as refusal:
        return _refused(refusal)
    except Refusal as refusal:
        return _licence_page(identifier, refusal.status, refusal.translated())
    return redirect(f"/admin/licences/l/{identifier}?notice={action}", 303)


def _propose_revocation(identifier: str):
    from admin import pages

    reason = request.form.get("reason", "")[:1000]
    try:
        with core_db.read_only(current().sessions) as db:
            licensing.licence(db, g.staff, identifier)
        row = proposals.propose(current(), access.signer(), "licence.revoke", {"licence": identifier, "reason": reason}, reason)
    except proposals.NotFresh:
        return pages._reauth(f"/admin/licences/l/{identifier}")
    except licensing.OutsideDepartment as refusal:
        return _refused(refusal)
    except Refusal as refusal:
        return _licence_page(identifier, refusal.status, refusal.translated())
    return redirect(f"/admin/proposals/{row.id}?notice=proposed", 303)


# -- the 索取 queue ------------------------------------------------------------------------------------------------


@bp.get("/requests")
@requires(OFFICER)
def request_queue():
    from licenses import lifecycle

    state = request.args.get("state", "open")
    state = state if state in ("open", "fulfilled", "refused", "all") else "open"
    today = lifecycle.today()
    with core_db.read_only(current().sessions) as db:
        rows = licensing.queue(db, g.staff, state=state)
    shown = [{"row": row, "overdue": row.state == "open" and row.deadline < today} for row in rows]
    return _render("admin/licence_requests.html", requests=shown, state=state, today=today)


def _request_page(request_id: str, status: int = 200, error: str | None = None, form=None, fields_errors=None):
    from licenses import catalogue, lifecycle
    from licenses import requests as licence_requests

    ctx = current()
    with core_db.read_only(ctx.sessions) as db:
        try:
            row = licensing.request(db, g.staff, request_id)
        except Refusal as refusal:
            return _refused(refusal)
        definition = catalogue.get(db, row.type_code)
        holder_known = bool(licence_requests.holder_code(ctx.licences, db, row)) if row.state == "open" else True
    return _render(
        "admin/licence_request.html",
        status,
        req=row,
        overdue=row.state == "open" and row.deadline < lifecycle.today(),
        type_name=_type_name(definition),
        fields=licensing.form_fields(definition, english=_english()),
        holder_known=holder_known,
        form=form or {},
        errors=fields_errors or {},
        error=error,
    )


@bp.get("/requests/<request_id>")
@requires(OFFICER)
def request_page(request_id):
    return _request_page(request_id[:40])


@bp.post("/requests/<request_id>/link")
@requires(OFFICER)
def request_link(request_id):
    try:
        licensing.fulfil_by_link(current(), g.staff, request_id[:40], request.form.get("licence", ""), request.form.get("note", "")[:300])
    except licensing.OutsideDepartment as refusal:
        return _refused(refusal)
    except Refusal as refusal:
        return _request_page(request_id[:40], refusal.status, refusal.translated())
    return redirect(f"/admin/licences/requests/{request_id[:40]}?notice=fulfilled", 303)


@bp.post("/requests/<request_id>/issue")
@requires(OFFICER)
def request_issue(request_id):
    try:
        licensing.fulfil_by_issuing(current(), g.staff, request_id[:40], request.form)
    except licensing.OutsideDepartment as refusal:
        return _refused(refusal)
    except licensing.FormRefusal as refusal:
        return _request_page(
            request_id[:40], refusal.status, gettext(refusal.message, **refusal.params), request.form.to_dict(), _field_errors(refusal)
        )
    except Refusal as refusal:
        return _request_page(request_id[:40], refusal.status, refusal.translated())
    return redirect(f"/admin/licences/requests/{request_id[:40]}?notice=fulfilled", 303)


@bp.post("/requests/<request_id>/refuse")
@requires(OFFICER)
def request_refuse(request_id):
    try:
        licensing.refuse(current(), g.staff, request_id[:40], request.form.get("reason", "")[:1000])
    except licensing.OutsideDepartment as refusal:
        return _refused(refusal)
    except Refusal as refusal:
        return _request_page(request_id[:40], refusal.status, refusal.translated())
    return redirect(f"/admin/licences/requests/{request_id[:40]}?notice=refused", 303)


# -- bulk imports -------------------------------------------------------------------------------------------------


@bp.get("/imports")
@requires(OFFICER)
def import_list():
    with core_db.read_only(current().sessions) as db:
        rows = licensing.import_runs(db, g.staff)
    shown = [{"row": row, "report": licensing.error_report(row) is not None} for row in rows]
    return _render("admin/licence_imports.html", runs=shown)


@bp.get("/imports/<run_id>/errors.csv")
@requires(OFFICER)
def import_errors(run_id):
    with core_db.read_only(current().sessions) as db:
        try:
            row = licensing.import_run(db, g.staff, run_id)
        except Refusal as refusal:
            return _refused(refusal)
    path = licensing.error_report(row)
    if path is None:
        return _render(
            "admin/refused.html", 404, error=gettext("This import has no error report (no rows were rejected, or it was removed).")
        )
    response = send_file(path, mimetype="text/csv; charset=utf-8", as_attachment=True, download_name=f"import-{row.id}-errors.csv")
    response.headers["Cache-Control"] = "no-store"
    return response
