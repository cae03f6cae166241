"""Account recovery (忘记密码): a text code to the confirmed number, the real name for real-name accounts, a new password.

1. :func:`start`: a ``recover`` code is texted to the number if an active account has
   it confirmed; otherwise nothing is sent and the answer is the same
   (``idp.people.phone.send_if_known``).
2. :func:`finish`: the new password must pass the policy (before the code is spent);
   the code must be right (wrong codes are audited and limited, see idp.people.phone);
   a real-name account must also give its legal name and resident ID, compared with its
   proofing (keyed hash; a mismatch is audited and spends the code, so each try costs a
   text). Then the password is set, every session of the account ends (single logout
   tells the halls), every refresh token family is revoked with its access tokens, the
   reset is audited (``idp.account.recovered``) and the owner is texted (``password_reset``).

The refusals do not tell an unknown number from a wrong code.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from core import audit, sms
from core import db as core_db
from core.db import utc_now
from core.identifiers import InvalidIdentifier, validate_resident_id
from idp.context import IdPContext
from idp.i18n import N_
from idp.models import Account, RefreshToken
from idp.people import passwords, phone, realname, sessions


class RecoveryRefusal(phone.PhoneRefusal):
    pass


def start(ctx: IdPContext, *, number: str, ip: str) -> str:
    return phone.send_if_known(ctx, phone=number, purpose="recover", ip=ip)


def finish(ctx: IdPContext, *, number: str, code: str, new_password: str, name: str = "", resident_id: str = "", ip: str = "") -> Account:
    number = phone.parse(number)
    passwords.check_policy(new_password, mobile=number)
    number = phone.check(ctx, phone=number, purpose="recover", code=code, ip=ip)
    new_hash = passwords.hash_password(new_password)
    with core_db.transaction(ctx.sessions) as db:
        account = phone.confirmed_account(db, number)
        if account is None:
            raise RecoveryRefusal(N_("The code is wrong or no longer valid. Ask for a new one."), code="code_wrong", status=400)
        proofing = realname.proofing_of(db, account.id)
        if proofing is not None and not _same_person(ctx, proofing, name, resident_id):
            audit.record(
                db,
                actor=f"ip:{ip}",
                action="idp.recovery.refused",
                target=account.id,
                details={"reason": "realname", "phone": sms.mask_phone(number)},
            )
            refused = RecoveryRefusal(
                N_("The name and resident ID do not match this account's real-name verification. Ask for a new code and try again."),
                code="realname_mismatch",
                status=403,
            )
        else:
            refused = None
            account.password_hash = new_hash
            account.password_changed_at = utc_now()
            account.failed_logins, account.locked_until = 0, None
            actor = f"account:{account.id}"
            ended = sessions.end_all_for(db, account.id, actor=actor)
            families = revoke_tokens(db, account.id, actor=actor)
            audit.record(
                db,
                actor=actor,
                action="idp.account.recovered",
                target=account.id,
                details={
                    "by": "sms" + ("+realname" if proofing is not None else ""),
                    "ip": ip,
                    "sessions": ended,
                    "token_families": families,
                },
            )
            stamp = datetime.now(UTC).astimezone(_zone()).strftime("%Y-%m-%d %H:%M")
            sms.send(db, phone=number, purpose="password_reset", params={"time": stamp})
    if refused is not None:  # the audit above is committed; the refusal goes out after it
        raise refused
    return account


def _same_person(ctx: IdPContext, proofing, name: str, resident_id: str) -> bool:
    try:
        rid = validate_resident_id((resident_id or "").strip().upper())
    except InvalidIdentifier:
        return False
    return realname.id_hash(ctx, rid) == proofing.resident_id_hash and realname.normalise_name(name) == realname.normalise_name(
        proofing.legal_name
    )


def revoke_tokens(db, account_id: str, *, actor: str) -> int:
    """Revoke every live refresh-token family of the account, with the access tokens issued from it."""
    from idp.oidc import tokens  # the OIDC side's own rule for ending a token family

    families = set(
        db.scalars(select(RefreshToken.family_id).where(RefreshToken.account_id == account_id, RefreshToken.revoked_at.is_(None)))
    )
    for family in sorted(families):
        tokens.revoke_family(db, family, reason="password reset", actor=actor)
    return len(families)


def _zone():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")
