"""Pages of the licence library: the holder's own pages and the public verification pages.

For the holder (signed in through the identity provider's people directory, at
the real-name level at least; ``core.people``):

* ``GET /licences``: every licence of every holder the person may act for
  (themself, the enterprises they represent or are an agent of), one section each.
* ``GET /licences/show/<id>``: 亮证, a short-lived signed QR code
  (:mod:`licenses.qrpayload`, kind ``show``) with a countdown.
* ``GET /licences/file/<id>``: the sealed file of one's own licence (audited).
* ``GET /licences/access``: who looked (the access log, :mod:`licenses.accesslog`).

Public:

* ``GET /licences/verify/<id>`` (what a licence's status URL opens; ``?copy=`` for a
  stamped copy) and ``GET /licences/verify`` (enter an identifier by hand);
* ``GET|POST /licences/v``: the offline payload of a scanned QR code. The code
  carries it in the URL's fragment, which a browser never sends; a small static
  script (no inline script: see ``core.web.security``) posts it to this page;
* ``GET|POST /licences/receipts/check``: check a use receipt an approval system got;
* ``GET /licences/grants``: every standing grant.

Another holder's licence answers 404, the same as a licence that does not exist,
so the pages do not tell who holds what. A revoked licence is a fact shown in
plain words (a red 已吊销), never an error page. Nothing here changes a licence;
the forms only read, so they need no CSRF token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from flask import Blueprint, Response, redirect, render_template, request
from flask_babel import gettext
from markupsafe import Markup

from core import audit, web
from core import db as core_db
from core.people import CREDIT_CODE, RESIDENT_ID, HolderRef, SignedIn
from core.problems import Problem
from core.web import N_
from core.web import errors as web_errors
from licenses import accesslog, catalogue, copies, grants, issuers, library, lifecycle, privacy, qrpayload, receipts
from licenses import context as licences_context
from licenses import requests as licence_requests
from licenses.context import LicencesContext
from licenses.models import Issuer, Licence
from licenses.signer import TokenRefused

bp = Blueprint("licences_pages", __name__, template_folder="templates", static_folder="static", static_url_path="/licences-static")
web.pages(bp, form_action="'self'")

REALNAME_ACR = "urn:hallmark:loa:2"
REALNAME_PAGE = "/account/verify"  # the identity provider's real-name verification page
CHINA = lifecycle.TIMEZONE  # every time on these pages is China Standard Time, the zone validity dates count in
ACCESS_LIMIT = 200
MAX_TOKEN_FORM = 8192

# Words a resident understands, per state (lifecycle.STATES); msgids of this package's catalogue.
STATE_WORDS = {
    lifecycle.VALID: N_("Valid"),
    lifecycle.SUSPENDED: N_("Suspended"),
    lifecycle.REVOKED: N_("Revoked"),
    lifecycle.WITHDRAWN: N_("Withdrawn"),
    lifecycle.CANCELLED: N_("Cancelled"),
    lifecycle.EXPIRED: N_("Expired"),
    lifecycle.SUPERSEDED: N_("Replaced by a newer version"),
}
STATE_MEANING = {
    lifecycle.VALID: N_("This licence is valid."),
    lifecycle.SUSPENDED: N_("The issuing department has suspended this licence. It cannot be used until the suspension is lifted."),
    lifecycle.REVOKED: N_("The issuing department revoked this licence as a penalty. It is no longer valid."),
    lifecycle.WITHDRAWN: N_("The issuing department withdrew this licence. It is no longer valid."),
    lifecycle.CANCELLED: N_("This licence was cancelled. It is no longer valid."),
    lifecycle.EXPIRED: N_("This licence has passed its end date. It is no longer valid."),
    lifecycle.SUPERSEDED: N_("A newer version of this licence replaced this one. Check the newer version."),
}
STATE_TONE = {lifecycle.VALID: "ok", lifecycle.SUSPENDED: "warn", lifecycle.SUPERSEDED: "warn", lifecycle.EXPIRED: "warn"}
MODE_WORDS = {
    "lookup": N_("Looked it up by its identifier"),
    "query": N_("Searched for the holder's licences"),
    "compare": N_("Compared values (nothing shown to them)"),
    "read": N_("Read the licence's contents"),
    "copy": N_("Downloaded a stamped copy"),
    "verify": N_("Checked a licence file"),
    "qr": N_("Scanned a QR code"),
}
ROUTE_WORDS = {
    "consent": N_("with your consent"),
    "grant": N_("under a standing grant"),
    "none": N_("without permission (refused)"),
}
RESULT_WORDS = {
    "ok": N_("answered"),
    "found": N_("answered"),
    "match": N_("all values matched"),
    "no_match": N_("some values did not match"),
    "mismatch": N_("some values did not match"),
    "not_found": N_("nothing found"),
    "no_grant": N_("refused: no permission"),
    "refused": N_("refused"),
}
GRANT_MODES = {
    "compare": N_("compare values only"),
    "read": N_("read the contents"),
    "copy": N_("download stamped copies"),
    "issue": N_("issue licences"),
}
QR_MESSAGES = {
    "expired_token": N_("This QR code has expired. Ask the holder to show a fresh one."),
    "forged_token": N_("This QR code was not issued by this licence library, or it was altered. Do not rely on it."),
    "wrong_token_type": N_("This is not a licence QR code."),
    "malformed_token": N_("This is not a licence QR code."),
}
NO_PEOPLE = N_("Signing in is not available on this site, so licences cannot be shown here.")
PROBLEM_MESSAGES = {
    "unknown_licence": N_("You hold no licence with this identifier. Choose one from your list."),
    "no_file": N_("The file of this licence is not ready yet. Try again later."),
}


def _ctx() -> LicencesContext:
    return licences_context.current()


@bp.record_once
def _on_register(setup):
    web.landing_link(
        setup.app, "people", "/licences", N_("My licences"), N_("Your electronic licences, show one at a counter, and who looked."), 40
    )
    web.landing_link(
        setup.app, "documents", "/licences/verify", N_("Verify a licence"), N_("Is an electronic licence genuine and still valid?"), 30
    )
    web.landing_link(setup.app, "developers", "/licences/grants", N_("Standing grants"), N_("Which systems may check which licences."), 30)


@bp.errorhandler(Problem)
def _problem(problem: Problem):
    """A problem from the services as a page in the person's language (problem+json for a client that asks for it)."""
    if not web_errors.wants_html():
        return problem.response()
    message = PROBLEM_MESSAGES.get(problem.extensions.get("code"))
    return web_errors.page(problem.status, gettext(message) if message else None, back="/licences")


