"""Accounts: registration, password login with lockout and rate limit, password change.

An account is found by its mobile number (a mainland China number, 11 digits
starting 13-19) or its username (3-32 characters of a-z 0-9 _ . -, starting with
a letter, so it can never look like a mobile number).

Login is built so that the argon2 check, the expensive part, runs outside any
database transaction: on SQLite every writing transaction holds the write lock,
and password checks would otherwise queue behind each other. The account is
looked up in a read-only transaction, which takes no lock.
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit
from core import db as core_db
from core.db import utc_now
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import Account
from idp.people import passwords, sessions

MOBILE = re.compile(r"1[3-9][0-9]{9}")
USERNAME = re.compile(r"[a-z][a-z0-9_.-]{2,31}")
MAX_DISPLAY_NAME = 64
MAX_FAILURES = 5  # consecutive wrong passwords before the account is locked
LOCKOUT = timedelta(minutes=15)
ROLES = ("clerk",)  # staff roles this module knows; stored space-separated in Account.roles


class AccountRefusal(Refusal):
    pass


class LoginRefused(Refusal):
    status = 401


# --------------------------------------------------------------------------- identifiers


@dataclass(frozen=True)
class Identifier:
    kind: str  # "mobile" | "username"
    value: str


def parse_identifier(text: str) -> Identifier:
    """A mobile number or a username as typed, normalised; :class:`AccountRefusal` if it is neither."""
    s = unicodedata.normalize("NFKC", text or "").strip()
    digits = re.sub(r"[\s-]", "", s)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    if digits.isdigit():
        if MOBILE.fullmatch(digits):
            return Identifier("mobile", digits)
        raise AccountRefusal(N_("A mobile number has 11 digits and starts with 13 to 19."), code="bad_mobile")
    name = s.lower()
    if USERNAME.fullmatch(name):
        return Identifier("username", name)
    if not name:
        raise AccountRefusal(N_("Enter a mobile number or a username."), code="identifier_missing")
    raise AccountRefusal(
        N_("A username has 3 to 32 characters: letters a-z, digits and _ . - and starts with a letter."),
        code="bad_username",
    )


def mask_mobile(mobile: str) -> str:
    return mobile[:3] + "****" + mobile[7:] if mobile and len(mobile) == 11 else "*" * len(mobile or "")


def label(account: Account) -> str:
    """How to name an account on a page or in a log line without exposing a full mobile number."""
    return account.username or mask_mobile(account.mobile or "")


def find(db: Session, identifier: str, *, by_id: bool = False) -> Account | None:
    """The account named by a mobile number or a username (or, with ``by_id``, its id); None if none or malformed."""
    text = (identifier or "").strip()
    if by_id and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text):
        return db.get(Account, text)
    try:
        ident = parse_identifier(text)
    except Refusal:
        return None
    return db.scalar(_FIND_BY[ident.kind], {"value": ident.value})


# Built once, so each login does not rebuild (and re-key) its query.
_FIND_BY = {
    "mobile": select(Account).where(Account.mobile == bindparam("value")),
    "username": select(Account).where(Account.username == bindparam("value")),
}


def roles_of(account: Account) -> set[str]:
    return set((account.roles or "").split())


def has_role(account: Account, role: str) -> bool:
    return account.status == "active" and role in roles_of(account)


# --------------------------------------------------------------------------- registration


def clean_display_name(text: str | None) -> str:
    name = " ".join(unicodedata.normalize("NFKC", text or "").split())
    if len(name) > MAX_DISPLAY_NAME:
        raise AccountRefusal(
            N_("The display name may have at most %(max)s characters."), code="display_name_too_long", max=MAX_DISPLAY_NAME
        )
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise AccountRefusal(N_("The display name contains a control character."), code="display_name_control")
    return name


def register(
    db: Session,
    *,
    identifier: str,
    password: str,
    display_name: str = "",
    roles: tuple[str, ...] = (),
    actor: str | None = None,
    ip: str = "",
) -> Account:
    """A new active account. Refuses a taken identifier or a password against the policy."""
    ident = parse_identifier(identifier)
    name = clean_display_name(display_name)
    passwords.check_policy(
        password,
        username=ident.value if ident.kind == "username" else None,
        mobile=ident.value if ident.kind == "mobile" else None,
    )
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise AccountRefusal(N_("Unknown role %(role)s."), code="unknown_role", role=", ".join(sorted(unknown)))
    column = Account.mobile if ident.kind == "mobile" else Account.username
    if db.scalar(select(Account.id).where(column == ident.value)) is not None:
        raise _taken(ident)
    now = utc_now()
    account = Account(
        id=str(uuid.uuid4()),
        username=ident.value if ident.kind == "username" else None,
        mobile=ident.value if ident.kind == "mobile" else None,
        display_name=name or (ident.value if ident.kind == "username" else mask_mobile(ident.value)),
        password_hash=passwords.hash_password(password),
        kind="person",
        roles=" ".join(sorted(set(roles))),
        status="active",
        failed_logins=0,
        locked_until=None,
        locale="zh",
        created_at=now,
        password_changed_at=now,
    )
    try:
        with db.begin_nested():
            db.add(account)
    except IntegrityError:  # registered by a concurrent request a moment ago
        raise _taken(ident) from None
    audit.record(
        db,
        actor=actor or f"account:{account.id}",
        action="idp.account.registered",
        target=account.id,
        details={"by": ident.kind, "name": label(account), "roles": account.roles, "ip": ip},
    )
    return account


def _taken(ident: Identifier) -> AccountRefusal:
    if ident.kind == "mobile":
        return AccountRefusal(N_("This mobile number is already registered. Sign in instead."), code="mobile_taken", status=409)
    return AccountRefusal(N_("This username is taken. Choose another."), code="username_taken", status=409)


def set_status(db: Session, account: Account, status: str, *, actor: str) -> None:
    """Disable or re-enable an account; disabling ends all its sessions."""
    if status not in ("active", "disabled"):
        raise AccountRefusal(N_("Unknown account status %(value)s."), code="bad_status", value=status)
    if account.status == status:
        return
    account.status = status
    if status == "active":
        account.failed_logins, account.locked_until = 0, None
    audit.record(db, actor=actor, action=f"idp.account.{'enabled' if status == 'active' else 'disabled'}", target=account.id)
    if status == "disabled":
        sessions.end_all_for(db, account.id, actor=actor)


# --------------------------------------------------------------------------- rate limit


class TokenBucket:
    """Failed logins allowed per client IP: ``capacity`` at once, then ``rate`` per second.

    The buckets live in this process only. With several workers or nodes an
    address gets that many times the allowance; that is a deliberate
    simplification (no shared store needed), and the per-account lockout, which
    is in the database, still holds across all of them.
    """

    def __init__(self, capacity: float, rate: float, max_keys: int = 50_000):
        self.capacity = capacity
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def wait_time(self, key: str) -> float:
        """Seconds until one more attempt is allowed; 0 when allowed now."""
        with self._lock:
            tokens = self._level(key, time.monotonic())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def take(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._buckets[key] = (self._level(key, now) - 1, now)
            if len(self._buckets) > self.max_keys:
                self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        for key in [k for k in self._buckets if self._level(k, now) >= self.capacity]:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:  # still too many: drop the oldest
            del self._buckets[min(self._buckets, key=lambda k: self._buckets[k][1])]


LOGIN_BUCKET = (20, 1 / 15)  # 20 failed logins per IP at once, then one every 15 seconds


def login_limiter(ctx: IdPContext) -> TokenBucket:
    limiter = ctx.cache.get("idp.accounts.login_limiter")
    if limiter is None:
        limiter = ctx.cache.setdefault("idp.accounts.login_limiter", TokenBucket(*LOGIN_BUCKET))
    return limiter


# --------------------------------------------------------------------------- login


def authenticate(ctx: IdPContext, identifier: str, password: str, *, ip: str = "") -> Account:
    """The account whose password this is, or :class:`LoginRefused` (wrong, locked, disabled, rate-limited).

    Unknown accounts cost the same argon2 check as known ones. Five wrong
    passwords in a row lock the account for 15 minutes.
    """
    limiter = login_limiter(ctx)
    wait = limiter.wait_time(ip)
    if wait > 0:
        raise LoginRefused(
            N_("Too many failed sign-ins from your network. Try again in %(seconds)s seconds."),
            code="rate_limited",
            status=429,
            seconds=int(wait) + 1,
        )
    password = password if isinstance(password, str) else ""
    if len(password) > 4 * passwords.MAX_LENGTH:
        password = password[: 4 * passwords.MAX_LENGTH]  # still checked (and fails), just not at any length

    with core_db.read_only(ctx.sessions) as db:  # a short read, no lock held during the argon2 check
        account = find(db, identifier)
    now = utc_now()

    if account is None:
        passwords.dummy_verify(password)
        limiter.take(ip)
        with core_db.transaction(ctx.sessions) as db:
            audit.record(
                db,
                actor=f"ip:{ip}",
                action="idp.login.failed",
                target="unknown account",
                details={"identifier": _masked_identifier(identifier), "reason": "unknown"},
            )
        raise _wrong()

    if account.locked_until is not None and account.locked_until > now:
        passwords.dummy_verify(password)
        limiter.take(ip)
        raise _locked(account.locked_until, now)

    if not passwords.verify(account.password_hash, password):
        limiter.take(ip)
        with core_db.transaction(ctx.sessions) as db:
            locked_until = _count_failure(db, account.id, ip, now)
        if locked_until is not None:
            raise _locked(locked_until, now)
        raise _wrong()

    if account.status != "active":
        with core_db.transaction(ctx.sessions) as db:
            audit.record(db, actor=f"ip:{ip}", action="idp.login.failed", target=account.id, details={"reason": "disabled"})
        raise LoginRefused(N_("This account is disabled. Contact a service centre."), code="disabled", status=403)

    if account.failed_logins or passwords.needs_rehash(account.password_hash):
        with core_db.transaction(ctx.sessions) as db:
            row = db.get(Account, account.id)
            row.failed_logins = 0
            if passwords.needs_rehash(row.password_hash):
                row.password_hash = passwords.hash_password(password)
                audit.record(
                    db,
                    actor=f"account:{row.id}",
                    action="idp.account.password_rehashed",
                    target=row.id,
                    details={"parameters": passwords.ARGON2_PARAMETERS},
                )
            account = row
    return account


def _count_failure(db: Session, account_id: str, ip: str, now: datetime) -> datetime | None:
    """Count a wrong password atomically; lock at the limit. Returns the lock's end if it locked now."""
    failures = db.execute(
        update(Account).where(Account.id == account_id).values(failed_logins=Account.failed_logins + 1).returning(Account.failed_logins)
    ).scalar_one()
    audit.record(
        db, actor=f"ip:{ip}", action="idp.login.failed", target=account_id, details={"reason": "password", "consecutive": failures}
    )
    if failures < MAX_FAILURES:
        return None
    until = now + LOCKOUT
    db.execute(update(Account).where(Account.id == account_id).values(failed_logins=0, locked_until=until))
    audit.record(
        db,
        actor="system:lockout",
        action="idp.account.locked",
        target=account_id,
        details={"until": until.isoformat(), "after_failures": failures},
    )
    return until


