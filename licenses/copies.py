"""Stamped copies (加注件): a licence file made again for one use, sealed, and answered *expired* after its date.

An approval system that must keep a licence file in its case records gets a copy,
not the licence: the face printed again with a band saying for whom, for which
matter and purpose, and until when (GB/T 36903's 加注 metadata: who, for what, until
when), sealed with the issuing department's seal. Its QR code carries the licence's
signed payload, expiring with the copy, whose status URL is the licence's
verification page with ``?copy=<id>`` (:func:`copy_url`), so a reader learns both the
copy's and the licence's standing (:func:`copy_status`).

As with issuing, the file is rendered and sealed before the one write transaction
(the record and its audit event), which checks the licence again: a licence
revoked in the meantime gets no copy.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from urllib.parse import quote

from core import audit
from core.db import read_only, utc_now
from core.problems import Problem
from licenses import catalogue, grants, issuers, library, lifecycle, privacy, qrpayload, rendering
from licenses.context import LicencesContext
from licenses.models import StampedCopy

MAX_CLIENT_NAME = 200
MAX_CLIENT_ID = 100
CURRENT, EXPIRED = "current", "expired"
COPY_PARAMETER = "copy"  # the verification page's query parameter naming a copy
_COPY_ID = re.compile(r"^[A-Za-z0-9_-]{16,32}$")


@dataclass
class Copy:
    """A sealed stamped copy, as handed to the client that asked for it."""

    copy_id: str
    identifier: str
    pdf: bytes
    until: date  # the last day it may be used (capped by the library's copy_days and the licence's own end date)
    document_id: str  # the signing record of the sealed file
    verify_url: str  # what its QR code's status URL opens

    @property
    def filename(self) -> str:
        return f"{self.identifier}-copy-{self.copy_id}.pdf"


def _unprocessable(detail: str, code: str) -> Problem:
    return Problem(422, "Unprocessable Content", detail, code=code)


def check_text(value, name: str, limit: int) -> str:
    """A required single line of printable text (it is printed on a sealed file), at most ``limit`` characters."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise _unprocessable(f"{name} is required", f"{name}_missing")
    if len(text) > limit:
        raise _unprocessable(f"{name} is at most {limit} characters", f"{name}_too_long")
    if not text.isprintable():
        raise _unprocessable(f"{name} must be printable text on one line", f"bad_{name}")
    return text


def last_day(ctx: LicencesContext, until: date, *, today: date, licence_until: date | None) -> date:
    """The copy's last day: as asked, but no later than ``copy_days`` from today nor than the licence's own end."""
    if not isinstance(until, date) or isinstance(until, datetime):
        raise _unprocessable("until must be a date (YYYY-MM-DD)", "bad_until")
    if until < today:
        raise _unprocessable(f"until ({until.isoformat()}) is in the past", "bad_until")
    capped = min(until, today + timedelta(days=ctx.settings.copy_days))
    if licence_until is not None:
        capped = min(capped, licence_until)
    return capped


def copy_note(*, client_name: str, matter: str, purpose: str, until: date) -> str:
    """The band printed across a copy (a document text: Chinese by nature, not translated), dated as the face is."""
    return f"仅供 {client_name} 办理 {matter} 使用 · 用途：{purpose} · 有效期至 {rendering.chinese_date(until)}"


def copy_url(ctx: LicencesContext, identifier: str, copy_id: str) -> str:
    """The licence's verification page, naming the copy (what a copy's QR code points a verifier to)."""
    return f"{ctx.verify_url(identifier)}?{COPY_PARAMETER}={quote(copy_id, safe='')}"


def _end_of(day: date) -> datetime:
    """The first moment after ``day`` in China Standard Time, the zone validity dates are counted in."""
    return datetime.combine(day + timedelta(days=1), time(0), lifecycle.TIMEZONE)