# --------------------------------------------------------------------------- helpers


def china_time(value) -> str:
    """A moment as China Standard Time (``2026-12-06 13:05``); ISO text (the access log's) or a datetime."""
    if not value:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def render(template: str, status: int = 200, **values):
    return render_template(template, china_time=china_time, states=STATE_WORDS, **values), status


def _not_found():
    return Problem(404, "Not Found", "there is no licence with this identifier that you hold", code="unknown_licence")


def _here() -> str:
    query = request.query_string.decode("latin-1")
    return request.path + ("?" + query if query else "")


def _level(acr: str) -> int:
    found = re.fullmatch(r"urn:hallmark:loa:(\d)", acr or "")
    return int(found.group(1)) if found else 0


@dataclass
class Holder:
    """One holder the signed-in person acts for, on a page: who, and their licences."""

    ref: HolderRef
    anchor: str
    licences: list


def _signed_in():
    """(the person, None) or (None, the response to give instead: a sign-in or step-up redirect)."""
    directory = _ctx().people
    if directory is None:
        raise web.Refusal(NO_PEOPLE, code="no_people", status=503)
    me: SignedIn | None = directory.signed_in()
    if me is None:
        return None, redirect(directory.login_url(_here()), 302)
    if me.holders and _level(me.acr) < _level(REALNAME_ACR):
        return None, redirect(directory.login_url(_here(), REALNAME_ACR), 302)
    return me, None


def _own(db, me: SignedIn, identifier: str) -> Licence:
    """A licence of one of the person's holders; 404 for a bad, unknown or someone else's identifier."""
    try:
        licence = library.by_identifier(db, identifier)
    except Problem as problem:
        if problem.extensions.get("code") == "bad_identifier":
            raise _not_found() from None
        raise
    if licence.holder_hash not in {h.lookup_hash for h in me.holders}:
        raise _not_found()
    return licence


