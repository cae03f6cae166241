"""The holder's side of requests for missing licences (索取), beside ``/licences`` (``licenses.pages``).

``/licences`` shows, per holder, a form to ask a department for a licence and the
list of the holder's requests (state, deadline, answer) with a notice for each
answer not yet seen; these routes take the forms (CSRF-protected: they change
things):

* ``POST /licences/requests``: file a request (``licenses.requests.ask``); the
  holder's code is typed in, checked against the holder, and sealed;
* ``GET /licences/requests/new?holder=N``: the same form on a page of its own
  (where a refused form comes back with its values and what to fix);
* ``POST /licences/requests/<id>/seen``: the answer was read; its notice goes away.
"""

from __future__ import annotations

from flask import Blueprint, redirect, request
from flask_babel import gettext

from core import db as core_db
from core import web
from core.problems import Problem
from core.web import N_
from licenses import catalogue, issuers, pages
from licenses import requests as licence_requests

bp = Blueprint("licences_request_pages", __name__, template_folder="templates")
web.pages(bp, csrf=True, form_action="'self'")

MINE = "/licences#my-requests"
FORM_LIMITS = {"type": 21, "issuer": 18, "matter": 200, "reason": 400, "code": 40, "holder": 4}
REFUSALS = {
    "bad_reason": N_("Say why you need this licence, in at most 200 characters."),
    "bad_matter": N_("Name the matter you need it for, in at most 100 characters."),
    "unknown_type": N_("Choose a licence type from the list."),
    "unknown_issuer": N_("Choose an issuing department from the list."),
    "wrong_holder_kind": N_("This type of licence is not held by this holder. Choose another type."),
    "bad_holder": N_("The number entered is not valid. Check it and try again."),
    "holder_mismatch": N_("The number entered is not this holder's. Check it and try again."),
    "duplicate_request": N_("You have already asked this department for this licence, and it is still being handled."),
}
NO_CODE = N_("Enter the holder's full number: the department needs it to find and issue the licence.")
REFUSED = N_("The request could not be filed. Check the form and try again.")


def _holder(me, number: str):
    """The holder the form is for (its position on /licences: 1, 2, ...), or None."""
    try:
        n = int(number)
    except (TypeError, ValueError):
        return None, 0
    return (me.holders[n - 1], n) if 1 <= n <= len(me.holders) else (None, 0)


def _form_page(me, ref, n: int, values: dict, *, error: str | None = None, status: int = 200):
    ctx = pages._ctx()
    with core_db.read_only(ctx.sessions) as db:
        types = [t for t in catalogue.all_types(db) if t.holder_code_type == ref.code_type]
        departments = issuers.all_issuers(db)
    return pages.render(
        "licenses/request_new.html",
        status,
        me=me,
        h={"ref": ref, "anchor": f"holder-{n}", "number": n},
        types=types,
        departments=departments,
        values=values,
        holder_kind=pages._holder_kind,
        error=error,
    )


@bp.get("/licences/requests/new")
def new():
    me, elsewhere = pages._signed_in()
    if elsewhere is not None:
        return elsewhere
    ref, n = _holder(me, request.args.get("holder", "1"))
    if ref is None:
        return redirect("/licences", 303)
    return _form_page(me, ref, n, {})


@bp.post("/licences/requests")
def ask():
    me, elsewhere = pages._signed_in()
    if elsewhere is not None:
        return elsewhere
    values = {name: (request.form.get(name) or "")[:limit] for name, limit in FORM_LIMITS.items()}
    ref, n = _holder(me, values["holder"])
    if ref is None:
        return redirect("/licences", 303)
    if not values["code"].strip():  # the department needs the full number to find and issue the licence
        return _form_page(me, ref, n, values, error=gettext(NO_CODE), status=422)
    try:
        licence_requests.ask(
            pages._ctx(),
            type_code=values["type"],
            issuer_code=values["issuer"],
            holder=ref,
            holder_code=values["code"].strip(),
            matter=values["matter"],
            reason=values["reason"],
            requested_by=f"account:{me.account_id}",
        )
    except Problem as problem:
        code = problem.extensions.get("code")
        if not code and problem.status >= 500:
            raise
        values["code"] = ""  # never sent back in the page
        return _form_page(me, ref, n, values, error=gettext(REFUSALS.get(code, REFUSED)), status=problem.status)
    return redirect(MINE, 303)


@bp.post("/licences/requests/<request_id>/seen")
def seen(request_id):
    me, elsewhere = pages._signed_in()
    if elsewhere is not None:
        return elsewhere
    licence_requests.mark_seen(
        pages._ctx(), request_id, holder_hashes=[h.lookup_hash for h in me.holders], actor=f"account:{me.account_id}"
    )
    return redirect(MINE, 303)
