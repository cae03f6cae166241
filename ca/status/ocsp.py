"""OCSP (RFC 6960, RFC 5019 lightweight profile): pre-signed responses and the responder.

Pre-signing. Every certificate an issuing CA of ours issues gets a signed response
(SHA-1 CertID, as RFC 5019 asks) when it is stored, re-signed in the transaction
that revokes it, and re-signed before its nextUpdate by :func:`refresh_due`.

Answering (:class:`Responder`). A request is parsed with cryptography (a few µs),
its CertID matched to one of our issuing CAs by issuerNameHash/issuerKeyHash (SHA-1,
SHA-256, SHA-384 or SHA-512), and then:

* single CertID, no nonce: the answer comes from a per-process cache, filled from
  the pre-signed row (SHA-1) or signed once (other hashes);
* a nonce: signed live, echoing the nonce (a pre-signed answer cannot carry it);
* several CertIDs: signed live with one SingleResponse per CertID, all in one
  response (RFC 6960 4.1.1 allows a list; answering only the first would leave the
  client without the statuses it asked for). They must share one issuing CA,
  because one response has one signer; up to :data:`MAX_CERT_IDS`;
* a serial we never issued: ``unknown``, signed live, never cached;
* a CertID whose issuer is not one of our issuing CAs (or is the root, which has no
  delegated responder): ``unauthorized``;
* anything unparsable, empty or over 8 KiB, or a nonce over 32 octets (RFC 8954):
  ``malformedRequest``.

Limits. Only what makes the responder sign is limited: a nonce, a serial we never
issued, several CertIDs (and a first answer for a non-SHA-1 CertID). Each counts
against the client address's ``ocsp_signed`` limit (the ca section: a burst, then a
rate per minute), kept in the database like every shared limit (core.ratelimit), so
every worker and node counts one allowance; past it the answer is ``tryLater``
(RFC 6960 2.3), which the HTTP layer sends with status 429 and ``Retry-After``. A
pre-signed or cached answer is served without counting: it costs less than the
database write a count would be, and it is the hot path.

Revocation guarantee. A revocation re-signs the response and publishes a CRL in one
transaction (``ca.status.publication``), so an authority's CRL number counts its
revocations. Every cached answer is tagged with the CRL number read *before* the
answer was loaded, and is served only while the process's current reading of that
number still matches. The number is read (one primary-key read of a table with a
row per CA) at most once per :data:`REVOCATION_DELAY` seconds per authority, shared
by every request and thread of the process, and a reading counts only for
:data:`REVOCATION_DELAY` seconds from the moment it was *started*. Hence: an OCSP
request that arrives :data:`REVOCATION_DELAY` seconds or more after a revocation
committed is answered "revoked" by every worker process on every node (the
documented delay, docs/ca.md); a request in that window may still get the cached
"good". Cached answers are also dropped once the scheduler would have re-signed
them, so refreshed responses are picked up without a revocation.

The hot path. A POST of the same bytes as a request answered before, from the
cache, is answered by :meth:`Responder.prepared`: a dictionary probe by the request's
bytes, one clock read and the comparisons above; no parsing, no database. Its reply
(body and headers) is built once, when the answer is cached, and served as it is.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp as x509_ocsp
from sqlalchemy import bindparam, create_engine, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from ca import hierarchy, issuance
from ca.context import CAContext, LoadedAuthority
from ca.models import Authority, Certificate, OCSPResponse
from core import ratelimit
from core.db import utc_now

VALIDITY = timedelta(days=1)  # thisUpdate .. nextUpdate of every response we sign
REFRESH_BEFORE = timedelta(hours=12)  # refresh_due re-signs responses this close to nextUpdate
REFRESH_BATCH = 200  # responses re-signed per transaction (bounds lock time and memory)
MAX_REQUEST_BYTES = 8 * 1024
MAX_CERT_IDS = 16
MAX_NONCE_BYTES = 32  # RFC 8954 section 2.1
CACHE_ENTRIES = 50_000  # per process; about 1 KB each
# How long after a revocation commits a cached "good" may still be served (seconds): each process reads each
# authority's CRL number at most this often. docs/ca.md states it; tests/platform/test_multinode.py checks it.
REVOCATION_DELAY = 0.5
CONTENT_TYPE = "application/ocsp-response"

log = logging.getLogger("hallmark.ca.ocsp")

_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
_ALGORITHMS = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


def _unsuccessful(status: x509_ocsp.OCSPResponseStatus) -> bytes:
    return x509_ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


MALFORMED_REQUEST = _unsuccessful(x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
INTERNAL_ERROR = _unsuccessful(x509_ocsp.OCSPResponseStatus.INTERNAL_ERROR)
TRY_LATER = _unsuccessful(x509_ocsp.OCSPResponseStatus.TRY_LATER)
UNAUTHORIZED = _unsuccessful(x509_ocsp.OCSPResponseStatus.UNAUTHORIZED)


# -- signing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DelegatedResponder:
    """The OCSP responder of one issuing CA: its certificate and HSM key."""

    serial: str
    certificate: x509.Certificate
    der: bytes
    key_uri: str

    @property
    def key_hash(self) -> bytes:
        return _key_hash(self.certificate, "sha1")


_delegates: dict[str, DelegatedResponder] = {}


def responder_for(session: Session, authority: str) -> DelegatedResponder | None:
    """The current delegated responder of an issuing CA, or None (the root has none)."""
    row = hierarchy.service_certificate(session, "ocsp-signing", authority)
    if row is None:
        return None
    delegate = _delegates.get(row.serial)
    if delegate is None:
        delegate = _delegates[row.serial] = DelegatedResponder(row.serial, x509.load_der_x509_certificate(row.der), row.der, row.key_uri)
    return delegate


def _key_hash(certificate: x509.Certificate, algorithm: str) -> bytes:
    from asn1crypto import x509 as asn1_x509

    parsed = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    # The BIT STRING's value without its unused-bits octet (RFC 6960 4.1.1, ResponderID byKey).
    return _HASHES[algorithm](parsed["tbs_certificate"]["subject_public_key_info"]["public_key"].contents[1:]).digest()


_issuer_hashes: dict[tuple[bytes, str], tuple[bytes, bytes]] = {}


def issuer_hashes(issuer: x509.Certificate, algorithm: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CertID naming a certificate issued by ``issuer``."""
    key = (issuer.fingerprint(hashes.SHA256()), algorithm)
    found = _issuer_hashes.get(key)
    if found is None:
        found = _issuer_hashes[key] = (_HASHES[algorithm](issuer.subject.public_bytes()).digest(), _key_hash(issuer, algorithm))
    return found


