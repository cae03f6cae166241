"""Sharing licences with approval systems: who may see what, on every call, and the log and receipt of each access.

Every call states its ``purpose`` (at most 200 characters) and the ``matter``
(事项) it serves, and is allowed by one of two routes, checked each time:

(a) **consent**: the access token carries an RFC 9396 detail of type
    ``hallmark_licence`` (``licenses.consent``) that covers the licence type, the
    mode, the matter and the purpose, has not expired, and was granted by the
    holder concerned (``core.people.PeopleDirectory.holders_of_token``);
(b) **grant**: the token's client holds a standing grant (``licenses.grants``)
    for the type, mode and matter.

With neither, a 403 problem ``no_grant`` says what to ask for (the detail to
request, or the grant to apply for); a consent that covers the call but has
ended is ``consent_expired``. A token the identity provider no longer honours
(revoked, session ended, client removed) is a 401.

Modes: ``compare`` (the default: claimed values in, match or no match out, or
just the licence's status), ``read`` (the face, sensitive fields included) and
``copy`` (a stamped copy). Every access that reached a licence or a holder,
refused ones included, is appended to the access log (``licenses.accesslog``)
and answered with its signed receipt (``licenses.receipts``). A licence's state
(revoked, suspended, expired, superseded) is part of the answer, never an error.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select

from core import audit
from core.db import read_only, transaction_connection
from core.people import HolderRef
from core.problems import Problem
from licenses import accesslog, catalogue, consent, grants, library, lifecycle, privacy, qrpayload, receipts, signer
from licenses.catalogue import TypeView
from licenses.context import LicencesContext
from licenses.issuance import check_holder, holder_hash
from licenses.models import Licence

MAX_CLAIMS = 40
MAX_VALUE_CHARS = 500
LOOKUP_MODES = (grants.COMPARE, grants.READ)  # what a lookup, query or QR may ask for (copy has its own call)


# -- the caller and what it asks ---------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who calls: the token's client, and the holder consents the token carries (with the holders they were granted by)."""

    client_id: str
    details: tuple[dict, ...] = ()
    holders: tuple[HolderRef, ...] = ()

    @property
    def has_consent(self) -> bool:
        return bool(self.details)


@dataclass(frozen=True)
class Use:
    """What a call says about itself: why, for which matter, in which mode."""

    purpose: str
    matter: str
    mode: str = grants.COMPARE


@dataclass
class Route:
    name: str  # consent | grant
    detail: dict | None = None
    grant_id: int | None = None
    restricted_to: str | None = None  # a consent for one licence only


@dataclass
class Access:
    """An access as logged: its entry and receipt, for the answer."""

    seq: int
    route: str
    receipt: str
    extra: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"seq": self.seq, "route": self.route}


def caller_of(ctx: LicencesContext, claims: dict) -> Caller:
    """The caller behind a checked access token; a 401 problem when the identity provider no longer honours it."""
    client_id = str(claims.get("client_id") or claims.get("sub") or "")
    people = ctx.people
    if people is not None:
        reason = people.token_inactive(claims)
        if reason:
            raise Problem(
                401,
                "Unauthorized",
                f"the access token is no longer valid: {reason}",
                code="token_inactive",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token", error_description="the access token is no longer valid"'},
            )
    details = tuple(d for d in claims.get("authorization_details") or () if isinstance(d, dict) and d.get("type") == consent.TYPE)
    holders = tuple(people.holders_of_token(claims)) if details and people is not None else ()
    return Caller(client_id=client_id, details=details, holders=holders)


def use_of(purpose: object, matter: object, mode: object = None, *, modes: tuple[str, ...] = LOOKUP_MODES) -> Use:
    """The checked purpose, matter and mode of a call (422 problems naming what is wrong)."""
    checked_mode = grants.check_mode(mode if mode not in (None, "") else grants.COMPARE, allowed=modes)
    return Use(purpose=grants.check_purpose(purpose), matter=grants.check_matter(matter), mode=checked_mode)


# -- who may see what --------------------------------------------------------------------------


def _same_text(a: str, b: str) -> bool:
    return " ".join(unicodedata.normalize("NFKC", a or "").split()) == " ".join(unicodedata.normalize("NFKC", b or "").split())


def _detail_covers(detail: dict, type_code: str, use: Use) -> bool:
    return (
        type_code in (detail.get("datatypes") or ())
        and any(grants.covers(action, use.mode) for action in detail.get("actions") or (grants.COMPARE,))
        and _same_text(detail.get("matter", ""), use.matter)
    )