def _view(ctx: LicencesContext, db, licence: Licence) -> dict:
    """What a page shows of a licence (masked holder; no face fields)."""
    return library.describe(ctx, db, licence)


def _client_names(client_ids) -> dict[str, str]:
    """Approval systems' display names by client id, from the identity provider (the id itself when it has none)."""
    directory = _ctx().people
    wanted = sorted({c for c in client_ids if c})
    names = directory.client_names(wanted) if directory is not None and wanted else {}
    return {c: names.get(c) or c for c in wanted}


def _holder_kind(code_type: str) -> str:
    return (
        gettext("Resident identity number")
        if code_type == RESIDENT_ID
        else gettext("Unified social credit code")
        if code_type == CREDIT_CODE
        else ""
    )


# --------------------------------------------------------------------------- the holder's pages


@bp.get("/licences")
def mine():
    me, elsewhere = _signed_in()
    if elsewhere is not None:
        return elsewhere
    ctx = _ctx()
    holders = []
    with core_db.read_only(ctx.sessions) as db:
        for n, ref in enumerate(me.holders, start=1):
            rows = library.by_holder_hash(db, ref.lookup_hash)
            holders.append(Holder(ref, f"holder-{n}", [_view(ctx, db, row) for row in rows]))
        # Requests for missing licences (索取, licenses.request_pages): the list, the answers' notices and the form.
        asks = licence_requests.for_holders(db, [ref.lookup_hash for ref in me.holders])
        ask_types, ask_issuers = (catalogue.all_types(db), issuers.all_issuers(db)) if me.holders else ([], [])
    return render(
        "licenses/mine.html",
        me=me,
        holders=holders,
        holder_kind=_holder_kind,
        realname_page=REALNAME_PAGE,
        asks=asks,
        ask_types=ask_types,
        ask_issuers=ask_issuers,
        today=lifecycle.today(),
    )


@bp.get("/licences/show/<identifier>")
def show(identifier):
    """亮证: a QR code valid for minutes, signed, naming the licence and the masked holder."""
    me, elsewhere = _signed_in()
    if elsewhere is not None:
        return elsewhere
    ctx = _ctx()
    web.allow(scripts=True)  # the countdown (a static file)
    lifetime = timedelta(seconds=ctx.settings.show_qr_seconds)
    with core_db.transaction(ctx.sessions) as db:
        licence = _own(db, me, identifier)
        view = _view(ctx, db, licence)
        status = lifecycle.status(licence)
        now = datetime.now(UTC)
        text = None
        if status.usable:  # a counter must not be shown a code for a licence that no longer counts
            text = qrpayload.payload(
                ctx,
                identifier=licence.identifier,
                type_code=licence.type_code,
                issuer_code=licence.issuer_code,
                holder_masked=licence.holder_masked,
                holder_name=privacy.public_name(licence.holder_type, licence.holder_name),
                valid_from=licence.valid_from,
                valid_until=licence.valid_until,
                kind="show",
                lifetime=lifetime,
                now=now,
            )
            audit.record(
                db,
                actor=f"account:{me.account_id}",
                action="licences.shown",
                target=licence.identifier,
                details={"seconds": ctx.settings.show_qr_seconds},
            )
    svg = Markup(qrpayload.qr_svg(text, label=gettext("QR code of %(name)s", name=view["type"]["name"]))) if text else None
    return render(
        "licenses/show.html",
        licence=view,
        qr=svg,
        seconds=int(lifetime.total_seconds()),
        expires_clock=(now + lifetime).astimezone(CHINA).strftime("%H:%M:%S") if text else "",
    )


@bp.get("/licences/file/<identifier>")
def file(identifier):
    """The sealed file of one's own licence; every download is in the audit trail."""
    me, elsewhere = _signed_in()
    if elsewhere is not None:
        return elsewhere
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        licence = _own(db, me, identifier)
        pdf = licence.pdf
        if pdf is None:
            raise Problem(404, "Not Found", "this licence's file is not ready", code="no_file")
        audit.record(
            db, actor=f"account:{me.account_id}", action="licences.file.downloaded", target=licence.identifier, details={"by": "holder"}
        )
        name = f"licence-{licence.serial}-{licence.version:03d}.pdf"
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