def _status_of(row: Certificate | None):
    if row is None:
        return x509_ocsp.OCSPCertStatus.UNKNOWN, None, None
    if row.status == "revoked":
        # As in the CRL: no reason code rather than "unspecified" (RFC 5280 5.3.1).
        reason = None if row.revocation_reason in (None, "unspecified") else x509.ReasonFlags(row.revocation_reason)
        return x509_ocsp.OCSPCertStatus.REVOKED, row.revoked_at.replace(microsecond=0), reason
    return x509_ocsp.OCSPCertStatus.GOOD, None, None


def sign_single(
    ctx: CAContext,
    issuer: LoadedAuthority,
    responder: DelegatedResponder,
    row: Certificate | None,
    *,
    serial: int | None = None,
    algorithm: str = "sha1",
    now: datetime | None = None,
    nonce: x509.Extension | None = None,
) -> bytes:
    """A signed OCSP response (DER) about one serial of ``issuer``; ``row`` None means unknown."""
    now = now or utc_now()
    name_hash, key_hash = issuer_hashes(issuer.certificate, algorithm)
    status, revoked_at, reason = _status_of(row)
    serial = int(row.serial, 16) if row is not None else serial
    builder = (
        x509_ocsp.OCSPResponseBuilder()
        .add_response_by_hash(name_hash, key_hash, serial, _ALGORITHMS[algorithm], status, now, now + VALIDITY, revoked_at, reason)
        .responder_id(x509_ocsp.OCSPResponderEncoding.HASH, responder.certificate)
        .certificates([responder.certificate])
    )
    if nonce is not None:
        builder = builder.add_extension(nonce.value, critical=False)
    signer = ctx.signer(responder.key_uri)
    return builder.sign(signer, issuance.signature_hash(signer)).public_bytes(serialization.Encoding.DER)