def _what_to_ask(caller: Caller, type_code: str, use: Use, identifier: str | None) -> dict:
    detail = {"type": consent.TYPE, "datatypes": [type_code], "actions": [use.mode], "matter": use.matter, "purpose": use.purpose}
    if identifier:
        detail["identifier"] = identifier
    return {
        "authorization_details": [detail],
        "grant": {"client_id": caller.client_id, "type": type_code, "mode": use.mode, "matters": [use.matter]},
    }


def decide(ctx: LicencesContext, db, caller: Caller, type_code: str, use: Use, *, holder: str, identifier: str | None = None) -> Route:
    """The route that allows this call, or a 403 problem (``no_grant``, ``consent_expired``) saying what to ask for.

    ``holder`` is the lookup hash of the holder concerned; ``identifier`` the licence, when one is.
    """
    expired = purpose_differs = None
    own = {h.lookup_hash for h in caller.holders}
    now = int(time.time())
    for detail in caller.details:
        if not _detail_covers(detail, type_code, use) or holder not in own:
            continue
        if identifier is not None and detail.get("identifier") not in (None, identifier):
            continue
        if not isinstance(detail.get("expires_at"), int) or detail["expires_at"] <= now:
            expired = detail
            continue
        if not _same_text(detail.get("purpose", ""), use.purpose):
            purpose_differs = detail
            continue
        return Route("consent", detail=detail, restricted_to=detail.get("identifier"))
    grant = grants.allowed(db, caller.client_id, type_code, use.mode, use.matter)
    if grant is not None:
        return Route("grant", grant_id=grant.id)
    ask = _what_to_ask(caller, type_code, use, identifier)
    if expired is not None:
        raise Problem(
            403,
            "Forbidden",
            "the holder's consent for this matter has ended; ask the holder again (a new authorization request with the same "
            "authorization_details) or apply for a standing grant",
            code="consent_expired",
            expired_at=expired.get("expires_at"),
            ask_for=ask,
        )
    if purpose_differs is not None:
        raise Problem(
            403,
            "Forbidden",
            f"the holder consented for the purpose {purpose_differs.get('purpose', '')!r}, not for this one; "
            "state that purpose, or ask the holder for this one",
            code="no_grant",
            ask_for=ask,
        )
    raise Problem(
        403,
        "Forbidden",
        f"client {caller.client_id!r} has neither the holder's consent nor a standing grant to {use.mode} licences of type "
        f"{type_code} for the matter {use.matter!r}. Ask the holder: put ask_for.authorization_details in your OpenID Connect "
        f"request; or apply for a standing grant: hallmark licences grant add {caller.client_id} {type_code} --mode {use.mode} "
        f"--matter {use.matter!r}",
        code="no_grant",
        ask_for=ask,
    )


# -- the log -----------------------------------------------------------------------------------


def _log(
    ctx: LicencesContext,
    caller: Caller,
    *,
    route: str,
    holder: str,
    identifier: str = "",
    type_code: str = "",
    mode: str,
    use: Use,
    fields: list[str] | tuple[str, ...] = (),
    result: str,
    refusal: Problem | None = None,
    comparison: dict | None = None,
) -> Access:
    def append(db):
        return accesslog.append(
            db,
            client_id=caller.client_id,
            holder_hash=holder,
            identifier=identifier,
            type_code=type_code,
            route=route,
            mode=mode,
            purpose=use.purpose,
            matter=use.matter,
            fields=list(fields),
            result=result,
        )

    if refusal is None:
        # An answered access writes one chain entry: a Core transaction on the engine, no ORM session needed.
        with transaction_connection(ctx.sessions) as connection:
            entry = append(connection)
    else:
        with ctx.sessions() as db, db.begin():
            entry = append(db)
            # A refused access is also a security event: who reached for what without the right.
            audit.record(
                db,
                actor=f"client:{caller.client_id}",
                action="licences.access.refused",
                target=identifier or type_code,
                details={"code": result, "mode": use.mode, "matter": use.matter, "seq": entry.seq},
            )
    return Access(seq=entry.seq, route=route, receipt=receipts.issue(ctx, entry, comparison))


def _allowed_or_logged(
    ctx: LicencesContext, db, caller: Caller, type_code: str, use: Use, *, holder: str, identifier: str | None, mode: str
) -> Route:
    """``decide``; a refusal is logged (with its receipt in the problem) before it is raised."""
    try:
        return decide(ctx, db, caller, type_code, use, holder=holder, identifier=identifier)
    except Problem as refusal:
        db.rollback()
        access = _log(
            ctx,
            caller,
            route="none",
            holder=holder,
            identifier=identifier or "",
            type_code=type_code,
            mode=mode,
            use=use,
            result=refusal.extensions.get("code", "refused"),
            refusal=refusal,
        )
        refusal.extensions.update(access=access.as_json(), receipt=access.receipt)
        raise


