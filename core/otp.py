"""One-time codes sent by text message: 6 digits, single use, 5 minutes, a few tries, sends limited per number and address.

:class:`TextCodes` is what a package uses: ``send(db, phone=..., purpose=..., ip=...)``
makes a code, keeps only its keyed hash (``core_otp_codes``), voids the earlier
unused codes of that number and purpose, and queues the text (core.sms) in the
caller's transaction; ``check(db, ...)`` takes the newest live code of that number
and purpose, counts a wrong try, and spends the code on a right one.

Sends are limited (core.ratelimit, shared by every node): per number one a minute
and five an hour, per address ten at once then one a minute, so nobody can flood a
phone or run up the SMS bill. A code survives :data:`MAX_TRIES` wrong tries, so
guessing one of a million in five tries has odds of 1 in 200,000 per code sent.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core import ratelimit, sms
from core.db import utc_now
from core.models import OneTimeCode

DIGITS = 6
LIFETIME = timedelta(minutes=5)
MAX_TRIES = 5
PER_NUMBER_MINUTE = (1, 1 / 60)
PER_NUMBER_HOUR = (5, 5 / 3600)
PER_ADDRESS = (10, 1 / 60)


class Limited(Exception):
    """Too many codes asked for: ``seconds`` until the next may be sent, ``by`` is "number" or "address"."""

    def __init__(self, seconds: float, by: str):
        super().__init__(f"too many codes for this {by}; wait {int(seconds) + 1} s")
        self.seconds = int(seconds) + 1
        self.by = by


@dataclass(frozen=True)
class Checked:
    ok: bool
    reason: str = ""  # "", "wrong", "expired" (no live code: none sent, used, too old or too many tries)


class TextCodes:
    def __init__(self, sessions: sessionmaker, key: bytes):
        self.sessions = sessions
        self._key = key
        self._limits = (
            ("number", ratelimit.SharedBucket(sessions, "otp.number.minute", *PER_NUMBER_MINUTE)),
            ("number", ratelimit.SharedBucket(sessions, "otp.number.hour", *PER_NUMBER_HOUR)),
        )
        self._per_address = ratelimit.SharedBucket(sessions, "otp.address", *PER_ADDRESS)

    def _subject(self, purpose: str, phone: str) -> str:
        return hmac.new(self._key, f"otp-subject\x00{purpose}\x00{phone}".encode(), hashlib.sha256).hexdigest()

    def _code_hash(self, subject: str, code: str) -> str:
        return hmac.new(self._key, f"otp-code\x00{subject}\x00{code}".encode(), hashlib.sha256).hexdigest()

    def send(self, db: Session, *, phone: str, purpose: str, ip: str) -> str:
        """Make and text a code (in ``db``'s transaction); raises :class:`Limited` or ``sms.BadPhone``. Returns the masked number."""
        phone = sms.normalise_phone(phone)
        waits = [(bucket.wait_time(phone, db=db), by) for by, bucket in self._limits]
        waits.append((self._per_address.wait_time(ip, db=db), "address"))
        seconds, by = max(waits)
        if seconds > 0:
            raise Limited(seconds, by)
        for _, bucket in self._limits:
            bucket.take(phone, db=db)
        self._per_address.take(ip, db=db)
        subject = self._subject(purpose, phone)
        now = utc_now()
        db.execute(
            update(OneTimeCode)
            .where(OneTimeCode.subject == subject, OneTimeCode.used_at.is_(None))
            .values(used_at=now)  # only the newest code works
        )
        code = f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"
        db.add(
            OneTimeCode(
                purpose=purpose,
                subject=subject,
                code_hash=self._code_hash(subject, code),
                created_at=now,
                expires_at=now + LIFETIME,
                tries=0,
            )
        )
        sms.send(db, phone=phone, purpose=purpose, params={"code": code, "minutes": str(int(LIFETIME.total_seconds() // 60))})
        return sms.mask_phone(phone)

    def check(self, db: Session, *, phone: str, purpose: str, code: str) -> Checked:
        """Spend the live code of ``phone`` and ``purpose`` if ``code`` is it; count a wrong try (in ``db``'s transaction)."""
        try:
            phone = sms.normalise_phone(phone)
        except sms.BadPhone:
            return Checked(False, "expired")
        subject = self._subject(purpose, phone)
        now = utc_now()
        row = db.scalars(
            select(OneTimeCode)
            .where(OneTimeCode.subject == subject, OneTimeCode.used_at.is_(None), OneTimeCode.expires_at > now)
            .order_by(OneTimeCode.id.desc())
            .limit(1)
            .with_for_update()
        ).first()
        if row is None or row.tries >= MAX_TRIES:
            return Checked(False, "expired")
        typed = "".join(ch for ch in (code or "") if ch.isdigit())[:DIGITS]
        if not hmac.compare_digest(row.code_hash, self._code_hash(subject, typed)):
            row.tries += 1
            if row.tries >= MAX_TRIES:
                row.used_at = now  # spent by guessing: a new code must be sent
            return Checked(False, "wrong")
        row.used_at = now
        return Checked(True)