def sign_many(
    ctx: CAContext,
    responder: DelegatedResponder,
    answers: list[tuple[str, bytes, bytes, int, Certificate | None]],
    *,
    nonce: bytes | None = None,
    now: datetime | None = None,
) -> bytes:
    """One response with a SingleResponse per (hash, nameHash, keyHash, serial, row).

    cryptography's builder takes one SingleResponse only, so this assembles the
    structure with asn1crypto and signs it with the same HSM key.
    """
    from asn1crypto import core
    from asn1crypto import ocsp as asn1_ocsp
    from asn1crypto import x509 as asn1_x509

    now = now or utc_now()
    singles = []
    for algorithm, name_hash, key_hash, serial, row in answers:
        status, revoked_at, reason = _status_of(row)
        if status is x509_ocsp.OCSPCertStatus.GOOD:
            cert_status = asn1_ocsp.CertStatus(name="good", value=core.Null())
        elif status is x509_ocsp.OCSPCertStatus.UNKNOWN:
            cert_status = asn1_ocsp.CertStatus(name="unknown", value=core.Null())
        else:
            info = {"revocation_time": revoked_at}
            if reason is not None:
                info["revocation_reason"] = reason.name
            cert_status = asn1_ocsp.CertStatus(name="revoked", value=info)
        singles.append(
            {
                "cert_id": {
                    "hash_algorithm": {"algorithm": algorithm},
                    "issuer_name_hash": name_hash,
                    "issuer_key_hash": key_hash,
                    "serial_number": serial,
                },
                "cert_status": cert_status,
                "this_update": now,
                "next_update": now + VALIDITY,
            }
        )
    data = {"responder_id": asn1_ocsp.ResponderId(name="by_key", value=responder.key_hash), "produced_at": now, "responses": singles}
    if nonce is not None:
        data["response_extensions"] = [{"extn_id": "nonce", "critical": False, "extn_value": nonce}]
    tbs = asn1_ocsp.ResponseData(data)
    signer = ctx.signer(responder.key_uri)
    digest = issuance.signature_hash(signer)
    if isinstance(signer, ec.EllipticCurvePrivateKey):
        signature, algorithm_id = signer.sign(tbs.dump(), ec.ECDSA(digest)), f"{digest.name}_ecdsa"
    elif isinstance(signer, rsa.RSAPrivateKey):
        signature, algorithm_id = signer.sign(tbs.dump(), padding.PKCS1v15(), digest), f"{digest.name}_rsa"
    else:
        raise TypeError(f"cannot sign OCSP responses with a {type(signer).__name__}")
    basic = asn1_ocsp.BasicOCSPResponse(
        {
            "tbs_response_data": tbs,
            "signature_algorithm": {"algorithm": algorithm_id},
            "signature": signature,
            "certs": [asn1_x509.Certificate.load(responder.der)],
        }
    )
    return asn1_ocsp.OCSPResponse(
        {"response_status": "successful", "response_bytes": {"response_type": "basic_ocsp_response", "response": basic}}
    ).dump()


# -- pre-signing --------------------------------------------------------------------------------


def presign(ctx: CAContext, session: Session, certificate_row: Certificate) -> bytes | None:
    """Sign and store (replace) the pre-signed response of one certificate, in the caller's transaction.

    Skipped when the issuing authority has no delegated responder: the root (its
    children's status is in the root CRL), and the moment during ``hallmark ca
    init`` before a responder exists. A responder's own certificate is flushed
    before this runs, so the new responder signs its own first answer.
    """
    issuer = ctx.authority(certificate_row.authority, session)
    if issuer.role == "root":
        return None
    responder = responder_for(session, certificate_row.authority)
    if responder is None:
        # Nothing can re-sign it (the only responder was just revoked, say): an answer
        # that can no longer follow the certificate's status must not be served.
        session.execute(delete(OCSPResponse).where(OCSPResponse.serial == certificate_row.serial))
        return None
    now = utc_now()
    der = sign_single(ctx, issuer, responder, certificate_row, now=now)
    _upsert(session, certificate_row.serial, certificate_row.authority, now, now + VALIDITY, der)
    return der