def _answer(body: dict, access: Access) -> dict:
    return {**body, "access": access.as_json(), "receipt": access.receipt}


def _face_fields(definition: TypeView, wanted: list[str] | None) -> list[str]:
    names = [f.name for f in definition.fields]
    if wanted is None:
        return names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise Problem(
            422, "Unprocessable Content", f"not face fields of type {definition.code}: {', '.join(unknown)[:200]}", code="bad_field"
        )
    return [n for n in names if n in wanted]


# -- the calls ---------------------------------------------------------------------------------


def lookup(ctx: LicencesContext, caller: Caller, identifier: str, use: Use, *, fields: list[str] | None = None) -> dict:
    """A licence by identifier: its description and status; in ``read`` mode also its face (``fields``: only those)."""
    identifier = library.check_identifier(identifier)
    with read_only(ctx.sessions) as db:
        licence = lifecycle.find(db, identifier)
        definition = catalogue.get(db, licence.type_code)
        shown = _face_fields(definition, fields) if use.mode == grants.READ else []
        route = _allowed_or_logged(
            ctx, db, caller, licence.type_code, use, holder=licence.holder_hash, identifier=identifier, mode=_logged_mode("lookup", use)
        )
        body = (
            library.describe(ctx, db, licence, face="full" if shown else "none", fields=shown or None)
            if use.mode == grants.READ
            else library.describe_minimal(ctx, db, licence)
        )
        holder = licence.holder_hash
    access = _log(
        ctx,
        caller,
        route=route.name,
        holder=holder,
        identifier=identifier,
        type_code=definition.code,
        mode=_logged_mode("lookup", use),
        use=use,
        fields=shown,
        result="answered",
    )
    return _answer({"licence": body}, access)


def _logged_mode(operation: str, use: Use) -> str:
    return grants.READ if use.mode == grants.READ else operation


def _holder_of(caller: Caller, definition: TypeView, holder_type: str | None, holder_code: str | None, ctx: LicencesContext) -> str:
    """The lookup hash of the holder a call is about: the one the query names; under consent with none named, the token's.

    A holder named in the query is never swapped for the token's: if the consent is another person's, the call needs a
    grant (the route check decides), instead of silently answering about the wrong holder.
    """
    if caller.has_consent and not holder_code:
        own = [h for h in caller.holders if h.code_type == definition.holder_code_type]
        if not own:
            raise Problem(
                403,
                "Forbidden",
                f"this access token was not granted by a holder of {definition.name} ({definition.holder_kind})",
                code="no_holder",
            )
        return own[0].lookup_hash
    if not holder_type or not holder_code:
        raise Problem(422, "Unprocessable Content", "holder_type (111 or 001) and holder are required", code="bad_holder")
    if holder_type != definition.holder_code_type:
        raise Problem(
            422,
            "Unprocessable Content",
            f"licences of type {definition.code} are held by {definition.holder_kind}s: holder_type must be {definition.holder_code_type}",
            code="bad_holder",
        )
    code, _kind, _masked = check_holder(holder_type, holder_code)
    return holder_hash(ctx, holder_type, code)


def query(
    ctx: LicencesContext,
    caller: Caller,
    *,
    type_code: str,
    use: Use,
    holder_type: str | None = None,
    holder_code: str | None = None,
    fields: list[str] | None = None,
) -> dict:
    """A holder's licences of one type (every version, newest first), each with its status; in ``read`` mode with the face."""
    if not type_code:
        raise Problem(422, "Unprocessable Content", "type (a licence-type code) is required", code="bad_type")
    with read_only(ctx.sessions) as db:
        definition = catalogue.get(db, type_code)
        holder = _holder_of(caller, definition, holder_type, holder_code, ctx)
        shown = _face_fields(definition, fields) if use.mode == grants.READ else []
        route = _allowed_or_logged(ctx, db, caller, definition.code, use, holder=holder, identifier=None, mode=_logged_mode("query", use))
        rows = library.by_holder_hash(db, holder, definition.code)
        if route.restricted_to:
            rows = [row for row in rows if row.identifier == route.restricted_to]
        bodies = [
            library.describe(ctx, db, row, face="full" if shown else "none", fields=shown or None)
            if use.mode == grants.READ
            else library.describe_minimal(ctx, db, row)
            for row in rows
        ]
    access = _log(
        ctx,
        caller,
        route=route.name,
        holder=holder,
        identifier=bodies[0]["identifier"] if len(bodies) == 1 else "",
        type_code=definition.code,
        mode=_logged_mode("query", use),
        use=use,
        fields=shown,
        result="answered" if bodies else "none_found",
    )
    return _answer({"type": definition.code, "licences": bodies}, access)


