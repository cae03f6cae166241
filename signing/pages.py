"""Pages for people: the public verification page the seal's QR code opens, and the validation report.

* ``GET /verify/<id>``: is this a document Hallmark sealed or signed, who, when, and
  is the certificate still in good standing; ``POST /verify/<id>`` with a file
  says whether the upload is that document (the same bytes, or our signature
  intact in it) and shows its validation report.
* ``GET /validate`` and ``POST /validate``: the validation report of any PDF.

Nothing here changes state, so the forms need no CSRF token; uploads are read,
validated and forgotten. Identifiers are shown masked. Problems from the
services (not a PDF, too large, ...) become a readable page in the person's
language with the same status code.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlencode

from flask import Blueprint, g, render_template, request
from flask_babel import format_datetime, get_locale, gettext

from core.problems import Problem
from signing import context as signing_context
from signing import documents, report
from signing.context import SigningContext

bp = Blueprint("signing_pages", __name__, template_folder="templates")
TRANSLATIONS = Path(__file__).parent / "translations"
SUPPORTED = ("zh", "en")


def N_(message: str) -> str:
    """Mark a msgid for extraction; it is translated where it is shown."""
    return message


# Problem codes shown to people, as msgids (English; the catalogues translate them).
MESSAGES = {
    "not_a_pdf": N_("This file is not a PDF."),
    "encrypted": N_("This PDF is encrypted or protected by a password. Upload it without protection."),
    "corrupt": N_("This PDF is damaged and cannot be read."),
    "too_large": N_("This file is too large. At most %(limit)s MiB are accepted."),
    "no_file": N_("Choose a PDF file to upload."),
    "no_such_document": N_("No document has this verification code. Check the address or scan the QR code again."),
}


def install_translations(app, compile_catalogues) -> None:
    """Add this package's catalogues to Flask-Babel (``compile_catalogues`` comes from the composition root)."""
    directory = str(compile_catalogues(TRANSLATIONS))
    babel = app.extensions.get("babel")
    if babel is None:
        existing = app.config.get("BABEL_TRANSLATION_DIRECTORIES")
        app.config["BABEL_TRANSLATION_DIRECTORIES"] = ";".join(filter(None, [directory, existing]))
    elif directory not in babel.translation_directories:
        babel.translation_directories.insert(0, directory)


def _ctx() -> SigningContext:
    return signing_context.current()


def _lang() -> str:
    locale = get_locale()
    return locale.language if locale is not None and locale.language in SUPPORTED else "zh"


@bp.before_request
def _nonce():
    g.signing_nonce = secrets.token_urlsafe(16)


@bp.after_request
def _headers(response):
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{g.get('signing_nonce', 'none')}'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
    return response


def _when(iso: str | None) -> str:
    if not iso:
        return ""
    from datetime import datetime

    return format_datetime(datetime.fromisoformat(iso.replace("Z", "+00:00")), "medium")


def render(template: str, status: int = 200, **values):
    lang = _lang()
    links = {code: request.path + "?" + urlencode({"lang": code}) for code in SUPPORTED}
    body = render_template(
        template,
        lang=lang,
        html_lang={"zh": "zh-CN", "en": "en"}[lang],
        lang_links=links,
        nonce=g.get("signing_nonce", ""),
        when=_when,
        **values,
    )
    return body, status


def _problem_text(problem: Problem) -> str:
    code = problem.extensions.get("code")
    message = MESSAGES.get(code)
    if message is None:
        return problem.detail or problem.title
    return gettext(message, limit=_ctx().max_pdf_bytes // (1024 * 1024))


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


@bp.get("/verify/<document_id>")
def verify(document_id):
    sctx = _ctx()
    try:
        row = documents.get(sctx, document_id)
    except Problem as problem:
        return render("signing/verify.html", problem.status, error=_problem_text(problem), document=None)
    return render("signing/verify.html", document=documents.describe(sctx, row))


@bp.post("/verify/<document_id>")
def verify_upload(document_id):
    sctx = _ctx()
    try:
        row = documents.get(sctx, document_id)
    except Problem as problem:
        return render("signing/verify.html", problem.status, error=_problem_text(problem), document=None)
    described = documents.describe(sctx, row)
    try:
        comparison = documents.compare(sctx, row, _upload())
    except Problem as problem:
        return render("signing/verify.html", problem.status, error=_problem_text(problem), document=described)
    return render(
        "signing/verify.html",
        document=described,
        outcome=comparison.outcome,
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
        found = report.validate(sctx.ca, _upload(), limit=sctx.max_pdf_bytes, with_records=True)
    except Problem as problem:
        return render("signing/validate.html", problem.status, error=_problem_text(problem), report=None)
    return render("signing/validate.html", report=_report_view(found))