def _upsert(session: Session, serial: str, authority: str, produced_at: datetime, next_update: datetime, der: bytes) -> None:
    # INSERT ... ON CONFLICT, so two nodes signing the same serial never collide.
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(OCSPResponse).values(serial=serial, authority=authority, produced_at=produced_at, next_update=next_update, der=der)
    statement = statement.on_conflict_do_update(
        index_elements=[OCSPResponse.serial],
        set_={name: statement.excluded[name] for name in ("authority", "produced_at", "next_update", "der")},
    )
    session.execute(statement)
    loaded = session.identity_map.get(identity_key(OCSPResponse, serial))
    if loaded is not None:
        session.expire(loaded)  # an OCSPResponse loaded earlier in this session is now out of date


def refresh_due(ctx: CAContext, batch: int = REFRESH_BATCH) -> int:
    """Re-sign pre-signed responses whose nextUpdate is within 12 h, and sign those missing; how many.

    Works in transactions of ``batch`` responses. The certificate rows are locked
    (PostgreSQL: FOR UPDATE SKIP LOCKED), so a revocation cannot slip between the
    status read and the re-signed answer, and several nodes share the work instead
    of queuing for it. Certificates that expired over a day ago are left alone:
    their last response runs out, and the responder signs live if asked.
    """
    issuing = [name for name in ctx.authority_names() if ctx.authority(name).role == "issuing"]
    total = 0
    for missing in (False, True):
        while True:
            with ctx.sessions() as session, session.begin():
                now = utc_now()
                query = select(Certificate).where(Certificate.authority.in_(issuing), Certificate.not_after >= now - VALIDITY)
                if missing:
                    query = query.outerjoin(OCSPResponse, OCSPResponse.serial == Certificate.serial).where(OCSPResponse.serial.is_(None))
                else:
                    query = query.join(OCSPResponse, OCSPResponse.serial == Certificate.serial).where(
                        OCSPResponse.next_update <= now + REFRESH_BEFORE
                    )
                rows = session.scalars(
                    query.order_by(Certificate.serial).limit(batch).with_for_update(of=Certificate, skip_locked=True)
                ).all()
                signed = sum(1 for row in rows if presign(ctx, session, row) is not None)
            total += signed
            # Stop on a short batch, or when nothing in it could be signed (no responder yet).
            if len(rows) < batch or signed == 0:
                break
    return total


# -- answering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the responder sends back, with what HTTP caching needs to know about it."""

    der: bytes
    produced_at: float | None = None  # POSIX seconds
    next_update: float | None = None
    cacheable: bool = False  # the same bytes may be served to anyone until next_update (RFC 5019)
    retry_after: int = 0  # seconds; on a tryLater to a client past its limit (sent with HTTP 429)

    @property
    def etag(self) -> str:
        return hashlib.sha1(self.der).hexdigest()


_MALFORMED = Answer(MALFORMED_REQUEST)
_UNAUTHORIZED = Answer(UNAUTHORIZED)
_TRY_LATER = Answer(TRY_LATER)
_INTERNAL_ERROR = Answer(INTERNAL_ERROR)


class _Malformed(Exception):
    pass


@dataclass(frozen=True)
class _CertId:
    algorithm: str
    name_hash: bytes
    key_hash: bytes
    serial: int


@dataclass
class _Entry:
    answer: Answer
    epoch: int
    fresh_until: float


class _Epoch:
    """One authority's CRL number as this process last read it: ``state`` is (number, trusted until), monotonic seconds.

    The pair is replaced whole (one attribute store), so a reader never sees a number with another reading's deadline.
    """

    __slots__ = ("state",)

    def __init__(self):
        self.state = (-1, float("-inf"))


