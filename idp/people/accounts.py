"""Accounts: registration, password login guarded by proof of work (no lockout), password change.

An account is found by its mobile number (a mainland China number, 11 digits
starting 13-19) or its username (3-32 characters of a-z 0-9 _ . -, starting with
a letter, so it can never look like a mobile number).

Login is built so that the argon2 check, the expensive part, runs outside any
database transaction: on SQLite every writing transaction holds the write lock,
and password checks would otherwise queue behind each other. The account is
looked up in a read-only transaction, which takes no lock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit, ratelimit
from core import db as core_db
from core.db import utc_now
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import Account
from idp.people import loginguard, passwords, sessions

MOBILE = re.compile(r"1[3-9][0-9]{9}")
USERNAME = re.compile(r"[a-z][a-z0-9_.-]{2,31}")
MAX_DISPLAY_NAME = 64
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


def registration_allowed(ctx: IdPContext, ip: str) -> None:
    """Count one registration attempt from ``ip`` (the ``register`` limit); a 429 refusal past the limit.

    Every attempt counts, taken names and refused passwords too: each costs an argon2
    hash, and a taken name answers a question. Counted in its own transaction, so a
    registration that fails afterwards is still counted.
    """
    wait = limiter(ctx, "idp.accounts.register", ctx.settings.limit("register")).attempt(ip)
    if wait > 0:
        raise rate_limited(N_("Too many registrations from your network. Try again in %(seconds)s seconds."), wait)


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
    # Hashed before asking whether the name is taken: a taken name costs the asker what a registration costs.
    password_hash = passwords.hash_password(password)
    column = Account.mobile if ident.kind == "mobile" else Account.username
    if db.scalar(select(Account.id).where(column == ident.value)) is not None:
        raise _taken(ident)
    now = utc_now()
    account = Account(
        id=str(uuid.uuid4()),
        username=ident.value if ident.kind == "username" else None,
        mobile=ident.value if ident.kind == "mobile" else None,
        display_name=name or (ident.value if ident.kind == "username" else mask_mobile(ident.value)),
        password_hash=password_hash,
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
    # The status of any other refusal of the form (400): the message is the one thing it tells (docs/idp.md).
    if ident.kind == "mobile":
        return AccountRefusal(N_("This mobile number is already registered. Sign in instead."), code="mobile_taken")
    return AccountRefusal(N_("This username is taken. Choose another."), code="username_taken")


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


def limiter(ctx: IdPContext, name: str, limit: ratelimit.Limit | tuple[float, float]) -> ratelimit.SharedBucket:
    """The shared limit ``name`` (core.ratelimit: counted in the database, so every worker and node shares it).

    ``limit``: a :class:`~core.ratelimit.Limit` from the settings, or capacity and rate per second.
    """
    return ratelimit.shared(ctx.cache, ctx.sessions, name, limit)


def rate_limited(message: str, wait: float, **params) -> AccountRefusal:
    """A 429 refusal saying when to try again (``%(seconds)s`` in ``message``), with Retry-After."""
    seconds = ratelimit.retry_after(wait)
    return AccountRefusal(message, code="rate_limited", status=429, retry_after=seconds, seconds=seconds, **params)


# --------------------------------------------------------------------------- login


class ChallengeNeeded(LoginRefused):
    """The attempt must carry a solved proof-of-work challenge (idp.people.loginguard); the page's script solves one."""


def login_needs(ctx: IdPContext, identifier: str, ip: str) -> tuple[int, int]:
    """(maxnumber, delay) of the challenge the next attempt of ``identifier`` from ``ip`` needs; (0, 0): none.

    The same for a name with an account and one without: both are counted by the name as typed.
    """
    return loginguard.needed(ctx, name=_failure_key(ctx, identifier), ip=ip)


def authenticate(ctx: IdPContext, identifier: str, password: str, *, ip: str = "", proof: str = "") -> Account:
    """The account whose password this is, or :class:`LoginRefused` (wrong, disabled, or a challenge needed).

    No lockout: past a few wrong passwords for the name or from the address, an attempt
    must carry a solved proof-of-work challenge (``proof``, see idp.people.loginguard)
    whose difficulty doubles with each failure. The owner, with the right password and
    a solved challenge, always gets in. Unknown names cost the same argon2 check as
    known ones and are counted and challenged the same way, so the answers do not tell
    whether an account exists.
    """
    name = _failure_key(ctx, identifier)
    # One short read, no lock held during the argon2 check: what the attempt needs, then the account.
    with core_db.read_only(ctx.sessions) as db:
        maxnumber, _ = loginguard.needed(ctx, name=name, ip=ip, db=db)
        account = find(db, identifier)
    if maxnumber:
        with core_db.transaction(ctx.sessions) as db:
            why = loginguard.spend(ctx, db, proof, maxnumber=maxnumber)
            if why and why != "missing":
                audit.record(
                    db,
                    actor=f"ip:{ip}",
                    action="idp.login.challenge_refused",
                    target=account.id if account is not None else "unknown account",
                    details={"reason": why, "identifier": _masked_identifier(identifier)},
                )
        if why:
            raise ChallengeNeeded(
                N_("For your account's safety, this sign-in needs a short security check that your browser does by itself. Try again."),
                code="challenge_required",
                status=401,
            )
    password = password if isinstance(password, str) else ""
    if len(password) > 4 * passwords.MAX_LENGTH:
        password = password[: 4 * passwords.MAX_LENGTH]  # still checked (and fails), just not at any length

    if account is None or not passwords.verify(account.password_hash, password):
        if account is None:
            passwords.dummy_verify(password)  # answered exactly as a known account is
        with core_db.transaction(ctx.sessions) as db:
            count = loginguard.failed(ctx, db, name=name, ip=ip, account=account)
            audit.record(
                db,
                actor=f"ip:{ip}",
                action="idp.login.failed",
                target=account.id if account is not None else "unknown account",
                details={
                    "reason": "password" if account is not None else "unknown",
                    "identifier": _masked_identifier(identifier),
                    "recent": count,
                },
            )
        raise _wrong()

    if account.status != "active":
        with core_db.transaction(ctx.sessions) as db:
            audit.record(db, actor=f"ip:{ip}", action="idp.login.failed", target=account.id, details={"reason": "disabled"})
        raise LoginRefused(N_("This account is disabled. Contact a service centre."), code="disabled", status=403)

    loginguard.succeeded(ctx, name=name)
    if account.failed_logins or account.locked_until is not None or passwords.needs_rehash(account.password_hash):
        with core_db.transaction(ctx.sessions) as db:
            row = db.get(Account, account.id)
            row.failed_logins, row.locked_until = 0, None  # left from the lockout this replaced
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