@bp.get("/licences/access")
def access():
    """谁查看了我的证照: the access log entries about any holder the person acts for."""
    me, elsewhere = _signed_in()
    if elsewhere is not None:
        return elsewhere
    ctx = _ctx()
    names = {ref.lookup_hash: ref for ref in me.holders}
    entries = []
    with core_db.read_only(ctx.sessions) as db:
        types = {row.code: row.name for row in library.type_rows(db)}
        rows = accesslog.for_holder(db, list(names), ACCESS_LIMIT)
        clients = _client_names(row.client_id for row in rows)
        for row in rows:
            entries.append(
                {
                    "seq": row.seq,
                    "at": china_time(row.at),
                    "client": clients.get(row.client_id, row.client_id),
                    "client_id": row.client_id,
                    "holder": names.get(row.holder_hash),
                    "identifier": row.identifier,
                    "type": types.get(row.type_code, row.type_code),
                    "route": ROUTE_WORDS.get(row.route),
                    "mode": MODE_WORDS.get(row.mode, row.mode),
                    "purpose": row.purpose,
                    "matter": row.matter,
                    "fields": accesslog.fields_of(row),
                    "result": RESULT_WORDS.get(row.result),
                    "result_code": row.result,
                    "hash": row.hash,
                }
            )
    return render("licenses/access.html", me=me, entries=entries, limit=ACCESS_LIMIT)


# --------------------------------------------------------------------------- public pages


def _verification(ctx: LicencesContext, db, licence: Licence) -> dict:
    view = _view(ctx, db, licence)
    view["holder"]["name"] = privacy.public_name(licence.holder_type, licence.holder_name)  # a public page
    state = view["status"]["state"]
    view["state_tone"] = STATE_TONE.get(state, "bad")
    view["state_meaning"] = STATE_MEANING[state]
    newest = licence
    seen = 0
    while newest.successor and seen < 1000:  # the end of the version chain: the one to use now
        newer = db.get(Licence, newest.successor)
        if newer is None:
            break
        newest, seen = newer, seen + 1
    view["newest"] = newest.identifier if newest is not licence else None
    return view


def _copy_status(ctx: LicencesContext, identifier: str, copy_id: str) -> dict | None:
    """A stamped copy's standing (``?copy=``): current or expired, and whether it can be used now."""
    if not copy_id:
        return None
    try:
        found = copies.copy_status(ctx, copy_id[:100])
    except Problem:
        return {"unknown": True}
    if found["identifier"] != identifier:  # a copy of another licence: say nothing about it here
        return {"unknown": True}
    return found


@bp.get("/licences/verify")
def verify_lookup():
    """An identifier typed in by hand: on to its page."""
    identifier = (request.args.get("id") or "").strip()[:200]
    if identifier:
        return redirect("/licences/verify/" + quote(identifier, safe=""), 303)
    return render("licenses/verify.html", licence=None)


@bp.get("/licences/verify/<identifier>")
def verify(identifier):
    """A licence's standing in plain words; a wrong identifier is a readable 422 page, an unknown one 404."""
    ctx = _ctx()
    try:
        with core_db.read_only(ctx.sessions) as db:
            licence = library.by_identifier(db, identifier)
            view = _verification(ctx, db, licence)
    except Problem as problem:
        code = problem.extensions.get("code")
        if code == "bad_identifier":
            message = gettext("This is not a valid licence identifier. It was mistyped or altered: check it, or scan the QR code again.")
        elif code == "unknown_licence":
            message = gettext("No licence in this library has this identifier. Check it, or scan the QR code again.")
        else:
            raise
        return render("licenses/verify.html", problem.status, licence=None, error=message, reason=problem.detail, entered=identifier[:200])
    return render("licenses/verify.html", licence=view, copy=_copy_status(ctx, view["identifier"], request.args.get("copy", "").strip()))