class Prepared:
    """A cached answer to one request's exact bytes, with its HTTP reply to a POST built once."""

    __slots__ = ("answer", "body", "epoch", "fresh_until", "headers", "number")

    def __init__(self, answer: Answer, epoch: _Epoch, number: int, fresh_until: float):
        self.answer = answer
        self.epoch = epoch  # the authority's shared reading
        self.number = number  # the CRL number the answer was read under
        self.fresh_until = fresh_until  # monotonic seconds (one clock read on the hot path)
        self.headers = [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(answer.der)))]
        self.body = [answer.der]


def decode_get_path(encoded: str) -> bytes:
    """The DER request of a GET URL (RFC 6960 appendix A.1): base64, then URL-encoded.

    Tolerates what clients and proxies do to it: percent-escapes left in place,
    '+' turned into a space, the URL-safe alphabet, and missing padding.
    """
    from urllib.parse import unquote

    text = unquote(encoded).strip().replace(" ", "+").replace("-", "+").replace("_", "/").rstrip("=")
    if not text or len(text) > MAX_REQUEST_BYTES * 4 // 3 + 4:
        raise ValueError("empty or oversized")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


class Responder:
    """Answers OCSP requests for our issuing CAs. One per process; safe for threads."""

    def __init__(self, ctx: CAContext, *, cache_entries: int = CACHE_ENTRIES, revocation_delay: float = REVOCATION_DELAY):
        self.ctx = ctx
        self._cache: dict[tuple[str, str, str], _Entry] = {}
        self._prepared: dict[bytes, Prepared] = {}  # by the request's DER bytes (no nonce, one CertID)
        self._cache_entries = cache_entries
        self._revocation_delay = max(0.0, float(revocation_delay))
        self._epochs: dict[str, _Epoch] = {}
        self._issuers: dict[tuple[str, bytes, bytes], LoadedAuthority] = {}
        self._issuers_loaded = 0.0
        self._delegates: dict[str, tuple[DelegatedResponder | None, float]] = {}
        self._lock = threading.Lock()
        self._reader = _reader_engine(ctx.sessions.kw["bind"])
        self._database_errors = (DBAPIError, self._reader.dialect.loaded_dbapi.Error)
        mark = "?" if self._reader.dialect.paramstyle == "qmark" else "%s"
        self._epoch_sql = f"SELECT crl_number FROM {Authority.__tablename__} WHERE name = {mark}"
        self._local = threading.local()  # one reader connection per thread, kept: the hot path skips the pool
        self._response_query = select(OCSPResponse.der, OCSPResponse.produced_at, OCSPResponse.next_update, OCSPResponse.authority).where(
            OCSPResponse.serial == bindparam("serial")
        )

    def close(self) -> None:
        self._reader.dispose()  # connections other threads still hold are closed with their threads

    # The one entry point: bytes in, an OCSP response out, never an exception.
    def answer(self, request_der: bytes, client: str = "") -> Answer:
        # ``client``: the address whose limit counts a signed answer (read by _limited on this thread).
        self._local.client = client
        if not request_der or len(request_der) > MAX_REQUEST_BYTES:
            return _MALFORMED
        try:
            cert_ids, nonce = _parse(request_der)
        except _Malformed:
            return _MALFORMED
        try:
            issuers = [self._issuer(cert_id) for cert_id in cert_ids]
            if any(issuer is None for issuer in issuers) or len({issuer.name for issuer in issuers}) != 1:
                return _UNAUTHORIZED
            if len(cert_ids) == 1:
                answer, number = self._answer_one(issuers[0], cert_ids[0], nonce)
                if number is not None:
                    self._prepare(request_der, issuers[0].name, answer, number)
                return answer
            return self._answer_many(issuers[0], cert_ids, nonce)
        except self._database_errors:
            log.warning("OCSP: the database is unavailable; answering tryLater", exc_info=True)
            return _TRY_LATER
        except Exception:
            log.exception("OCSP: unexpected error; answering internalError")
            return _INTERNAL_ERROR

    def prepared(self, request_der: bytes) -> Prepared | None:
        """The cached answer to exactly these request bytes while it still holds, else None (then call :meth:`answer`).

        It holds while the process's reading of the authority's CRL number is recent (see the module docstring)
        and unchanged since the answer was cached, and the answer is not due for re-signing.
        """
        hit = self._prepared.get(request_der)
        if hit is None:
            return None
        number, until = hit.epoch.state
        now = time.monotonic()
        if number != hit.number or now >= until or now >= hit.fresh_until:
            return None
        return hit

    def _prepare(self, request_der: bytes, authority: str, answer: Answer, number: int) -> None:
        # As _remember: served until the scheduler would have re-signed it (converted to the monotonic clock).
        wall = time.time()
        fresh_until = answer.next_update - REFRESH_BEFORE.total_seconds()
        if fresh_until <= wall:
            fresh_until = min(wall + 60, answer.next_update - 60)
        fresh_until += time.monotonic() - wall
        prepared = self._prepared
        if len(prepared) >= self._cache_entries:
            try:
                del prepared[next(iter(prepared))]  # oldest inserted first
            except (StopIteration, KeyError, RuntimeError):
                pass
        prepared[request_der] = Prepared(answer, self._epoch_of(authority), number, fresh_until)

    def _issuer(self, cert_id: _CertId) -> LoadedAuthority | None:
        key = (cert_id.algorithm, cert_id.name_hash, cert_id.key_hash)
        issuer = self._issuers.get(key)
        # An unmatched CertID rescans our authorities at most once a minute (a new CA appears rarely).
        if issuer is None and time.monotonic() - self._issuers_loaded > 60:
            self._load_issuers()
            issuer = self._issuers.get(key)
        return issuer

    def _load_issuers(self) -> None:
        with self._lock:
            issuers = {}
            for name in self.ctx.authority_names():
                loaded = self.ctx.authority(name)
                if loaded.role != "issuing":
                    continue  # the root has no delegated responder: unauthorized
                for algorithm in _HASHES:
                    issuers[(algorithm, *issuer_hashes(loaded.certificate, algorithm))] = loaded
            self._issuers = issuers
            self._issuers_loaded = time.monotonic()

    def _read(self, work):
        """``work(connection)`` on this thread's reader connection, kept open between requests.

        Kept rather than checked out per request: the pool round trip would cost more
        than the read. A connection the database dropped (restart, failover) is
        replaced once before the error is let through (and answered tryLater).
        """
        for attempt in (1, 2):
            connection = getattr(self._local, "connection", None)
            if connection is None or connection.closed or connection.invalidated:
                connection = self._local.connection = self._reader.connect()
            try:
                return work(connection)
            except self._database_errors:
                self._local.connection = None
                with contextlib.suppress(Exception):
                    connection.invalidate()
                    connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _epoch_of(self, authority: str) -> _Epoch:
        epoch = self._epochs.get(authority)
        if epoch is None:
            epoch = self._epochs.setdefault(authority, _Epoch())
        return epoch

    def _epoch(self, authority: str) -> int:
        """The authority's CRL number as of at most :data:`REVOCATION_DELAY` seconds ago (read again when older).

        Every thread of the process shares the reading. Its deadline counts from the moment the read was started,
        so a reading never vouches for longer than the delay after the database state it saw.
        """
        epoch = self._epoch_of(authority)
        number, until = epoch.state
        started = time.monotonic()
        if started < until:
            return number

        def read(connection) -> int:
            cursor = connection.connection.cursor()
            try:
                cursor.execute(self._epoch_sql, (authority,))
                return cursor.fetchone()[0]
            finally:
                cursor.close()

        number = self._read(read)
        until = started + self._revocation_delay
        if until > epoch.state[1]:  # a slower thread's older reading does not replace a newer one
            epoch.state = (number, until)
        return number

    def _session_read(self, work):
        """``work(session)`` with an ORM session on this thread's reader connection (no write lock)."""

        def run(connection):
            # close() (not rollback()) ends the read and keeps loaded rows readable, detached.
            with Session(bind=connection) as session:
                return work(session)

        return self._read(run)

    def _answer_one(self, issuer: LoadedAuthority, cert_id: _CertId, nonce: x509.Extension | None) -> tuple[Answer, int | None]:
        """The answer, and the CRL number it holds under when it may be cached (else None)."""
        serial = format(cert_id.serial, "x") if cert_id.serial else None  # 0 is never a serial of ours
        if nonce is not None or serial is None:
            return self._sign_live(issuer, cert_id, serial, nonce), None
        key = (cert_id.algorithm, issuer.name, serial)
        epoch = self._epoch(issuer.name)  # read before anything it vouches for (see the module docstring)
        entry = self._cache.get(key)
        now = time.time()
        if entry is not None and entry.epoch == epoch and now < entry.fresh_until:
            return entry.answer, epoch
        answer = None
        if cert_id.algorithm == "sha1":
            row = self._session_read(lambda session: session.execute(self._response_query, {"serial": serial}).first())
            if row is not None and row.authority == issuer.name and row.next_update.timestamp() - now > 60:
                answer = Answer(row.der, row.produced_at.timestamp(), row.next_update.timestamp(), cacheable=True)
        if answer is None:
            answer = self._sign_live(issuer, cert_id, serial, None)
            if not answer.cacheable:
                return answer, None  # unknown: never cached, the serial may yet be issued
        self._remember(key, answer, epoch, now)
        return answer, epoch

    def _remember(self, key, answer: Answer, epoch: int, now: float) -> None:
        # Served from memory until the scheduler would have re-signed it, then reread.
        fresh_until = answer.next_update - REFRESH_BEFORE.total_seconds()
        if fresh_until <= now:
            fresh_until = min(now + 60, answer.next_update - 60)
        if len(self._cache) >= self._cache_entries:
            try:
                del self._cache[next(iter(self._cache))]  # oldest inserted first
            except (StopIteration, KeyError, RuntimeError):
                pass
        self._cache[key] = _Entry(answer, epoch, fresh_until)

    def _certificate(self, issuer: LoadedAuthority, serial: str | None) -> Certificate | None:
        if serial is None:
            return None
        row = self._session_read(lambda session: session.get(Certificate, serial))
        return row if row is not None and row.authority == issuer.name else None

    def _delegate(self, issuer: LoadedAuthority) -> DelegatedResponder | None:
        # Looked up at most once a minute: a renewed responder is picked up within
        # that time, and the one it replaces stays valid for weeks.
        found = self._delegates.get(issuer.name)
        if found is None or time.monotonic() - found[1] > 60:
            found = self._delegates[issuer.name] = (
                self._session_read(lambda session: responder_for(session, issuer.name)),
                time.monotonic(),
            )
        return found[0]

    def _limited(self) -> Answer | None:
        """tryLater (with the wait) when this request's client is past its ``ocsp_signed`` limit; else counts it and None."""
        limit = self.ctx.settings.limit("ocsp_signed")
        wait = ratelimit.shared(self.ctx.cache, self.ctx.sessions, "ca.ocsp.signed", limit).attempt(getattr(self._local, "client", ""))
        if wait > 0:
            return Answer(TRY_LATER, retry_after=ratelimit.retry_after(wait))
        return None

    def _sign_live(self, issuer: LoadedAuthority, cert_id: _CertId, serial: str | None, nonce: x509.Extension | None) -> Answer:
        limited = self._limited()
        if limited is not None:
            return limited
        row = self._certificate(issuer, serial)
        responder = self._delegate(issuer)
        if responder is None:
            return _UNAUTHORIZED  # an issuing CA without a responder yet: cannot answer for it
        now = utc_now()
        der = sign_single(self.ctx, issuer, responder, row, serial=cert_id.serial, algorithm=cert_id.algorithm, now=now, nonce=nonce)
        produced = now.timestamp()
        return Answer(der, produced, produced + VALIDITY.total_seconds(), cacheable=row is not None and nonce is None)

    def _answer_many(self, issuer: LoadedAuthority, cert_ids: list[_CertId], nonce: x509.Extension | None) -> Answer:
        limited = self._limited()
        if limited is not None:
            return limited
        serials = [format(c.serial, "x") for c in cert_ids if c.serial > 0]
        query = select(Certificate).where(Certificate.serial.in_(serials), Certificate.authority == issuer.name)
        rows = {row.serial: row for row in self._session_read(lambda session: session.scalars(query).all())}
        responder = self._delegate(issuer)
        if responder is None:
            return _UNAUTHORIZED
        answers = [(c.algorithm, c.name_hash, c.key_hash, c.serial, rows.get(format(c.serial, "x"))) for c in cert_ids]
        return Answer(sign_many(self.ctx, responder, answers, nonce=nonce.value.nonce if nonce is not None else None))