def _normal(value: object) -> str:
    """A face value as compared: text NFKC-folded with runs of space made one; numbers and booleans by value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value))
    return " ".join(unicodedata.normalize("NFKC", str(value)).split())


def _claims(definition: TypeView, claims: object) -> dict:
    if not isinstance(claims, dict) or not claims:
        raise Problem(422, "Unprocessable Content", "claims must be an object of face field -> claimed value", code="bad_claims")
    if len(claims) > MAX_CLAIMS:
        raise Problem(422, "Unprocessable Content", f"at most {MAX_CLAIMS} claims per call", code="bad_claims")
    _face_fields(definition, list(claims))
    for name, value in claims.items():
        if not isinstance(value, (str, int, float, bool)) or (isinstance(value, str) and len(value) > MAX_VALUE_CHARS):
            raise Problem(
                422,
                "Unprocessable Content",
                f"claims.{name} must be text (at most {MAX_VALUE_CHARS} characters) or a number",
                code="bad_claims",
            )
    return claims


def _newest_usable(rows: list[Licence]) -> Licence | None:
    """The licence to compare against among a holder's versions: the newest valid one, else the newest."""
    for row in rows:
        if lifecycle.effective_state(row) == lifecycle.VALID:
            return row
    return rows[0] if rows else None


# What a comparison by identifier reads of a licence: its public face and what its status is made of, not the
# whole row (the ciphertexts, the provenance, the deferred PDF). A sensitive claim loads the full row to open it.
_COMPARED = select(
    Licence.identifier,
    Licence.type_code,
    Licence.holder_hash,
    Licence.face_public,
    Licence.state,
    Licence.state_reason,
    Licence.state_changed_at,
    Licence.successor,
    Licence.valid_from,
    Licence.valid_until,
).where(Licence.identifier == bindparam("identifier"))


def _compared_licence(db, identifier: str):
    row = db.connection().execute(_COMPARED, {"identifier": identifier}).first()
    return row if row is not None else lifecycle.find(db, identifier)  # the usual 404 problem


def compare(
    ctx: LicencesContext,
    caller: Caller,
    use: Use,
    *,
    claims: object,
    identifier: str | None = None,
    type_code: str | None = None,
    holder_type: str | None = None,
    holder_code: str | None = None,
) -> dict:
    """Claimed face values against a licence: ``match``, ``no_match`` or ``absent`` per field, nothing disclosed.

    The answer's receipt carries the result (``comparison``), so it is signed once, with the access.
    """
    with read_only(ctx.sessions) as db:
        if identifier:
            licence = _compared_licence(db, library.check_identifier(identifier))
            definition = catalogue.get(db, licence.type_code)
            holder = licence.holder_hash
        else:
            if not type_code:
                raise Problem(422, "Unprocessable Content", "name the licence: identifier, or type with the holder", code="bad_licence")
            definition = catalogue.get(db, type_code)
            holder = _holder_of(caller, definition, holder_type, holder_code, ctx)
            licence = None
        wanted = _claims(definition, claims)
        route = _allowed_or_logged(
            ctx, db, caller, definition.code, use, holder=holder, identifier=licence.identifier if licence else None, mode="compare"
        )
        if licence is None:
            rows = library.by_holder_hash(db, holder, definition.code)
            if route.restricted_to:
                rows = [row for row in rows if row.identifier == route.restricted_to]
            licence = _newest_usable(rows)
        if licence is not None:
            # The sensitive fields need the data key; comparing public ones only does not touch it.
            if any(name in definition.sensitive for name in wanted):
                face = privacy.open_face(ctx, db, lifecycle.find(db, licence.identifier), definition)
            else:
                face = library.public_face(licence)
            status = lifecycle.status(licence).as_json()
            found_identifier = licence.identifier
    if licence is None:
        access = _log(ctx, caller, route=route.name, holder=holder, type_code=definition.code, mode="compare", use=use, result="none_found")
        raise Problem(
            404,
            "Not Found",
            f"the holder has no licence of type {definition.code} in the library",
            code="unknown_licence",
            access=access.as_json(),
            receipt=access.receipt,
        )
    outcome = {}
    for name, value in wanted.items():
        present = face.get(name)
        if present is None or present == "":
            outcome[name] = "absent"
        else:
            outcome[name] = "match" if _normal(present) == _normal(value) else "no_match"
    all_match = all(v == "match" for v in outcome.values())
    # The receipt is the signed result: it names the licence, type, seq and time already, and carries this.
    access = _log(
        ctx,
        caller,
        route=route.name,
        holder=holder,
        identifier=found_identifier,
        type_code=definition.code,
        mode="compare",
        use=use,
        fields=list(outcome),
        result="match" if all_match else "no_match",
        comparison={"status": status["state"], "fields": outcome, "all_match": all_match},
    )
    return _answer(
        {"identifier": found_identifier, "type": definition.code, "status": status, "fields": outcome, "all_match": all_match}, access
    )