@bp.route("/licences/v", methods=["GET", "POST"])
def offline():
    """A scanned QR code: GET serves the page whose script posts the fragment back; POST checks it."""
    web.allow(scripts=True)
    if request.method == "GET":
        return render("licenses/offline.html", claims=None)
    text = (request.form.get("code") or "").strip()[: MAX_TOKEN_FORM + 200]
    ctx = _ctx()
    try:
        claims = qrpayload.read(ctx, text)
    except TokenRefused as refused:
        message = QR_MESSAGES.get(refused.code)
        return render(
            "licenses/offline.html", refused.status, claims=None, refused=refused.code, error=gettext(message) if message else str(refused)
        )
    with core_db.read_only(ctx.sessions) as db:
        licence = db.get(Licence, claims["identifier"])
        live = _verification(ctx, db, licence) if licence is not None else None
        issuer = db.get(Issuer, claims["issuer_code"])
        try:
            type_name = catalogue.get(db, claims["type_code"]).name
        except Problem:
            type_name = claims["type_code"]
    if licence is not None:  # a file's code may name a person in full: this page is public
        claims["holder_name"] = privacy.public_name(licence.holder_type, claims["holder_name"])
    claims["issuer_name"] = issuer.name if issuer else claims["issuer_code"]
    claims["type_name"] = type_name
    claims["expires"] = china_time(datetime.fromtimestamp(claims["expires_at"], UTC))
    return render("licenses/offline.html", claims=claims, live=live)


RECEIPT_MESSAGES = {
    "unknown_entry": N_("The receipt is signed by the licence library, but the access log has no such entry."),
    "entry_changed": N_(
        "The receipt is signed by the licence library, but its access-log entry no longer matches it: the log was altered."
    ),
    "forged_token": N_("This receipt was not signed by the licence library, or it was changed."),
    "wrong_token_type": N_("This is a genuine token of the licence library, but not a use receipt."),
    "malformed_token": N_("This is not a use receipt. Paste the whole receipt: three parts separated by dots."),
}


@bp.route("/licences/receipts/check", methods=["GET", "POST"])
def receipt_check():
    """Paste a use receipt (a JWS an approval system got for one access) and see whether it is genuine and logged."""
    entry = request.args.get("entry") or ""
    entry = entry if re.fullmatch(r"[0-9a-f]{64}", entry) else ""
    if request.method == "GET":
        return render("licenses/receipt.html", result=None, entry=entry)
    token = (request.form.get("receipt") or "").strip()[:MAX_TOKEN_FORM]
    ctx = _ctx()
    with core_db.read_only(ctx.sessions) as db:
        result = receipts.check(ctx, db, token)
    claims = result.get("receipt") or {}
    message = RECEIPT_MESSAGES.get(result["code"])
    shown = {
        "valid": result["valid"],
        "code": result["code"],
        "message": gettext(message) if message else result.get("reason", ""),
        "seq": claims.get("seq"),
        "hash": claims.get("hash"),
        "at": china_time(claims.get("at")) if isinstance(claims.get("at"), str) else "",
        "client": _client_names([claims["client"]]).get(claims["client"]) if isinstance(claims.get("client"), str) else None,
        "purpose": claims.get("purpose"),
        "matter": claims.get("matter"),
        "mode": MODE_WORDS.get(claims.get("mode")),
        "other_entry": bool(entry and claims.get("hash") and claims.get("hash") != entry),
    }
    return render("licenses/receipt.html", 200 if result["valid"] else 422, result=shown, entry=entry)


@bp.get("/licences/grants")
def grants_page():
    """Every standing grant: which system may reach which licence type, how, and for which matters."""
    ctx = _ctx()
    with core_db.read_only(ctx.sessions) as db:
        types = {row.code: row.name for row in library.type_rows(db)}
        active = grants.active(db)
    clients = _client_names(g.client_id for g in active)
    rows = [
        {
            "client": clients.get(g.client_id, g.client_id),
            "client_id": g.client_id,
            "type": types.get(g.type_code, g.type_code),
            "mode": GRANT_MODES.get(g.mode, g.mode),
            "matters": grants.matters_of(g),
            "since": china_time(g.created_at),
        }
        for g in active
    ]
    return render("licenses/grants.html", grants=rows)