def _reader_engine(engine: Engine) -> Engine:
    """A second engine on the same database for the responder's reads, in autocommit.

    The application engine opens every SQLite transaction with BEGIN IMMEDIATE
    (core.db), which would make each OCSP lookup take the write lock; PostgreSQL
    would spend a round trip on BEGIN and another on ROLLBACK. Reads here are
    single statements and need neither.
    """
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 30, "check_same_thread": False})
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True, pool_size=10, max_overflow=10)


def _parse(der: bytes) -> tuple[list[_CertId], x509.Extension | None]:
    """The CertIDs and the nonce extension of a DER OCSPRequest; _Malformed when it is not one."""
    try:
        request = x509_ocsp.load_der_ocsp_request(der)
        try:
            algorithm = request.hash_algorithm.name
        except UnsupportedAlgorithm:
            algorithm = "unsupported"
        cert_ids = [_CertId(algorithm, request.issuer_name_hash, request.issuer_key_hash, request.serial_number)]
        extensions = request.extensions
    except NotImplementedError:
        # cryptography reads single-request OCSPRequests only; asn1crypto reads the rest.
        return _parse_many(der)
    except (ValueError, TypeError) as exc:
        raise _Malformed(str(exc)) from None
    if cert_ids[0].serial < 0:
        raise _Malformed("a negative serial number names no certificate (RFC 5280 4.1.2.2)")
    return cert_ids, _nonce(extensions)


