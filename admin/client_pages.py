"""Clients (relying parties) and the matter catalogue under ``/admin/clients`` and ``/admin/matters``: thin views over ``admin.relying``.

Clients are the system administrator's; matters also a department administrator's, for their departments.
"""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request
from flask_babel import gettext

from admin import access, relying, roles
from admin.access import requires
from admin.context import current
from core import web
from core.web import N_, Refusal

bp = Blueprint("admin_clients", __name__, template_folder="templates", url_prefix="/admin")
web.pages(bp, csrf=True, form_action="'self'")

NOTICES = {
    "changed": N_("The client was changed."),
    "removed": N_("The client was removed."),
    "granted": N_("The standing grant was added."),
    "ungranted": N_("The standing grant was ended."),
    "matter": N_("The matter was saved."),
}
MODES = {
    "compare": N_("Compare claimed values"),
    "read": N_("Read the face"),
    "copy": N_("Copy the file"),
    "issue": N_("Issue and change (issuing system)"),
}


@bp.errorhandler(web.CSRFRefused)
def _csrf_refused(refusal):
    from admin import pages

    return pages._csrf_refused(refusal)


def _render(template: str, status: int = 200, **values):
    notice = NOTICES.get(request.args.get("notice", ""))
    if notice and "notice" not in values:
        values["notice"] = gettext(notice)
    return render_template(template, **values), status


@bp.get("/clients")
@requires(*relying.CLIENT_ADMINS)
def client_list(status: int = 200, error: str | None = None, form=None):
    return _render("admin/clients.html", status, clients=relying.clients(current()), form=form or {}, error=error)


@bp.post("/clients")
@requires(*relying.CLIENT_ADMINS)
def client_register():
    form = relying.read_form(request.form)
    try:
        client_id, secret = relying.register(current(), g.staff, form)
    except Refusal as refusal:
        return client_list(refusal.status, refusal.translated(), request.form.to_dict())
    # The secret is shown on this answer only; it is not stored (only its keyed hash is).
    response = _client_page(client_id, secret=secret, notice=gettext("The client was registered."))
    return response


def _client_page(client_id: str, status: int = 200, *, error: str | None = None, secret: str | None = None, notice: str | None = None):
    ctx = current()
    try:
        shown = relying.client(ctx, client_id)
    except Refusal as refusal:
        return _render("admin/refused.html", refusal.status, error=refusal.translated())
    values = {"client": shown, "types": relying.licence_types(ctx), "modes": MODES, "secret": secret, "error": error}
    if notice:
        values["notice"] = notice
    html, status = _render("admin/client.html", status, **values)
    return html, status, {"Cache-Control": "no-store"}


@bp.get("/clients/<client_id>")
@requires(*relying.CLIENT_ADMINS)
def client_page(client_id):
    return _client_page(client_id[:64])


@bp.post("/clients/<client_id>")
@requires(*relying.CLIENT_ADMINS)
def client_edit(client_id):
    try:
        relying.edit(current(), g.staff, client_id[:64], relying.read_form(request.form))
    except Refusal as refusal:
        return _client_page(client_id[:64], refusal.status, error=refusal.translated())
    return redirect(f"/admin/clients/{client_id[:64]}?notice=changed", 303)


@bp.post("/clients/<client_id>/secret")
@requires(*relying.CLIENT_ADMINS)
def client_secret(client_id):
    try:
        secret = relying.rotate_secret(current(), g.staff, client_id[:64])
    except Refusal as refusal:
        return _client_page(client_id[:64], refusal.status, error=refusal.translated())
    return _client_page(client_id[:64], secret=secret, notice=gettext("A new secret was made; the old one no longer works."))


@bp.post("/clients/<client_id>/remove")
@requires(*relying.CLIENT_ADMINS)
def client_remove(client_id):
    try:
        relying.remove(current(), g.staff, client_id[:64])
    except Refusal as refusal:
        return _client_page(client_id[:64], refusal.status, error=refusal.translated())
    return redirect("/admin/clients?notice=removed", 303)


@bp.post("/clients/<client_id>/grants")
@requires(*relying.CLIENT_ADMINS)
def grant_add(client_id):
    form = request.form
    try:
        relying.add_grant(current(), g.staff, client_id[:64], form.get("type", ""), form.get("mode", ""), form.get("matters", ""))
    except Refusal as refusal:
        return _client_page(client_id[:64], refusal.status, error=refusal.translated())
    return redirect(f"/admin/clients/{client_id[:64]}?notice=granted", 303)


@bp.post("/clients/<client_id>/grants/remove")
@requires(*relying.CLIENT_ADMINS)
def grant_remove(client_id):
    grant = request.form.get("grant", "")
    try:
        relying.remove_grant(current(), g.staff, client_id[:64], int(grant) if grant.isdigit() and len(grant) < 12 else -1)
    except Refusal as refusal:
        return _client_page(client_id[:64], refusal.status, error=refusal.translated())
    return redirect(f"/admin/clients/{client_id[:64]}?notice=ungranted", 303)


# -- matters -------------------------------------------------------------------------------------------------------


@bp.get("/matters")
@requires(*relying.MATTER_ADMINS)
def matter_list(status: int = 200, error: str | None = None, form=None):
    from core import db as core_db

    ctx = current()
    with core_db.read_only(ctx.sessions) as db:
        departments = sorted(set(relying.department_names(db, g.staff).values()))
    return _render(
        "admin/matters.html",
        status,
        matters=relying.matters(ctx, g.staff),
        departments=departments,
        system=g.staff.has(roles.SYSTEM_ADMIN),
        form=form or {},
        error=error,
    )


@bp.post("/matters")
@requires(*relying.MATTER_ADMINS)
def matter_set():
    form = {k: request.form.get(k, "")[:300] for k in ("code", "level", "name", "department")}
    try:
        relying.set_matter(current(), g.staff, form["code"], form["level"], form["name"], form["department"])
    except relying.OutsideDepartment:
        return access.forbidden(relying.MATTER_ADMINS)
    except Refusal as refusal:
        return matter_list(refusal.status, refusal.translated(), form)
    return redirect("/admin/matters?notice=matter", 303)