def make_copy(
    ctx: LicencesContext,
    identifier: str,
    *,
    client_id: str,
    client_name: str,
    purpose: str,
    matter: str,
    until: date,
    actor: str | None = None,
    today: date | None = None,
) -> Copy:
    """A sealed stamped copy of a usable licence for ``client_id``'s ``matter`` and ``purpose``, valid until ``until`` (capped).

    A licence that is not usable now (suspended, revoked, expired, superseded, ...) gets a 409
    ``wrong_state`` problem naming its state; bad text or dates get a 422. Whether the client may have a copy
    (a grant or the holder's consent in ``copy`` mode) is for the caller to decide (``licenses.sharing``).
    """
    client_id = check_text(client_id, "client_id", MAX_CLIENT_ID)
    client_name = check_text(client_name, "client_name", MAX_CLIENT_NAME)
    purpose = grants.check_purpose(purpose)  # the same checks (and codes) as every sharing call's purpose and matter
    matter = grants.check_matter(matter)
    actor = actor or f"client:{client_id}"
    today = today or lifecycle.today()
    with read_only(ctx.sessions) as db:  # on SQLite a plain session would hold the write lock while the face is opened
        licence = library.by_identifier(db, identifier)
        _usable(licence, today)
        definition = catalogue.get(db, licence.type_code)
        issuer = issuers.get(db, licence.issuer_code)
        seal_name = issuers.seal_name_for(db, issuer)
        face = privacy.mask_face(definition, privacy.open_face(ctx, db, licence, definition))
        identifier = licence.identifier
        facts = {
            "holder_name": licence.holder_name,
            "holder_masked": licence.holder_masked,
            "valid_from": licence.valid_from,
            "valid_until": licence.valid_until,
            "version": licence.version,
            "issued_on": licence.issued_at.astimezone(lifecycle.TIMEZONE).date(),
            "status_entry": (licence.status_list, licence.status_index) if licence.status_list is not None else None,
        }
    until = last_day(ctx, until, today=today, licence_until=facts["valid_until"])
    copy_id = secrets.token_urlsafe(16)
    status_url = copy_url(ctx, identifier, copy_id)
    lifetime = _end_of(until) - datetime.now(lifecycle.TIMEZONE)
    qr_text = qrpayload.payload(
        ctx,
        identifier=identifier,
        type_code=definition.code,
        issuer_code=issuer.credit_code,
        holder_masked=facts["holder_masked"],
        holder_name=privacy.public_name(definition.holder_code_type, facts["holder_name"]),
        valid_from=facts["valid_from"],
        valid_until=facts["valid_until"],
        kind="file",
        lifetime=max(lifetime, timedelta(seconds=1)),
        status_url=status_url,
        status_entry=facts["status_entry"],  # the licence's own entry: a revoked licence makes its copies fail too
    )
    pdf = rendering.render_face(
        definition,
        identifier=identifier,
        face=face,
        holder_name=facts["holder_name"],
        issuer_name=issuer.name,
        valid_from=facts["valid_from"],
        valid_until=facts["valid_until"],
        issued_on=facts["issued_on"],
        version=facts["version"],
        qr_text=qr_text,
        copy_note=copy_note(client_name=client_name, matter=matter, purpose=purpose, until=until),
    )
    sealed = rendering.seal_file(ctx.signing, pdf, seal_name=seal_name, actor=actor, reason=f"加注件 {identifier}")
    document_id = sealed.document.id
    with ctx.sessions() as db, db.begin():
        # Checked again: the licence may have been suspended or revoked while the file was sealed.
        _usable(lifecycle.find(db, identifier, for_update=True), today)
        db.add(
            StampedCopy(
                id=copy_id,
                identifier=identifier,
                client_id=client_id,
                client_name=client_name,
                purpose=purpose,
                matter=matter,
                valid_until=until,
                made_at=utc_now(),
                made_by=actor[:200],
                document_id=document_id,
                pdf_sha256=sealed.document.sha256,
            )
        )
        audit.record(
            db,
            actor=actor,
            action="licences.copy",
            target=identifier,
            details={
                "copy": copy_id,
                "client": client_id,
                "matter": matter,
                "purpose": purpose,
                "until": until.isoformat(),
                "document": document_id,
            },
        )
    return Copy(copy_id=copy_id, identifier=identifier, pdf=sealed.pdf, until=until, document_id=document_id, verify_url=status_url)


def _usable(licence, today: date) -> None:
    state = lifecycle.effective_state(licence, today)
    if state != lifecycle.VALID:
        raise Problem(
            409,
            "Conflict",
            f"only a valid licence can be copied; this one is {state}",
            code="wrong_state",
            state=state,
            identifier=licence.identifier,
        )


def find(db, copy_id: str) -> StampedCopy:
    """A copy's record, or a 404 problem ``unknown_copy`` (also for what cannot be a copy id)."""
    row = db.get(StampedCopy, copy_id) if isinstance(copy_id, str) and _COPY_ID.match(copy_id) else None
    if row is None:
        raise Problem(404, "Not Found", "there is no stamped copy with this id in the library", code="unknown_copy")
    return row


def copy_state(row: StampedCopy, today: date | None = None) -> str:
    """``current`` through its last day, ``expired`` after it."""
    return EXPIRED if (today or lifecycle.today()) > row.valid_until else CURRENT


def describe(row: StampedCopy, today: date | None = None) -> dict:
    """What may be said about a copy: what its band says, and whether it is still current."""
    state = copy_state(row, today)
    return {
        "copy_id": row.id,
        "identifier": row.identifier,
        "state": state,
        "expired": state == EXPIRED,
        "valid_until": row.valid_until.isoformat(),
        "client": {"id": row.client_id, "name": row.client_name},
        "matter": row.matter,
        "purpose": row.purpose,
        "made_at": row.made_at.isoformat(),
        "document_id": row.document_id,
    }


def copy_status(ctx: LicencesContext, copy_id: str, *, identifier: str | None = None, today: date | None = None) -> dict:
    """A copy's standing for the verification page: ``state`` ``current``/``expired``, and the licence's own status.

    ``usable`` is true only while the copy is current and the licence is valid. With ``identifier`` (the
    page's licence) a copy of another licence is a 404 too, as if unknown.
    """
    today = today or lifecycle.today()
    with read_only(ctx.sessions) as db:
        row = find(db, copy_id)
        if identifier is not None and row.identifier != identifier.strip():
            raise Problem(404, "Not Found", "there is no stamped copy with this id in the library", code="unknown_copy")
        licence = lifecycle.find(db, row.identifier)
        body = describe(row, today)
        status = lifecycle.status(licence, today)
        body["licence"] = {"identifier": licence.identifier, "version": f"{licence.version:03d}", "status": status.as_json()}
        body["usable"] = body["state"] == CURRENT and status.usable
        body["verify_url"] = copy_url(ctx, row.identifier, row.id)
    return body