def _nonce(extensions: x509.Extensions) -> x509.Extension | None:
    try:
        extension = extensions.get_extension_for_class(x509.OCSPNonce)
    except x509.ExtensionNotFound:
        return None
    if not 1 <= len(extension.value.nonce) <= MAX_NONCE_BYTES:
        raise _Malformed("nonce length outside 1..32 octets (RFC 8954)")
    return extension


def _parse_many(der: bytes) -> tuple[list[_CertId], x509.Extension | None]:
    from asn1crypto import ocsp as asn1_ocsp

    names = {"sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}
    try:
        request = asn1_ocsp.OCSPRequest.load(der, strict=True)
        tbs = request["tbs_request"]
        cert_ids = []
        for item in tbs["request_list"]:
            cert_id = item["req_cert"]
            cert_ids.append(
                _CertId(
                    names.get(cert_id["hash_algorithm"]["algorithm"].native, "unsupported"),
                    cert_id["issuer_name_hash"].native,
                    cert_id["issuer_key_hash"].native,
                    cert_id["serial_number"].native,
                )
            )
        nonce = None
        for extension in tbs["request_extensions"] or []:
            if extension["extn_id"].native == "nonce":
                nonce = x509.Extension(x509.OCSPNonce.oid, False, x509.OCSPNonce(extension["extn_value"].parsed.native))
    except _Malformed:
        raise
    except Exception as exc:
        raise _Malformed(str(exc)) from None
    if not cert_ids or len(cert_ids) > MAX_CERT_IDS:
        raise _Malformed(f"a request must name 1..{MAX_CERT_IDS} certificates")
    if any(cert_id.serial < 0 for cert_id in cert_ids):
        raise _Malformed("a negative serial number names no certificate (RFC 5280 4.1.2.2)")
    if nonce is not None and not 1 <= len(nonce.value.nonce) <= MAX_NONCE_BYTES:
        raise _Malformed("nonce length outside 1..32 octets (RFC 8954)")
    return cert_ids, nonce
