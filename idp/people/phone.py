"""Mobile numbers confirmed by text codes: registration, SMS login, SMS as a second factor, changing the number.

Codes come from ``core.otp`` (6 digits, 5 minutes, single use, 5 tries; sends limited
per number and per address in the database). What this module adds:

* **Nothing shows whether a number has an account.** Asking for a login or recovery
  code for a number without a (confirmed) account sends nothing and answers as if it
  had; the same per-number limit is kept for such numbers (:data:`UNKNOWN_NUMBER`),
  so a 429 tells nothing either. A registration code is sent whether the number is
  taken or not: it is said only to whoever proves they hold the number.
* **Guessing is limited on top of the code's 5 tries**: wrong codes per client
  address (``code_check`` limit), each audited (``idp.sms.code_refused``).
* **Levels** (RFC 8176): an SMS login has ``amr`` ``sms`` and reaches level 1 at most
  (``sms_login_level``; 0 turns it off); a text code after a password adds ``sms``
  (``pwd`` + ``sms`` is ``mfa``), which the levels listed in ``second_factor_levels``
  require (idp.levels).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit, otp, ratelimit, sms
from core import db as core_db
from core.db import utc_now
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import Account
from idp.people import accounts, passwords

PURPOSES = ("register", "login", "second_factor", "change_phone", "recover")
UNKNOWN_NUMBER = ((1, 1 / 60), (5, 5 / 3600))  # core.otp's per-number limits, kept for numbers texted nothing
CODE_CHECKS = (10, 1 / 30)  # wrong codes per client address at once, then one every 30 s


class PhoneRefusal(Refusal):
    pass


def codes(ctx: IdPContext) -> otp.TextCodes:
    found = ctx.cache.get("idp.phone.codes")
    if found is None:
        found = ctx.cache.setdefault("idp.phone.codes", otp.TextCodes(ctx.sessions, ctx.lookup_key))
    return found


def parse(text: str) -> str:
    try:
        return sms.normalise_phone(text)
    except sms.BadPhone:
        raise PhoneRefusal(N_("A mobile number has 11 digits and starts with 13 to 19."), code="bad_mobile") from None


def _limited(seconds: float) -> PhoneRefusal:
    seconds = ratelimit.retry_after(seconds)
    return PhoneRefusal(
        N_("A code was sent a moment ago. Wait %(seconds)s seconds before asking for another."),
        code="rate_limited",
        status=429,
        retry_after=seconds,
        seconds=seconds,
    )


def send(ctx: IdPContext, db: Session, *, phone: str, purpose: str, ip: str) -> str:
    """Text a code for ``purpose`` (in ``db``'s transaction); the masked number. 429 past the limits."""
    try:
        return codes(ctx).send(db, phone=phone, purpose=purpose, ip=ip)
    except otp.Limited as exc:
        raise _limited(exc.seconds) from None
    except sms.BadPhone:
        raise PhoneRefusal(N_("A mobile number has 11 digits and starts with 13 to 19."), code="bad_mobile") from None


def _unknown_buckets(ctx: IdPContext):
    return [ratelimit.shared(ctx.cache, ctx.sessions, f"idp.sms.unknown.{n}", limit) for n, limit in enumerate(UNKNOWN_NUMBER)]


def send_if_known(ctx: IdPContext, *, phone: str, purpose: str, ip: str) -> str:
    """Text a ``purpose`` code to ``phone`` if an active account has it confirmed; answer alike when none has (see above)."""
    phone = parse(phone)
    with core_db.transaction(ctx.sessions) as db:
        account = confirmed_account(db, phone)
        if account is not None:
            send(ctx, db, phone=phone, purpose=purpose, ip=ip)
        else:
            wait = max(bucket.wait_time(phone, db=db) for bucket in _unknown_buckets(ctx))
            if wait > 0:
                raise _limited(wait)
            for bucket in _unknown_buckets(ctx):
                bucket.take(phone, db=db)
            audit.record(
                db,
                actor=f"ip:{ip}",
                action="idp.sms.not_sent",
                target="unknown account",
                details={"purpose": purpose, "phone": sms.mask_phone(phone)},
            )
    return sms.mask_phone(phone)


def confirmed_account(db: Session, phone: str) -> Account | None:
    account = db.scalar(select(Account).where(Account.mobile == phone))
    if account is None or account.status != "active" or account.phone_confirmed_at is None:
        return None
    return account


def _checks(ctx: IdPContext) -> ratelimit.SharedBucket:
    return ratelimit.shared(ctx.cache, ctx.sessions, "idp.sms.code_checks", CODE_CHECKS)


def check(ctx: IdPContext, *, phone: str, purpose: str, code: str, ip: str, account_id: str | None = None) -> str:
    """Spend the right code (its own transaction: a wrong try counts even if the caller's work fails); the number.

    Wrong and expired codes are refused alike and audited; wrong ones are limited per address.
    """
    phone = parse(phone)
    wait = _checks(ctx).wait_time(ip)
    if wait > 0:
        seconds = ratelimit.retry_after(wait)
        raise PhoneRefusal(
            N_("Too many wrong codes from your network. Try again in %(seconds)s seconds."),
            code="rate_limited",
            status=429,
            retry_after=seconds,
            seconds=seconds,
        )
    with core_db.transaction(ctx.sessions) as db:
        checked = codes(ctx).check(db, phone=phone, purpose=purpose, code=code)
        if not checked.ok:
            _checks(ctx).take(ip, db=db)
            audit.record(
                db,
                actor=f"ip:{ip}",
                action="idp.sms.code_refused",
                target=account_id or sms.mask_phone(phone),
                details={"purpose": purpose, "reason": checked.reason, "phone": sms.mask_phone(phone)},
            )
    if not checked.ok:
        raise PhoneRefusal(N_("The code is wrong or no longer valid. Ask for a new one."), code="code_wrong", status=400)
    return phone


# -- registration --------------------------------------------------------------------------------


def confirm_registration(ctx: IdPContext, form: dict, password: str, code: str, *, ip: str) -> bool:
    """For a registration by mobile number: spend its ``register`` code (True); False for a username.

    The form's other checks (display name, password policy) come first, so a refused
    password does not spend the code; a number already registered is said only after
    the code, to whoever holds the number (``accounts.register``).
    """
    ident = accounts.parse_identifier(form.get("identifier", ""))
    if ident.kind != "mobile":
        return False
    accounts.clean_display_name(form.get("display_name", ""))
    passwords.check_policy(password, mobile=ident.value)
    if not "".join(ch for ch in (code or "") if ch.isdigit()):
        raise PhoneRefusal(N_("Enter the code texted to your mobile number (press Send code first)."), code="code_missing")
    check(ctx, phone=ident.value, purpose="register", code=code, ip=ip)
    return True


def mark_confirmed(db: Session, account: Account) -> None:
    account.phone_confirmed_at = utc_now()
    audit.record(
        db,
        actor=f"account:{account.id}",
        action="idp.account.phone_confirmed",
        target=account.id,
        details={"phone": sms.mask_phone(account.mobile or "")},
    )


# -- SMS login and second factor -----------------------------------------------------------------


def login(ctx: IdPContext, *, phone: str, code: str, ip: str) -> Account:
    """The account whose confirmed number got this ``login`` code; refused alike for a wrong code and an unknown number."""
    if ctx.settings.sms_login_level < 1:
        raise PhoneRefusal(N_("Signing in with a text code is not offered here."), code="sms_login_off", status=403)
    phone = check(ctx, phone=phone, purpose="login", code=code, ip=ip)
    with core_db.read_only(ctx.sessions) as db:
        account = confirmed_account(db, phone)
    if account is None:  # the number lost its account after the code was sent
        raise PhoneRefusal(N_("The code is wrong or no longer valid. Ask for a new one."), code="code_wrong", status=400)
    return account


def send_second_factor(ctx: IdPContext, account_id: str, *, ip: str) -> str:
    with core_db.transaction(ctx.sessions) as db:
        account = db.get(Account, account_id)
        if account is None or not account.mobile or account.phone_confirmed_at is None:
            raise PhoneRefusal(N_("Confirm a mobile number on your account page first."), code="no_confirmed_phone", status=409)
        return send(ctx, db, phone=account.mobile, purpose="second_factor", ip=ip)


def check_second_factor(ctx: IdPContext, account_id: str, *, code: str, ip: str) -> None:
    with core_db.read_only(ctx.sessions) as db:
        account = db.get(Account, account_id)
    if account is None or not account.mobile or account.phone_confirmed_at is None:
        raise PhoneRefusal(N_("Confirm a mobile number on your account page first."), code="no_confirmed_phone", status=409)
    check(ctx, phone=account.mobile, purpose="second_factor", code=code, ip=ip, account_id=account_id)


# -- a new number ----------------------------------------------------------------------------------


def send_change_code(ctx: IdPContext, account_id: str, *, phone: str, current_password: str, ip: str) -> str:
    """Text a ``change_phone`` code to the new number, after the current password (counted as the account page counts it)."""
    phone = parse(phone)
    _check_password(ctx, account_id, current_password, ip)
    with core_db.transaction(ctx.sessions) as db:
        return send(ctx, db, phone=phone, purpose="change_phone", ip=ip)


def _check_password(ctx: IdPContext, account_id: str, current: str, ip: str) -> None:
    accounts.check_current_password(
        ctx,
        account_id,
        current,
        ip=ip,
        inactive=lambda: PhoneRefusal(N_("This account cannot change its password."), code="not_active", status=403),
        wrong=lambda: PhoneRefusal(N_("The current password is not right."), code="wrong_current_password", status=403),
    )


def change(ctx: IdPContext, account_id: str, *, phone: str, code: str, ip: str) -> str:
    """Bind the new number once its code is right; the old number (if confirmed) is told. Returns the masked new number."""
    phone = check(ctx, phone=phone, purpose="change_phone", code=code, ip=ip, account_id=account_id)
    with core_db.transaction(ctx.sessions) as db:
        account = db.get(Account, account_id)
        if account is None or account.status != "active":
            raise PhoneRefusal(N_("This account cannot change its password."), code="not_active", status=403)
        holder = db.scalar(select(Account.id).where(Account.mobile == phone))
        if holder is not None and holder != account_id:
            raise PhoneRefusal(N_("This mobile number belongs to another account."), code="mobile_taken", status=409)
        old, old_confirmed = account.mobile, account.phone_confirmed_at
        account.mobile, account.phone_confirmed_at = phone, utc_now()
        if old and old != phone and old_confirmed is not None:
            stamp = datetime.now(UTC).astimezone(_zone()).strftime("%Y-%m-%d %H:%M")
            sms.send(db, phone=old, purpose="phone_changed", params={"time": stamp, "phone": sms.mask_phone(phone)})
        audit.record(
            db,
            actor=f"account:{account_id}",
            action="idp.account.phone_changed",
            target=account_id,
            details={"from": sms.mask_phone(old) if old else "", "to": sms.mask_phone(phone), "old_told": bool(old and old_confirmed)},
        )
    return sms.mask_phone(phone)


def _zone():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")