def scanned(ctx: LicencesContext, caller: Caller, text: object, use: Use, *, fields: list[str] | None = None) -> dict:
    """A scanned licence QR code: checked offline first (forged 422 ``bad_qr``, expired 422 ``qr_expired``), then looked up."""
    if not isinstance(text, str) or not text.strip():
        raise Problem(422, "Unprocessable Content", "qr is required: the text the QR code carries", code="bad_qr")
    try:
        found = qrpayload.read(ctx, text)
    except signer.Expired as exc:
        _qr_refused(ctx, caller, "qr_expired", use)
        raise Problem(
            422,
            "Unprocessable Content",
            "this licence QR code has expired: ask the holder to show a fresh one",
            code="qr_expired",
            expired_at=exc.expired_at,
        ) from None
    except signer.TokenRefused as exc:
        _qr_refused(ctx, caller, exc.code, use)
        raise Problem(422, "Unprocessable Content", f"this is not a genuine licence QR code: {exc}", code="bad_qr") from None
    answer = lookup(ctx, caller, found["identifier"], use, fields=fields)
    answer["qr"] = {"kind": found["kind"], "expires_at": found["expires_at"]}
    return answer


def _qr_refused(ctx: LicencesContext, caller: Caller, code: str, use: Use) -> None:
    # A forged or stale code reaches no licence we can vouch for, so it is not in a holder's log; it is audited.
    with ctx.sessions() as db, db.begin():
        audit.record(db, actor=f"client:{caller.client_id}", action="licences.qr.refused", details={"code": code, "matter": use.matter})


def type_fields(ctx: LicencesContext, code: str) -> dict:
    with read_only(ctx.sessions) as db:
        definition = catalogue.get(db, code)
    return {"type": definition.code, "name": definition.name, "name_en": definition.name_en, "fields": definition.fields_json()}


def stamped_copy(ctx: LicencesContext, caller: Caller, identifier: str, use: Use, *, until) -> tuple:
    """A stamped copy (加注件, ``licenses.copies``) for this call's matter and purpose, in ``copy`` mode: (copy, access)."""
    from licenses import copies

    identifier = library.check_identifier(identifier)
    with read_only(ctx.sessions) as db:
        licence = lifecycle.find(db, identifier)
        type_code, holder = licence.type_code, licence.holder_hash
        route = _allowed_or_logged(ctx, db, caller, type_code, use, holder=holder, identifier=identifier, mode="copy")
    # the band names the approval system as people know it; its id when the directory does not know it
    names = ctx.people.client_names([caller.client_id]) if ctx.people is not None else {}
    made = copies.make_copy(
        ctx,
        identifier,
        client_id=caller.client_id,
        client_name=names.get(caller.client_id, caller.client_id),
        purpose=use.purpose,
        matter=use.matter,
        until=until,
    )
    access = _log(
        ctx,
        caller,
        route=route.name,
        holder=holder,
        identifier=identifier,
        type_code=type_code,
        mode="copy",
        use=use,
        result="copy_made",
    )
    return made, access


def verify_upload(ctx: LicencesContext, caller: Caller, pdf: bytes, use: Use) -> dict:
    """The verdict on an uploaded file (``licenses.verification``); when it is one of our licences, the call needs a route."""
    from licenses import verification

    report = verification.verify_file(ctx, pdf)
    described = report.get("licence")
    if not described:
        return report  # not a licence of ours: nobody's data was reached
    with read_only(ctx.sessions) as db:
        licence = lifecycle.find(db, described["identifier"])
        type_code, holder, identifier = licence.type_code, licence.holder_hash, licence.identifier
        route = _allowed_or_logged(ctx, db, caller, type_code, use, holder=holder, identifier=identifier, mode="verify")
    access = _log(
        ctx,
        caller,
        route=route.name,
        holder=holder,
        identifier=identifier,
        type_code=type_code,
        mode="verify",
        use=use,
        # the column holds 20 characters: "genuine_but_superseded" is logged as its state
        result=str(report.get("verdict", "")).removeprefix("genuine_but_")[:20],
    )
    return _answer(report, access)
