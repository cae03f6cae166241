"""Real-name verification: binding an account to a person's resident ID.

Two ways in:

* online: the person gives name and resident ID; the ID is validated (GB 11643)
  and a population-registry adapter must confirm that name and ID belong
  together and that the record is current;
* at a service-centre counter: a clerk has seen the identity document in person
  and records who checked, where, when and which document.

Either way one resident ID is bound to at most one account (the unique keyed
hash in ``IdentityProofing``), the full ID is never stored, and every outcome,
refusals included, goes to the audit trail with the ID masked.

Registry adapters: :class:`EmbeddedRegistry` reads the ``RegistryPerson`` table
(filled by ``hallmark idp registry import`` or ``... registry demo``); production
points ``registry_url`` at the population registry's gateway and gets
:class:`HttpRegistry`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import requests
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit
from core import db as core_db
from core import http as core_http
from core.db import utc_now
from core.identifiers import (
    InvalidIdentifier,
    ResidentID,
    generate_resident_id,
    lookup_hash,
    mask_resident_id,
    validate_resident_id,
)
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import Account, IdentityProofing, RegistryPerson
from idp.people import accounts, sessions
from idp.settings import check_registry_url

log = logging.getLogger("hallmark.idp.realname")

MAX_NAME = 64
REGISTRY_TIMEOUT = 5.0  # seconds, for the HTTP adapter
REGISTRY_STATUSES = ("normal", "deceased", "cancelled")
# Documents a clerk may check at the counter (each carries the resident ID number).
DOCUMENTS = {
    "resident-card": N_("resident identity card"),
    "temporary-resident-card": N_("temporary resident identity card"),
    "household-register": N_("household register"),
}
# Failed online checks per account: 5 at once, then one every 10 minutes. The
# registry would otherwise answer "which name goes with this ID?" for anyone.
CHECK_BUCKET = (5, 1 / 600)


class ProofingRefusal(Refusal):
    pass


class RegistryUnavailable(Exception):
    """The registry could not be asked (network, timeout, bad answer); nothing was decided."""


# --------------------------------------------------------------------------- input


_DOTS = str.maketrans(dict.fromkeys("•‧・∙⋅.･", "·"))


def normalise_name(text: str) -> str:
    """Names compared after NFKC, without spaces, with every middle-dot variant as U+00B7 (阿依古丽·吐尔逊)."""
    return "".join(unicodedata.normalize("NFKC", text or "").split()).translate(_DOTS)


def clean_name(text: str) -> str:
    name = normalise_name(text)
    if not name:
        raise ProofingRefusal(N_("Enter the name as it is on the identity card."), code="name_missing")
    if len(name) > MAX_NAME:
        raise ProofingRefusal(N_("The name may have at most %(max)s characters."), code="name_too_long", max=MAX_NAME)
    if any(unicodedata.category(c)[0] in "CN" for c in name):
        raise ProofingRefusal(N_("The name may contain only letters and the middle dot."), code="name_characters")
    return name


def parse_resident_id(text: str) -> ResidentID:
    """A validated resident ID, or a refusal that says what is wrong with it (without repeating it)."""
    if not (text or "").strip():
        raise ProofingRefusal(N_("Enter the 18-character resident ID number."), code="resident_id_missing")
    try:
        return validate_resident_id(unicodedata.normalize("NFKC", text).replace(" ", ""))
    except InvalidIdentifier as exc:
        raise id_refusal(exc) from None


def id_refusal(exc: InvalidIdentifier) -> ProofingRefusal:
    """Translate a validation reason from ``core.identifiers`` into a message for people."""
    reason = exc.reason
    if reason.startswith("check character should be"):
        return ProofingRefusal(
            N_(
                "The resident ID number's last character (the check digit) does not match the others; one of the characters was probably mistyped."
            ),
            code="resident_id_checksum",
        )
    if reason.startswith(("must be 18 characters", "15-digit")):
        return ProofingRefusal(N_("A resident ID number has 18 characters."), code="resident_id_length")
    if "birth date" in reason or "birth year" in reason:
        return ProofingRefusal(
            N_("The birth date inside the resident ID number (characters 7-14) is not possible."), code="resident_id_birth_date"
        )
    if reason.startswith("region code"):
        return ProofingRefusal(N_("The resident ID number does not start with a valid region code."), code="resident_id_region")
    return ProofingRefusal(N_("A resident ID number has 17 digits followed by a digit or X."), code="resident_id_characters")


def id_hash(ctx: IdPContext, rid: ResidentID) -> str:
    return lookup_hash(ctx.lookup_key, "resident_id", rid.value)


# --------------------------------------------------------------------------- registry adapters


@dataclass(frozen=True)
class RegistryAnswer:
    match: bool
    status: str = "normal"

    @property
    def confirmed(self) -> bool:
        return self.match and self.status == "normal"


class Registry(Protocol):
    name: str

    def check(self, name: str, rid: ResidentID) -> RegistryAnswer: ...


class EmbeddedRegistry:
    """The local ``RegistryPerson`` table, keyed by the resident ID's lookup hash."""

    name = "embedded"

    def __init__(self, factory, lookup_key: bytes):
        self.factory = factory
        self.lookup_key = lookup_key

    def check(self, name: str, rid: ResidentID) -> RegistryAnswer:
        with self.factory() as db:
            person = db.get(RegistryPerson, lookup_hash(self.lookup_key, "resident_id", rid.value))
            if person is None:
                return RegistryAnswer(False, "unknown")
            return RegistryAnswer(normalise_name(person.name) == normalise_name(name), person.status)