def _failure_key(ctx: IdPContext, identifier: str) -> str:
    """The name as typed, normalised as :func:`find` reads it, under the instance's lookup key (never stored bare)."""
    try:
        ident = parse_identifier(identifier)
        name = f"{ident.kind}:{ident.value}"
    except Refusal:
        name = "text:" + unicodedata.normalize("NFKC", identifier or "").strip().lower()[:200]
    return hmac.new(ctx.lookup_key, b"idp-login-failures\x00" + name.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _wrong() -> LoginRefused:
    return LoginRefused(N_("Wrong mobile number/username or password."), code="wrong_credentials")


def _masked_identifier(text: str) -> str:
    try:
        ident = parse_identifier(text)
    except Refusal:
        return "(malformed)"
    return mask_mobile(ident.value) if ident.kind == "mobile" else ident.value


# --------------------------------------------------------------------------- password change


def change_password(db: Session, account_id: str, current: str, new: str, *, keep_sid: str | None = None) -> int:
    """Set a new password after checking the current one; ends every other session. Returns how many ended.

    For operators and tests: nothing counts wrong current passwords here. People change
    theirs through :func:`change_own_password`, which does.
    """
    account = db.get(Account, account_id)
    if account is None or account.status != "active":
        raise _cannot_change()
    if not passwords.verify(account.password_hash, current or ""):
        raise _wrong_current()
    return _set_new_password(db, account, passwords.hash_password(_checked_new(account, new)), keep_sid=keep_sid)


def _cannot_change() -> AccountRefusal:
    return AccountRefusal(N_("This account cannot change its password."), code="not_active", status=403)


def _wrong_current() -> AccountRefusal:
    return AccountRefusal(N_("The current password is not right."), code="wrong_current_password", status=403)


def _checked_new(account: Account, new: str) -> str:
    passwords.check_policy(new, username=account.username, mobile=account.mobile)
    if passwords.verify(account.password_hash, new):
        raise AccountRefusal(N_("The new password must differ from the current one."), code="password_unchanged")
    return new


def password_check_limiter(ctx: IdPContext) -> ratelimit.SharedBucket:
    return limiter(ctx, "idp.accounts.password_check", ctx.settings.limit("password_check"))


def check_current_password(
    ctx: IdPContext, account_id: str, password: str, *, ip: str, inactive: Callable[[], Exception], wrong: Callable[[], Exception]
) -> Account:
    """The active account whose current password ``password`` is, or the refusal ``inactive()`` / ``wrong()``.

    Every check of a signed-in person's current password (password change, phone change,
    closing the account) goes through here, so that wrong guesses anywhere count against
    one per-account allowance (``password_check``, shared by every worker) and are
    audited (``idp.account.password_check_failed``). Past the allowance the check is
    refused with 429 before any hash is computed. The argon2 check runs outside any
    transaction (on SQLite one holds the write lock).
    """
    limiter = password_check_limiter(ctx)
    wait = limiter.wait_time(account_id)
    if wait > 0:
        raise rate_limited(N_("Too many wrong current passwords for this account. Try again in %(seconds)s seconds."), wait)
    with core_db.read_only(ctx.sessions) as db:
        account = db.get(Account, account_id)
    if account is None or account.status != "active":
        raise inactive()
    if not passwords.verify(account.password_hash, password if isinstance(password, str) else ""):
        with core_db.transaction(ctx.sessions) as db:
            limiter.take(account_id, db=db)
            audit.record(
                db, actor=f"account:{account_id}", action="idp.account.password_check_failed", target=account_id, details={"ip": ip}
            )
        raise wrong()
    return account


def change_own_password(ctx: IdPContext, account_id: str, current: str, new: str, *, keep_sid: str | None = None, ip: str = "") -> int:
    """The account page's password change: :func:`change_password` after :func:`check_current_password`.

    The counted check means a session someone else got hold of cannot be used to guess
    the password. The new hash, too, is computed outside any transaction.
    """
    account = check_current_password(ctx, account_id, current, ip=ip, inactive=_cannot_change, wrong=_wrong_current)
    new_hash = passwords.hash_password(_checked_new(account, new))
    with core_db.transaction(ctx.sessions) as db:
        row = db.get(Account, account_id)
        if row is None or row.status != "active":
            raise _cannot_change()
        if row.password_hash != account.password_hash:  # changed meanwhile (another device): check against that one
            raise _wrong_current()
        return _set_new_password(db, row, new_hash, keep_sid=keep_sid)


def _set_new_password(db: Session, account: Account, new_hash: str, *, keep_sid: str | None) -> int:
    account.password_hash = new_hash
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