def _wrong() -> LoginRefused:
    return LoginRefused(N_("Wrong mobile number/username or password."), code="wrong_credentials")


def _locked(until: datetime, now: datetime) -> LoginRefused:
    minutes = max(1, -(-int((until - now).total_seconds()) // 60))
    return LoginRefused(
        N_("Too many wrong passwords: this account is locked for %(minutes)s minutes. Try again later."),
        code="locked",
        status=423,
        minutes=minutes,
    )


def _masked_identifier(text: str) -> str:
    try:
        ident = parse_identifier(text)
    except Refusal:
        return "(malformed)"
    return mask_mobile(ident.value) if ident.kind == "mobile" else ident.value


# --------------------------------------------------------------------------- password change


def change_password(db: Session, account_id: str, current: str, new: str, *, keep_sid: str | None = None) -> int:
    """Set a new password after checking the current one; ends every other session. Returns how many ended."""
    account = db.get(Account, account_id)
    if account is None or account.status != "active":
        raise AccountRefusal(N_("This account cannot change its password."), code="not_active", status=403)
    if not passwords.verify(account.password_hash, current or ""):
        raise AccountRefusal(N_("The current password is not right."), code="wrong_current_password", status=403)
    passwords.check_policy(new, username=account.username, mobile=account.mobile)
    if passwords.verify(account.password_hash, new):
        raise AccountRefusal(N_("The new password must differ from the current one."), code="password_unchanged")
    account.password_hash = passwords.hash_password(new)
    account.password_changed_at = utc_now()
    account.failed_logins = 0
    audit.record(db, actor=f"account:{account.id}", action="idp.account.password_changed", target=account.id)
    ended = 0
    for row in sessions.active_for(db, account.id):
        if row.sid != keep_sid and sessions.end(db, row.sid, actor=f"account:{account.id}") is not None:
            ended += 1
    return ended


def set_password(db: Session, account: Account, new: str, *, actor: str) -> None:
    """An operator sets a password (demo accounts, resets): policy applies, every session ends."""
    passwords.check_policy(new, username=account.username, mobile=account.mobile)
    account.password_hash = passwords.hash_password(new)
    account.password_changed_at = utc_now()
    account.failed_logins, account.locked_until = 0, None
    audit.record(db, actor=actor, action="idp.account.password_set", target=account.id)
    sessions.end_all_for(db, account.id, actor=actor)
