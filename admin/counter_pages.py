"""The counter clerk's pages under ``/admin/counter``: thin views over ``admin.counter``.

Every view is wrapped in :func:`admin.access.requires` (counter clerk); a visit of a
department where the clerk is not a counter clerk is refused on the server (403,
audited). Every POST carries the CSRF token (``core.web``). The person is shown only
on the answer to a search with a reason, or through the visit it opened.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, redirect, render_template, request
from flask_babel import gettext

from admin import access, counter, roles
from admin.access import requires
from admin.context import current
from core import web
from core.web import N_, Refusal

bp = Blueprint("admin_counter", __name__, template_folder="templates", static_folder="static", url_prefix="/admin/counter")
web.pages(bp, csrf=True, form_action="'self'")
CLERK = roles.COUNTER_CLERK

NOTICES = {
    "verified": N_("The in-person verification was recorded."),
    "unlocked": N_("The account was unlocked."),
    "reset": N_("The password was reset; every session of the account has ended and the owner was told."),
}


@bp.errorhandler(web.CSRFRefused)
def _csrf_refused(refusal):
    from admin import pages

    return pages._csrf_refused(refusal)


def _documents():
    from idp.people import realname

    return [{"code": code, "name": gettext(name)} for code, name in realname.DOCUMENTS.items()]


def _departments():
    return sorted(g.staff.departments(CLERK))


def _refused(refusal: Refusal, template: str = "admin/refused.html", **values):
    if isinstance(refusal, counter.OutsideDepartment):
        return access.forbidden((CLERK,))
    return _render(template, refusal.status, error=refusal.translated(), **values)


def _render(template: str, status: int = 200, **values):
    web.allow(scripts=True)
    notice = NOTICES.get(request.args.get("notice", ""))
    if notice and "notice" not in values:
        values["notice"] = gettext(notice)
    values.setdefault("documents", _documents())
    values.setdefault("departments", _departments())
    return render_template(template, **values), status


@bp.get("")
@requires(CLERK)
def desk():
    return _render("admin/counter.html")


@bp.post("/search")
@requires(CLERK)
def search():
    reason = request.form.get("reason", "")[:1000]
    try:
        found = counter.search(
            current(),
            g.staff,
            resident_id=request.form.get("resident_id", "")[:40],
            reason=reason,
            department=request.form.get("department", "")[:18] or None,
        )
    except Refusal as refusal:
        return _refused(refusal, "admin/counter.html", reason=reason)
    if found is None:
        return _render("admin/counter.html", 404, error=gettext("No real-name verified account has this resident ID."), reason=reason)
    return redirect(f"/admin/counter/visits/{found.visit_id}", 303)


@bp.get("/visits/<visit_id>")
@requires(CLERK)
def visit(visit_id):
    try:
        shown = counter.person(current(), g.staff, visit_id)
    except Refusal as refusal:
        return _refused(refusal)
    return _render("admin/counter_person.html", person=shown)


def _person_page(visit_id: str, refusal: Refusal):
    if isinstance(refusal, counter.OutsideDepartment):
        return access.forbidden((CLERK,))
    try:
        shown = counter.person(current(), g.staff, visit_id)
    except Refusal as again:
        return _refused(again)
    return _render("admin/counter_person.html", refusal.status, person=shown, error=refusal.translated())


@bp.post("/visits/<visit_id>/verify")
@requires(CLERK)
def verify(visit_id):
    upload = request.files.get("photo")
    data = upload.read(counter.MAX_PHOTO + 1) if upload else b""
    try:
        counter.verify(
            current(),
            g.staff,
            visit_id,
            name=request.form.get("name", "")[:100],
            resident_id=request.form.get("resident_id", "")[:40],
            documents=request.form.getlist("documents")[:5],
            location=request.form.get("location", "")[:300],
            photo=data,
        )
    except Refusal as refusal:
        return _person_page(visit_id, refusal)
    return redirect(f"/admin/counter/visits/{visit_id}?notice=verified", 303)


@bp.get("/visits/<visit_id>/photo")
@requires(CLERK)
def photo(visit_id):
    try:
        kind, data = counter.photo(current(), g.staff, visit_id)
    except Refusal as refusal:
        return _refused(refusal)
    return Response(data, mimetype=kind, headers={"Cache-Control": "no-store"})


@bp.post("/visits/<visit_id>/unlock")
@requires(CLERK)
def unlock(visit_id):
    try:
        counter.unlock(current(), g.staff, visit_id)
    except Refusal as refusal:
        return _person_page(visit_id, refusal)
    return redirect(f"/admin/counter/visits/{visit_id}?notice=unlocked", 303)


@bp.post("/visits/<visit_id>/password")
@requires(CLERK)
def reset_password(visit_id):
    try:
        counter.reset_password(current(), g.staff, visit_id, new_password=request.form.get("password", "")[:200])
    except Refusal as refusal:
        return _person_page(visit_id, refusal)
    return redirect(f"/admin/counter/visits/{visit_id}?notice=reset", 303)
