"""The access log: every access of an approval system to a licence or a holder, hash-chained, readable by the holder.

Each entry says who (client), for whom (the holder's lookup hash, never the code),
which licence, by which route (the holder's consent or a standing grant), how
(mode), why (purpose and matter), which face fields and with what result. Entries
are chained like the audit trail (``core.chain``), appended in the caller's
transaction; each one gets a signed use receipt (``licenses.receipts``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from core.chain import HashChain, Verification
from core.identifiers import mask_resident_ids
from licenses import grants
from licenses.models import AccessEntry, AccessHead

ROUTES = ("consent", "grant", "none")  # none: refused before any route allowed it
MODES = ("lookup", "query", "compare", "read", "copy", "verify", "qr")
MAX_MATTER = 100
_HASH = re.compile(r"^[0-9a-f]{64}$")

CHAIN = HashChain(
    AccessEntry.__table__,
    AccessHead.__table__,
    {
        "seq": "seq",
        "at": "at",
        "client": "client_id",
        "holder": "holder_hash",
        "identifier": "identifier",
        "type": "type_code",
        "route": "route",
        "mode": "mode",
        "purpose": "purpose",
        "matter": "matter",
        "fields": "fields",
        "result": "result",
    },
    noun="entry",
    name="access log",
)


def append(
    db: Session | Connection,
    *,
    client_id: str,
    holder_hash: str,
    identifier: str = "",
    type_code: str = "",
    route: str,
    mode: str,
    purpose: str,
    matter: str,
    fields: list[str] | tuple[str, ...] = (),
    result: str,
    at: datetime | None = None,
) -> AccessEntry:
    """Append one access in ``db``'s transaction (a session or a Core connection); the entry as written (not added
    to a session: its row is already in the table)."""
    if not _HASH.match(holder_hash or ""):
        # The log names a holder only by the keyed lookup hash: anything else would be the code itself.
        raise ValueError("the access log takes the holder's lookup hash (64 hex digits), never a holder code")
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    moment = (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    row = CHAIN.append(
        db,
        {
            "at": moment,
            "client_id": client_id[:100],
            "holder_hash": holder_hash,
            "identifier": (identifier or "")[:120],
            "type_code": (type_code or "")[:21],
            "route": route,
            "mode": mode,
            # Callers write these freely: a resident ID typed into them must not land in the log in clear.
            "purpose": mask_resident_ids(purpose or "")[: grants.MAX_PURPOSE],
            "matter": mask_resident_ids(matter or "")[:MAX_MATTER],
            "fields": json.dumps(sorted(set(fields)), ensure_ascii=False, separators=(",", ":")),
            "result": result[:20],
        },
    )
    return AccessEntry(**row)


def for_holder(db: Session, holder_hashes: list[str], limit: int = 100) -> list[AccessEntry]:
    """The latest accesses concerning any of these holders (a person and the enterprises they act for), newest first."""
    hashes = [h for h in holder_hashes if _HASH.match(h or "")]
    if not hashes:
        return []
    query = select(AccessEntry).where(AccessEntry.holder_hash.in_(hashes)).order_by(AccessEntry.seq.desc()).limit(max(1, min(limit, 1000)))
    return list(db.scalars(query))


def get(db: Session, seq: int) -> AccessEntry | None:
    return db.get(AccessEntry, seq)


def entry_hash(entry: AccessEntry) -> str:
    """The hash the entry's content gives (equal to ``entry.hash`` unless the row was altered)."""
    return CHAIN.row_hash(entry)


def fields_of(entry: AccessEntry) -> list[str]:
    return json.loads(entry.fields)


def verify(db: Session, batch: int = 2000) -> Verification:
    """Walk the whole log and name the first broken link."""
    return CHAIN.verify(db, batch)
