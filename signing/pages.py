"""Pages for people: the public verification page the seal's QR code opens, and the validation report.

* ``GET /verify/<id>``: is this a document Hallmark sealed or signed, who, when, and
  is the certificate still in good standing; ``POST /verify/<id>`` with a file
  says whether the upload is that document (the same bytes, or our signature
  intact in it) and shows its validation report.
* ``GET /verify``: where to enter a verification code by hand.
* ``GET /validate`` and ``POST /validate``: the validation report of any PDF.

The layout, headers and error pages come from :mod:`core.web`. Nothing here
changes state, so the forms need no CSRF token; uploads are read, validated
and forgotten. Identifiers are shown masked. Problems from the
services (not a PDF, too large, ...) become a readable page in the person's
language with the same status code.
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

from flask import Blueprint, redirect, render_template, request
from flask_babel import format_datetime, gettext

from core import web
from core.problems import Problem
from core.web import N_
from signing import context as signing_context
from signing import documents, limits
from signing.context import SigningContext

bp = Blueprint("signing_pages", __name__, template_folder="templates")
web.pages(bp, form_action="'self'")
TRANSLATIONS = Path(__file__).parent / "translations"


@bp.record_once
def _on_register(setup):
    """Our catalogue, and our ways in on the landing page."""
    web.add_translations(setup.app, TRANSLATIONS)
    web.landing_link(setup.app, "documents", "/verify", N_("Verify a document"), N_("Is a sealed or signed document genuine?"), 10)
    web.landing_link(setup.app, "documents", "/validate", N_("Validate a signed PDF"), N_("Check every signature in any PDF."), 20)


# Problem codes shown to people, as msgids (English; the catalogues translate them).
MESSAGES = {
    "not_a_pdf": N_("This file is not a PDF."),
    "encrypted": N_("This PDF is encrypted or protected by a password. Upload it without protection."),
    "corrupt": N_("This PDF is damaged and cannot be read."),
    "too_large": N_("This file is too large. At most %(limit)s MiB are accepted."),
    "no_file": N_("Choose a PDF file to upload."),
    "no_such_document": N_("No document has this verification code. Check the address or scan the QR code again."),
    "too_many_pages": N_("This PDF has too many pages to be checked here (at most %(pages)s)."),
    "too_many_revisions": N_("This PDF was changed too many times to be checked here (at most %(revisions)s revisions)."),
    "too_many_signatures": N_("This PDF has too many signatures to be checked here (at most %(signatures)s)."),
    "rate_limited": N_("Too many files were checked from your network. Try again in %(seconds)s seconds."),
    "validation_timeout": N_("Checking this file took too long. Try again later."),
}


def _ctx() -> SigningContext:
    return signing_context.current()


def _when(iso: str | None) -> str:
    if not iso:
        return ""
    from datetime import datetime

    return format_datetime(datetime.fromisoformat(iso.replace("Z", "+00:00")), "medium")


def render(template: str, status: int = 200, headers: dict | None = None, **values):
    # The language switch leads to this page without the query (a looked-up code is in the path already).
    return render_template(template, when=_when, lang_links=web.language_links(request.path, {}), **values), status, headers or {}


def refused(template: str, problem: Problem, **values):
    """The page again, saying in the person's language why the upload was refused (Retry-After kept)."""
    return render(template, problem.status, problem.headers, error=_problem_text(problem), **values)


def _problem_text(problem: Problem) -> str:
    code = problem.extensions.get("code")
    message = MESSAGES.get(code)
    if message is None:
        return problem.detail or problem.title
    sctx = _ctx()
    caps = sctx.caps
    return gettext(
        message,
        limit=sctx.max_pdf_bytes // (1024 * 1024),
        pages=caps.pages,
        revisions=caps.revisions,
        signatures=caps.signatures,
        seconds=problem.extensions.get("retry_after", 60),
    )


def _upload() -> bytes:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise Problem(400, "Bad Request", "no file", code="no_file")
    return upload.read(_ctx().max_pdf_bytes + 1)


def _report_view(found: dict) -> dict:
    """The report with what a page shows: identifiers masked, links to our verification pages."""
    from signing.api import link_records

    link_records(_ctx(), found)
    for entry in found["signatures"]:
        signer = entry.get("signer") or {}
        identifier = signer.get("identifier")
        if identifier:
            identifier.pop("value", None)
    return found


@bp.get("/verify")
def verify_lookup():
    """A verification code typed in by hand: on to its page."""
    code = (request.args.get("code") or "").strip()[:100]
    if code:
        return redirect("/verify/" + quote(code, safe=""), 303)
    return render("signing/verify.html", document=None)


@bp.route("/verify/<document_id>", methods=["GET", "POST"])
def verify(document_id):
    """GET: what Hallmark recorded of the document; POST with a file: is the upload that document, and its report."""
    sctx = _ctx()
    try:
        row = documents.get(sctx, document_id)
    except Problem as problem:
        return render("signing/verify.html", problem.status, error=_problem_text(problem), document=None)
    described = documents.describe(sctx, row)
    picture = documents.thumbnail(row)
    # Inline (the page's CSP allows data: images): no second request, nothing cached apart from the page.
    described["thumbnail"] = picture and {
        "src": "data:image/png;base64," + base64.b64encode(picture["png"]).decode("ascii"),
        "width": picture["width"],
        "height": picture["height"],
    }
    if request.method == "GET":
        return render("signing/verify.html", document=described)
    try:
        limits.allow_validation(sctx, request.remote_addr or "")  # per client address, before the upload is read
        comparison = documents.compare(sctx, row, _upload())
    except Problem as problem:
        return refused("signing/verify.html", problem, document=described)
    return render(
        "signing/verify.html",
        document=described,
        outcome=comparison.outcome,
        upload_sha256=comparison.report["document"]["sha256"],
        report=_report_view(comparison.report),
        entry=comparison.entry,
    )


@bp.get("/validate")
def validate_form():
    return render("signing/validate.html", report=None)


@bp.post("/validate")
def validate_upload():
    sctx = _ctx()
    try:
        limits.allow_validation(sctx, request.remote_addr or "")  # per client address, before the upload is read
        found = sctx.validate(_upload())
    except Problem as problem:
        return refused("signing/validate.html", problem, report=None)
    return render("signing/validate.html", report=_report_view(found))
