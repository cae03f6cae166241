"""Append-only tables chained by SHA-256, with a one-row head that orders appends.

A chained table has a ``seq`` primary key (1, 2, ...), a ``prev_hash`` and a
``hash`` column; its head table has one row (``id = 1``) holding ``last_seq`` and
``last_hash``. Each row's hash is SHA-256 over a canonical JSON form of the
members the chain names (``members``: JSON name -> column) plus ``prev``, the hash
of the row before, so changing, removing or reordering a row breaks the chain from
there on. The audit trail (``core.audit``) and the licence library's access log
are such chains.

Callers append inside their own transaction: the UPDATE of the head row takes its
lock first, so concurrent appends queue up and the row and its action commit
together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

GENESIS = "0" * 64


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    broken_at: int | None = None
    reason: str = ""
    last_seq: int = 0  # the last row checked (verify_span)
    last_hash: str = GENESIS


class HashChain:
    """One chained table and its head; ``members`` maps each hashed JSON member to its column (``seq`` included)."""

    def __init__(self, table: Table, head: Table, members: Mapping[str, str], *, noun: str = "entry", name: str = "chain"):
        if "prev" in members:
            raise ValueError("'prev' is the chain's own member")
        self.table, self.head, self.members = table, head, dict(members)
        self.noun, self.name = noun, name  # for the messages of verify(): "event #3 was altered", "the audit head row"
        self._columns = (*members.values(), "prev_hash", "hash")
        self._take_next_seq = (
            update(head).where(head.c.id == 1).values(last_seq=head.c.last_seq + 1).returning(head.c.last_seq, head.c.last_hash)
        )
        self._set_last_hash = update(head).where(head.c.id == 1).values(last_hash=bindparam("new_hash"))
        self._insert = insert(table)

    def canonical_form(self, values: Mapping[str, object], prev_hash: str) -> bytes:
        form = {member: values[column] for member, column in self.members.items()}
        form["prev"] = prev_hash
        return json.dumps(form, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def hash_of(self, values: Mapping[str, object], prev_hash: str) -> str:
        return hashlib.sha256(self.canonical_form(values, prev_hash)).hexdigest()

    def row_hash(self, row) -> str:
        """The hash a stored row (an ORM object or a result row) should have."""
        values = {column: getattr(row, column) for column in self.members.values()}
        return self.hash_of(values, row.prev_hash)

    def append(self, session: Session | Connection, values: Mapping[str, object]) -> dict:
        """Append a row of ``values`` (every column but ``seq``, ``prev_hash`` and ``hash``); the row as written.

        ``session`` is an ORM session or a Core connection, inside the caller's transaction.
        """
        # Plain UPDATE ... RETURNING, INSERT and UPDATE, built once and run on the session's connection in its
        # transaction (the ORM's flush, update bookkeeping and per-statement session dispatch cost more than the SQL).
        connection = session.connection() if isinstance(session, Session) else session
        # The UPDATE takes the head row's lock first, so concurrent appends queue up here.
        seq, prev_hash = connection.execute(self._take_next_seq).one()
        row = {**values, "seq": seq, "prev_hash": prev_hash}
        row["hash"] = self.hash_of(row, prev_hash)
        connection.execute(self._insert, {column: row[column] for column in self._columns})
        connection.execute(self._set_last_hash, {"new_hash": row["hash"]})
        return row

    def verify(self, session: Session, batch: int = 2000) -> Verification:
        """Walk the whole chain and name the first broken link."""
        span = self.verify_span(session, 1, None, batch=batch)
        return span if not span.ok else self.verify_head(session, span)

    def verify_span(self, session: Session, first: int = 1, last: int | None = None, *, batch: int = 2000) -> Verification:
        """Check rows ``first`` .. ``last`` (to the end when None): each present, linked to the one before, matching its hash.

        Row ``first`` is checked against the stored hash of row ``first - 1`` (the genesis value for row 1), so a long
        chain can be verified in consecutive spans, each in a request of its own; the spans together check what one
        walk checks, but for the head row (:meth:`verify_head`). ``last_seq`` and ``last_hash`` of the answer name the
        last row checked.
        """
        noun, seq_column = self.noun, self.table.c.seq
        first = max(1, first)
        if first == 1:
            prev_hash, last_seen = GENESIS, 0
        else:
            before = session.execute(select(self.table.c.seq, self.table.c.hash).where(seq_column == first - 1)).first()
            if before is None:
                return Verification(False, 0, first - 1, f"{noun} #{first - 1} is missing")
            prev_hash, last_seen = before.hash, first - 1
        expected_seq, checked = first, 0
        while last is None or expected_seq <= last:
            query = select(self.table).where(seq_column >= expected_seq)
            if last is not None:
                query = query.where(seq_column <= last)
            rows = session.execute(query.order_by(seq_column).limit(batch)).all()
            if not rows:
                break
            for row in rows:
                if row.seq != expected_seq:
                    return Verification(
                        False, checked, expected_seq, f"{noun} #{expected_seq} is missing (the next one present is #{row.seq})"
                    )
                if row.prev_hash != prev_hash:
                    return Verification(
                        False, checked, row.seq, f"{noun} #{row.seq} does not link to {noun} #{row.seq - 1} (its prev_hash differs)"
                    )
                if self.row_hash(row) != row.hash:
                    return Verification(False, checked, row.seq, f"{noun} #{row.seq} was altered: its content no longer matches its hash")
                prev_hash, last_seen = row.hash, row.seq
                expected_seq += 1
                checked += 1
        if last is not None and last_seen < last:
            return Verification(False, checked, last_seen + 1, f"{noun} #{last_seen + 1} is missing (none is present up to #{last})")
        return Verification(True, checked, last_seq=last_seen, last_hash=prev_hash)

    def verify_head(self, session: Session, span: Verification) -> Verification:
        """After a span that reached the chain's end: does the head row name its last row (none was removed from the end)?"""
        noun, checked, last_seen = self.noun, span.checked, span.last_seq
        head = session.execute(select(self.head.c.last_seq, self.head.c.last_hash).where(self.head.c.id == 1)).first()
        if head is None:
            return Verification(False, checked, None, f"the {self.name} head row is missing")
        if head.last_seq != last_seen:
            return Verification(
                False,
                checked,
                last_seen + 1,
                f"the {self.name} ends at {noun} #{last_seen} but the head records #{head.last_seq}: some were removed from the end",
            )
        if head.last_hash != span.last_hash:
            return Verification(False, checked, last_seen, f"the head's hash does not match {noun} #{last_seen}")
        return span

    def last_seq(self, session: Session) -> int:
        """The head's last sequence number (0 for an empty chain or no head)."""
        return session.execute(select(self.head.c.last_seq).where(self.head.c.id == 1)).scalar() or 0
