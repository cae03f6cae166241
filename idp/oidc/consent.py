"""Consent: what a person agreed to share with a hall that is not first-party.

The consent form is bound to the SSO session and to the authorization request it
answers by a signed, time-limited token (CSRF protection). Agreeing stores the
scopes (``idp.models.Consent``, merged with earlier ones); refusing sends
``access_denied`` to the client. RFC 9396 authorization details are agreed to
each time they are asked for, and only audited here (:func:`grant_details`).
"""

from __future__ import annotations

import hashlib

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from core import audit
from core.db import utc_now
from idp.context import IdPContext
from idp.i18n import N_
from idp.models import Consent
from idp.oidc import authorization_details

FORM_MAX_AGE = 30 * 60

# What each scope means to a person (English msgids; pages translate them).
SCOPE_DESCRIPTIONS = {
    "openid": N_("Confirm that you are logged in, and your account identifier"),
    "profile": N_("Your name and user name"),
    "hallmark:realname": N_("Whether your real name is verified, and your masked resident ID number"),
    "offline_access": N_("Keep access while you are away"),
}
HIDDEN_SCOPES = frozenset({"openid"})  # always implied; not asked about on its own


def described_scopes(scopes: list[str]) -> list[tuple[str, str]]:
    """(scope, msgid) for the scopes to show; unknown scopes are shown by their name."""
    return [(s, SCOPE_DESCRIPTIONS.get(s, s)) for s in scopes if s not in HIDDEN_SCOPES] or [("openid", SCOPE_DESCRIPTIONS["openid"])]


def _serializer(ctx: IdPContext) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(ctx.secret_key, salt="hallmark.idp.consent")


def _bind(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def form_token(ctx: IdPContext, sid: str, next_url: str) -> str:
    return _serializer(ctx).dumps([_bind(sid), _bind(next_url)])


def check_form_token(ctx: IdPContext, token: str | None, sid: str | None, next_url: str) -> bool:
    if not token or not sid or len(token) > 300:
        return False
    try:
        bound_sid, bound_next = _serializer(ctx).loads(token, max_age=FORM_MAX_AGE)
    except (BadSignature, ValueError, TypeError):
        return False
    return bound_sid == _bind(sid) and bound_next == _bind(next_url)


def grant(db: Session, account_id: str, client_id: str, scopes: list[str]) -> Consent:
    """Record agreement to ``scopes`` (added to what was agreed before)."""
    now = utc_now()
    row = db.get(Consent, (account_id, client_id))
    wanted = [s for s in scopes if s != "openid"]
    if row is None:
        row = Consent(account_id=account_id, client_id=client_id, scope=" ".join(wanted), granted_at=now)
        db.add(row)
    else:
        merged = list(dict.fromkeys(row.scope.split() + wanted))
        row.scope = " ".join(merged)[:500]
        row.granted_at = now
    db.flush()
    audit.record(db, actor=f"account:{account_id}", action="idp.consent.granted", target=client_id, details={"scope": wanted})
    return row


def grant_details(db: Session, account_id: str, client_id: str, details: tuple[dict, ...]) -> None:
    """Record agreement to RFC 9396 authorization details (kept with the code, not here: they are asked for every time).

    The audit trail gets the client, the details' types and matters, nothing about the person's data.
    """
    audit.record(
        db,
        actor=f"account:{account_id}",
        action="idp.consent.details_granted",
        target=client_id,
        details={"client": client_id, **authorization_details.summary(details)},
    )


def withdraw(db: Session, account_id: str, client_id: str) -> bool:
    row = db.get(Consent, (account_id, client_id))
    if row is None:
        return False
    db.delete(row)
    audit.record(db, actor=f"account:{account_id}", action="idp.consent.withdrawn", target=client_id)
    return True