class HttpRegistry:
    """A registry gateway: ``POST url`` with ``{"name", "resident_id"}`` → ``{"match": bool, "status": str}``."""

    name = "http"

    def __init__(
        self,
        url: str,
        timeout: float = REGISTRY_TIMEOUT,
        *,
        token: str = "",
        client_cert: str = "",
        client_key: str = "",
        ca_file: str = "",
    ):
        check_registry_url(url)  # https, or http to this machine only (development)
        for path in (client_cert, client_key, ca_file):
            if path and not os.path.isfile(path):
                raise ValueError(f"registry adapter: {path} is not a file")
        self.url = url
        self.timeout = timeout
        self._http = core_http.session(timeout=timeout)  # quick retries; redirects are not followed
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"
        if client_cert:
            self._http.cert = (client_cert, client_key)  # mutual TLS: the gateway knows the adapter by its certificate
        if ca_file:
            self._http.verify = ca_file

    def check(self, name: str, rid: ResidentID) -> RegistryAnswer:
        body = json.dumps({"name": name, "resident_id": rid.value}, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}
        try:
            with self._http.post(self.url, data=body, headers=headers, stream=True) as response:
                if response.status_code >= 300:  # a redirect is not followed: the registry is the URL configured
                    raise RegistryUnavailable(f"the registry answered HTTP {response.status_code}")
                raw = response.raw.read(65536, decode_content=True)
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"the registry could not be reached: {type(exc).__name__}") from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise RegistryUnavailable("the registry's answer is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("match"), bool):
            raise RegistryUnavailable("the registry's answer has no boolean 'match'")
        status = answer.get("status", "normal")
        return RegistryAnswer(answer["match"], status if isinstance(status, str) else "unknown")


def registry_for(ctx: IdPContext) -> Registry:
    if ctx.registry_url:
        own = ctx.settings
        return HttpRegistry(
            ctx.registry_url,
            timeout=own.registry_timeout_seconds,
            token=own.registry_token,
            client_cert=own.registry_client_cert,
            client_key=own.registry_client_key,
            ca_file=own.registry_ca_file,
        )
    return EmbeddedRegistry(ctx.sessions, ctx.lookup_key)


def check_limiter(ctx: IdPContext):
    return accounts.limiter(ctx, "idp.realname.check", CHECK_BUCKET)


# --------------------------------------------------------------------------- binding


def proofing_of(db: Session, account_id: str) -> IdentityProofing | None:
    return db.get(IdentityProofing, account_id)


def as_json(account_id: str, row: IdentityProofing | None) -> dict:
    if row is None:
        return {"account_id": account_id, "verified": False}
    return {
        "account_id": account_id,
        "verified": True,
        "method": row.method,
        "resident_id": row.resident_id_masked,
        "legal_name": row.legal_name,
        "source": row.source,
        "location": row.location,
        "document": row.document,
        "verified_at": row.verified_at.isoformat(),
    }


def _bind(
    db: Session,
    ctx: IdPContext,
    *,
    account_id: str,
    rid: ResidentID,
    legal_name: str,
    method: str,
    source: str,
    actor: str,
    location: str = "",
    document: str = "",
    details: dict | None = None,
) -> IdentityProofing | ProofingRefusal:
    """Bind, or return the refusal after auditing it (so the caller can commit the audit and then refuse)."""
    masked, digest = rid.masked(), id_hash(ctx, rid)
    if db.get(IdentityProofing, account_id) is not None:
        return _already_verified()
    other = db.scalar(select(IdentityProofing.account_id).where(IdentityProofing.resident_id_hash == digest))
    row = IdentityProofing(
        account_id=account_id,
        resident_id_hash=digest,
        resident_id_masked=masked,
        legal_name=legal_name,
        method=method,
        source=source,
        location=location,
        document=document,
        verified_at=utc_now(),
    )
    if other is None:
        try:
            with db.begin_nested():
                db.add(row)
        except IntegrityError:  # a concurrent binding won the race
            other = db.scalar(select(IdentityProofing.account_id).where(IdentityProofing.resident_id_hash == digest)) or "?"
    if other is not None:
        audit.record(
            db,
            actor=actor,
            action="idp.proofing.refused",
            target=account_id,
            details={"reason": "resident ID already bound", "resident_id": masked, "bound_to": other, "method": method},
        )
        return ProofingRefusal(
            N_("This resident ID is already bound to another account. If that is not yours, go to a service centre counter."),
            code="already_bound",
            status=409,
        )
    audit.record(
        db,
        actor=actor,
        action="idp.proofing.verified",
        target=account_id,
        details={"method": method, "source": source, "resident_id": masked, "location": location, "document": document, **(details or {})},
    )
    for live in sessions.active_for(db, account_id):  # the level is derived from proofing: recompute it
        sessions.refresh_level(db, live)
    return row


def _already_verified() -> ProofingRefusal:
    return ProofingRefusal(N_("This account is already real-name verified."), code="already_verified", status=409)


def verify_online(
    ctx: IdPContext, account_id: str, name: str, resident_id: str, *, registry: Registry | None = None, ip: str = ""
) -> IdentityProofing:
    """Check name and ID with the registry and bind the ID to the account; raises :class:`ProofingRefusal`."""
    legal_name = clean_name(name)
    rid = parse_resident_id(resident_id)
    with ctx.sessions() as db:
        if proofing_of(db, account_id) is not None:
            raise _already_verified()
    limiter = check_limiter(ctx)
    wait = limiter.wait_time(account_id)
    if wait > 0:
        raise ProofingRefusal(
            N_("Too many unsuccessful checks for this account. Try again in %(minutes)s minutes, or verify at a service centre counter."),
            code="rate_limited",
            status=429,
            minutes=int(wait // 60) + 1,
        )
    registry = registry or registry_for(ctx)
    actor = f"account:{account_id}"
    try:
        answer = registry.check(legal_name, rid)  # outside any transaction: it may take seconds
    except RegistryUnavailable as exc:
        log.warning("population registry unavailable: %s", exc)
        with core_db.transaction(ctx.sessions) as db:
            audit.record(
                db,
                actor=actor,
                action="idp.proofing.failed",
                target=account_id,
                details={"reason": "registry unavailable", "registry": registry.name, "resident_id": rid.masked(), "ip": ip},
            )
        raise ProofingRefusal(
            N_("The population registry cannot be reached just now, so you are not verified yet. Please try again in a few minutes."),
            code="registry_unavailable",
            status=503,
        ) from None
    if not answer.confirmed:
        limiter.take(account_id)
        with core_db.transaction(ctx.sessions) as db:
            audit.record(
                db,
                actor=actor,
                action="idp.proofing.failed",
                target=account_id,
                details={
                    "reason": "no match" if not answer.match else f"registry status {answer.status}",
                    "registry": registry.name,
                    "resident_id": rid.masked(),
                    "ip": ip,
                },
            )
        raise ProofingRefusal(
            N_("The population registry does not confirm this name and ID number. Check both, exactly as on the identity card."),
            code="not_confirmed",
            status=422,
        )
    with core_db.transaction(ctx.sessions) as db:
        outcome = _bind(
            db,
            ctx,
            account_id=account_id,
            rid=rid,
            legal_name=legal_name,
            method="registry",
            source=registry.name,
            actor=actor,
            details={"ip": ip},
        )
    if isinstance(outcome, Refusal):
        raise outcome
    return outcome


def _counter_input(name: str, resident_id: str, location: str, document: str):
    """(legal name, parsed resident ID, service centre) of a counter check, or the refusal of its first bad field."""
    legal_name = clean_name(name)
    rid = parse_resident_id(resident_id)
    location = " ".join((location or "").split())
    if not location:
        raise ProofingRefusal(N_("Name the service centre where the check took place."), code="location_missing")
    if len(location) > 200:
        raise ProofingRefusal(N_("The service centre's name may have at most 200 characters."), code="location_too_long")
    if document not in DOCUMENTS:
        raise ProofingRefusal(N_("The document must be one of: %(choices)s."), code="bad_document", choices=", ".join(DOCUMENTS))
    return legal_name, rid, location


def verify_at_counter(
    ctx: IdPContext, *, account: str, resident_id: str, name: str, clerk: str, location: str, document: str, via: str = "cli"
) -> tuple[Account, IdentityProofing]:
    """A clerk's in-person check: who (clerk), where (location), when (now), which document."""
    legal_name, rid, location = _counter_input(name, resident_id, location, document)
    with core_db.transaction(ctx.sessions) as db:
        target = accounts.find(db, account, by_id=True)
        staff = accounts.find(db, clerk)
        outcome = _counter_refusal(db, target, staff, clerk=clerk, account=account, via=via)
        if outcome is None:
            outcome = _bind(
                db,
                ctx,
                account_id=target.id,
                rid=rid,
                legal_name=legal_name,
                method="counter",
                source=staff.id,
                location=location,
                document=document,
                actor=f"account:{staff.id}",
                details={"clerk": accounts.label(staff), "via": via},
            )
    if isinstance(outcome, Refusal):
        raise outcome
    return target, outcome


def _counter_refusal(
    db: Session, target: Account | None, staff: Account | None, *, clerk: str, account: str, via: str
) -> ProofingRefusal | None:
    """Why ``staff`` may not check ``target`` at the counter (audited where it is the clerk's doing), or None."""
    if staff is None or not accounts.has_role(staff, "clerk"):
        audit.record(
            db,
            actor=f"account:{staff.id}" if staff else "unknown clerk",
            action="idp.proofing.refused",
            target=target.id if target else "",
            details={"reason": "not an active clerk", "via": via},
        )
        return ProofingRefusal(N_("%(clerk)s is not an active counter clerk."), code="not_a_clerk", status=403, clerk=clerk)
    if target is None:
        return ProofingRefusal(N_("There is no account %(account)s."), code="unknown_account", status=404, account=account)
    if staff.id == target.id:
        audit.record(
            db,
            actor=f"account:{staff.id}",
            action="idp.proofing.refused",
            target=target.id,
            details={"reason": "clerk's own account", "via": via},
        )
        return ProofingRefusal(N_("A clerk cannot verify their own account."), code="own_account", status=403)
    if target.status != "active":
        return ProofingRefusal(N_("The account %(account)s is disabled."), code="disabled", status=409, account=account)
    return None


def confirm_at_counter(
    ctx: IdPContext, *, account: str, resident_id: str, name: str, clerk: str, location: str, document: str, via: str = "cli"
) -> IdentityProofing:
    """A clerk's in-person check of an account already real-name verified: the document's name and ID must be its proofing's.

    Nothing is rebound; the check is audited (``idp.proofing.confirmed``: clerk, centre, document) or, on a mismatch,
    refused and audited (``idp.proofing.refused``).
    """
    legal_name, rid, location = _counter_input(name, resident_id, location, document)
    with core_db.transaction(ctx.sessions) as db:
        target = accounts.find(db, account, by_id=True)
        staff = accounts.find(db, clerk)
        outcome = _counter_refusal(db, target, staff, clerk=clerk, account=account, via=via)
        proofing = proofing_of(db, target.id) if outcome is None else None
        if outcome is None and proofing is None:
            outcome = ProofingRefusal(N_("This account is not real-name verified yet."), code="not_verified", status=409)
        elif outcome is None and (
            id_hash(ctx, rid) != proofing.resident_id_hash or normalise_name(legal_name) != normalise_name(proofing.legal_name)
        ):
            audit.record(
                db,
                actor=f"account:{staff.id}",
                action="idp.proofing.refused",
                target=target.id,
                details={"reason": "document does not match the proofing", "resident_id": rid.masked(), "via": via},
            )
            outcome = ProofingRefusal(
                N_("The name and resident ID on the document are not this account's real-name verification."), code="mismatch", status=409
            )
        elif outcome is None:
            audit.record(
                db,
                actor=f"account:{staff.id}",
                action="idp.proofing.confirmed",
                target=target.id,
                details={
                    "method": "counter",
                    "resident_id": proofing.resident_id_masked,
                    "location": location,
                    "document": document,
                    "clerk": accounts.label(staff),
                    "via": via,
                },
            )
            db.expunge(proofing)
    if outcome is not None:
        raise outcome
    return proofing


# --------------------------------------------------------------------------- registry import


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


@dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: list[BadRow] = field(default_factory=list)


@dataclass(frozen=True)
class _Person:
    line: int
    name: str
    digest: str
    masked: str
    status: str


def _rows(handle: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(handle)
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        yield reader.line_num, row


def _check_row(line: int, cells: list[str], key: bytes) -> _Person | BadRow:
    if len(cells) not in (2, 3):
        return BadRow(line, f"expected 2 or 3 columns (name,resident_id[,status]), found {len(cells)}")
    raw_name, raw_id = cells[0], cells[1]
    status = cells[2].strip().lower() if len(cells) == 3 and cells[2].strip() else "normal"
    try:
        rid = validate_resident_id(raw_id)
    except InvalidIdentifier as exc:
        return BadRow(line, f"resident ID {mask_resident_id(raw_id.strip())}: {exc.reason}")
    if not normalise_name(raw_name):
        return BadRow(line, f"resident ID {rid.masked()}: the name is empty")
    try:
        name = clean_name(raw_name)
    except ProofingRefusal as exc:
        return BadRow(line, f"resident ID {rid.masked()}: {exc.english()}")
    if status not in REGISTRY_STATUSES:
        return BadRow(line, f"resident ID {rid.masked()}: status must be one of {', '.join(REGISTRY_STATUSES)}, not {status!r}")
    return _Person(line, name, lookup_hash(key, "resident_id", rid.value), rid.masked(), status)


def import_registry(
    ctx: IdPContext,
    handle: Iterable[str],
    *,
    actor: str,
    source: str = "",
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Validate every row; upsert the good ones in one transaction; report the bad ones by line.

    Columns ``name,resident_id[,status]``, with or without a header row. Running
    the same file again changes nothing. The whole file's ID hashes are held in
    memory to find duplicates: fine for the embedded registry's scale (millions
    of rows), not meant for a whole province's population (use the HTTP adapter).
    """
    report = ImportReport()
    seen: dict[str, int] = {}
    pending: list[_Person] = []
    rows = _rows(handle)
    with core_db.transaction(ctx.sessions) as db:
        first = True
        for line, cells in rows:
            if first:
                first = False
                header = [c.strip().lstrip("\ufeff").lower() for c in cells]
                if header[:1] == ["name"]:
                    if header not in (["name", "resident_id"], ["name", "resident_id", "status"]):
                        report.bad.append(BadRow(line, "the header must be name,resident_id[,status]"))
                        break
                    continue
            report.rows += 1
            checked = _check_row(line, cells, ctx.lookup_key)
            if isinstance(checked, BadRow):
                report.bad.append(checked)
            elif checked.digest in seen:
                report.bad.append(BadRow(line, f"resident ID {checked.masked}: same ID as line {seen[checked.digest]}"))
            else:
                seen[checked.digest] = line
                pending.append(checked)
                if len(pending) >= batch:
                    _upsert(db, pending, report)
                    pending.clear()
            if progress and report.rows % 10_000 == 0:
                progress(report.rows)
        _upsert(db, pending, report)
        if report.added or report.updated:
            audit.record(
                db,
                actor=actor,
                action="idp.registry.imported",
                target=source[:300],
                details={
                    "rows": report.rows,
                    "added": report.added,
                    "updated": report.updated,
                    "unchanged": report.unchanged,
                    "rejected": len(report.bad),
                },
            )
    return report


def _upsert(db: Session, people: list[_Person], report: ImportReport) -> None:
    if not people:
        return
    existing = {
        p.resident_id_hash: p
        for p in db.scalars(select(RegistryPerson).where(RegistryPerson.resident_id_hash.in_([p.digest for p in people])))
    }
    now = utc_now()
    for person in people:
        row = existing.get(person.digest)
        if row is None:
            db.add(
                RegistryPerson(
                    resident_id_hash=person.digest,
                    resident_id_masked=person.masked,
                    name=person.name,
                    status=person.status,
                    imported_at=now,
                )
            )
            report.added += 1
        elif (row.name, row.status) != (person.name, person.status):
            row.name, row.status, row.imported_at = person.name, person.status, now
            report.updated += 1
        else:
            report.unchanged += 1
    db.flush()


# --------------------------------------------------------------------------- demo people

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐"
_GIVEN_MALE = ["伟", "强", "磊", "军", "洋", "勇", "杰", "涛", "明", "超", "建国", "志强", "俊杰", "浩然", "子轩", "宇航", "文博", "国平"]
_GIVEN_FEMALE = [
    "芳",
    "娜",
    "敏",
    "静",
    "丽",
    "艳",
    "娟",
    "霞",
    "秀英",
    "桂英",
    "秀兰",
    "婷婷",
    "欣怡",
    "梓涵",
    "雨桐",
    "思琪",
    "晓燕",
    "玉兰",
]
# (county-level code, name) from GB/T 2260, spread over the country
_REGIONS = ["110101", "310104", "440106", "330106", "510107", "420106", "320102", "610113", "350102", "370102", "430104", "530102"]


@dataclass(frozen=True)
class DemoPerson:
    name: str
    resident_id: str

    def __repr__(self) -> str:  # synthetic, but printed masked like any other ID
        return f"DemoPerson({self.name!r}, {mask_resident_id(self.resident_id)!r})"


def demo_people(count: int) -> list[DemoPerson]:
    """Synthetic people with checksum-valid IDs; the same ``i`` gives the same person on every run."""
    people, ids = [], set()
    i = 0
    while len(people) < count:
        rng = random.Random(f"hallmark-demo-person-{i}")
        i += 1
        if i == 4:  # one name with the middle dot, as Uyghur names are written
            name, region, male = "阿依古丽·吐尔逊", "650102", False
        else:
            male = rng.random() < 0.5
            name = rng.choice(_SURNAMES) + rng.choice(_GIVEN_MALE if male else _GIVEN_FEMALE)
            region = rng.choice(_REGIONS)
        birth = date(1950, 1, 1).fromordinal(date(1950, 1, 1).toordinal() + rng.randrange(0, 55 * 365))
        sequence = rng.randrange(0, 500) * 2 + (1 if male else 0)
        rid = generate_resident_id(region, birth, sequence)
        if rid in ids:
            continue
        ids.add(rid)
        people.append(DemoPerson(name, rid))
    return people


def import_people(ctx: IdPContext, people: list[DemoPerson], *, actor: str, source: str) -> ImportReport:
    lines = ["name,resident_id,status"] + [f"{p.name},{p.resident_id},normal" for p in people]
    return import_registry(ctx, lines, actor=actor, source=source)
