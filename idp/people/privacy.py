"""A resident's privacy: the notice accepted, the halls that received their data, export, closure.

* The privacy notice (:mod:`idp.people.privacy_notices`) is accepted at registration and
  again whenever the version in force (``idp.privacy_version``) is not the one the account
  accepted: :func:`at_login` says so, the pages ask before going on. Accounts with no
  acceptance on record (made on the command line or at a counter) are not stopped at
  login. Every acceptance is audited with its version.
* :func:`halls`: the clients an account has used, from what the IdP itself stores (the
  sessions' clients, consents, authorization codes, refresh tokens): what they received
  (scopes) and when, first and last. :func:`revoke_hall` ends the consent and every
  refresh token (and the access tokens of the same grants) of that client for the account.
* :func:`export`: the account's data as a JSON-ready dict; never a secret (password hash,
  session secrets, token hashes) and the resident ID only masked.
* Closure: :func:`request_closure` (with the current password) sets a due date after the
  cooling-off period; logging in before it cancels it (:func:`at_login`); the periodic job
  (:func:`carry_out_due`) disables the account, ends its sessions and tokens, and marks its
  records for deletion after the retention period.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core import audit
from core import db as core_db
from core.db import utc_now
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import (
    Account,
    AuthorizationCode,
    CertificateBinding,
    Client,
    Consent,
    IdentityProofing,
    PrivacyState,
    RefreshToken,
    SessionClient,
    SSOSession,
)
from idp.people import accounts, sessions

EXPORT_FORMAT = "hallmark-account-export/1"
HISTORY_LIMIT = 50


class PrivacyRefusal(Refusal):
    pass


ACCEPT_PATH = "/account/privacy/accept"  # the page (idp.privacy_pages) where a newer notice is accepted


def accept_url(next_url: str) -> str:
    """Where a login goes first when the notice in force is not the one the account accepted."""
    return ACCEPT_PATH + "?" + urlencode({"next": next_url})


def _state(db: Session, account_id: str, *, create: bool = False) -> PrivacyState | None:
    row = db.get(PrivacyState, account_id)
    if row is None and create:
        row = PrivacyState(account_id=account_id, accepted_version="")
        db.add(row)
        db.flush()
    return row


# --------------------------------------------------------------------------- the notice


def current_version(ctx: IdPContext) -> str:
    return ctx.settings.privacy_version


def accept(db: Session, ctx: IdPContext, account_id: str, version: str, *, ip: str = "") -> None:
    """Record that the account accepted ``version`` of the notice (only the version in force can be accepted)."""
    if version != current_version(ctx):
        raise PrivacyRefusal(N_("The privacy notice has changed meanwhile. Read the current one and accept it."), code="privacy_version")
    row = _state(db, account_id, create=True)
    row.accepted_version, row.accepted_at = version, utc_now()
    audit.record(
        db, actor=f"account:{account_id}", action="idp.privacy.accepted", target=account_id, details={"version": version, "ip": ip}
    )


def needs_acceptance(db: Session, ctx: IdPContext, account_id: str) -> bool:
    row = _state(db, account_id)
    return row is None or row.accepted_version != current_version(ctx)


@dataclass(frozen=True)
class AtLogin:
    must_accept: bool  # the notice in force is newer than the one accepted
    closure_cancelled: bool  # a pending closure was cancelled by this login


def at_login(db: Session, ctx: IdPContext, account_id: str) -> AtLogin:
    """What a successful login changes or asks for: a pending closure ends; a newer notice is to be accepted."""
    row = _state(db, account_id)
    cancelled = False
    if row is not None and row.closure_due_at is not None and row.closed_at is None:
        cancel_closure(db, account_id, actor=f"account:{account_id}", reason="login")
        cancelled = True
    # Asked again when the version accepted is not the one in force. An account with no acceptance on record (made by
    # an operator, at a counter, or before notices were versioned) is not stopped here: it has accepted no version to
    # be older than (it accepts at its next registration-like step, or an operator asks it to).
    must_accept = row is not None and row.accepted_version != current_version(ctx)
    return AtLogin(must_accept=must_accept, closure_cancelled=cancelled)


# --------------------------------------------------------------------------- halls used


def halls(db: Session, account_id: str) -> list[dict]:
    """The clients this account has used: name, scopes received, first and last use, whether anything is still live."""
    found: dict[str, dict] = {}

    def seen(client_id: str, at: datetime | None, scope: str = "", live: bool = False):
        entry = found.setdefault(client_id, {"client_id": client_id, "scopes": set(), "first": None, "last": None, "live": False})
        entry["scopes"].update(s for s in scope.split() if s)
        if at is not None:
            entry["first"] = at if entry["first"] is None or at < entry["first"] else entry["first"]
            entry["last"] = at if entry["last"] is None or at > entry["last"] else entry["last"]
        entry["live"] = entry["live"] or live

    for client_id, first_at in db.execute(
        select(SessionClient.client_id, SessionClient.first_at)
        .join(SSOSession, SSOSession.sid == SessionClient.sid)
        .where(SSOSession.account_id == account_id)
    ):
        seen(client_id, first_at)
    for row in db.scalars(select(Consent).where(Consent.account_id == account_id)):
        seen(row.client_id, row.granted_at, row.scope, live=True)
    for client_id, scope, used_at in db.execute(
        select(AuthorizationCode.client_id, AuthorizationCode.scope, AuthorizationCode.used_at).where(
            AuthorizationCode.account_id == account_id
        )
    ):
        seen(client_id, used_at, scope)
    now = utc_now()
    for client_id, scope, issued_at, revoked_at, rotated_at, expires_at in db.execute(
        select(
            RefreshToken.client_id,
            RefreshToken.scope,
            RefreshToken.issued_at,
            RefreshToken.revoked_at,
            RefreshToken.rotated_at,
            RefreshToken.expires_at,
        ).where(RefreshToken.account_id == account_id)
    ):
        seen(client_id, issued_at, scope, live=revoked_at is None and rotated_at is None and expires_at > now)
    names: dict[str, str] = {}
    if found:
        for client_id, name in db.execute(select(Client.client_id, Client.name).where(Client.client_id.in_(list(found)))):
            names[client_id] = name
    result = []
    for entry in found.values():
        entry["name"] = names.get(entry["client_id"], entry["client_id"])
        entry["scopes"] = sorted(entry["scopes"] | {"openid"})
        result.append(entry)
    result.sort(key=lambda e: e["last"] or datetime.min.replace(tzinfo=now.tzinfo), reverse=True)
    return result


def revoke_hall(db: Session, account_id: str, client_id: str) -> dict:
    """End what ``client_id`` holds for the account: its consent, its refresh tokens (and their access tokens), unused codes."""
    from idp.oidc import consent, tokens  # the OIDC side's own rules for ending a consent and a token family

    if db.get(Client, client_id) is None:
        raise PrivacyRefusal(N_("That hall is not known."), code="unknown_hall", status=404)
    actor = f"account:{account_id}"
    withdrawn = consent.withdraw(db, account_id, client_id)
    families = set(
        db.scalars(
            select(RefreshToken.family_id).where(
                RefreshToken.account_id == account_id, RefreshToken.client_id == client_id, RefreshToken.revoked_at.is_(None)
            )
        )
    )
    for family in sorted(families):
        tokens.revoke_family(db, family, reason="resident_revoked", actor=actor)
    now = utc_now()
    codes = db.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.account_id == account_id, AuthorizationCode.client_id == client_id, AuthorizationCode.used_at.is_(None))
        .values(expires_at=now)
    ).rowcount
    details = {"consent": withdrawn, "token_families": len(families), "codes": codes}
    audit.record(db, actor=actor, action="idp.hall.revoked", target=client_id, details=details)
    return details


# --------------------------------------------------------------------------- login history


def place_of(ip: str) -> str:
    """Where an address is, as far as this machine knows without asking anyone: this computer, a private network, or unknown."""
    try:
        address = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return "unknown"
    if address.is_loopback:
        return "local"
    if address.is_private or address.is_link_local:
        return "intranet"
    return "unknown"


def history(db: Session, account_id: str, limit: int = HISTORY_LIMIT) -> list[SSOSession]:
    """The account's logins (its sessions, ended ones too), newest first."""
    return list(
        db.scalars(select(SSOSession).where(SSOSession.account_id == account_id).order_by(SSOSession.created_at.desc()).limit(limit))
    )


# --------------------------------------------------------------------------- export


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export(db: Session, account_id: str) -> dict:
    """Everything the IdP keeps about the account, for the resident to download. No secret, the ID masked."""
    account = db.get(Account, account_id)
    if account is None:
        raise PrivacyRefusal(N_("There is no such account."), code="no_account", status=404)
    proofing = db.get(IdentityProofing, account_id)
    state = _state(db, account_id)
    return {
        "format": EXPORT_FORMAT,
        "exported_at": _iso(utc_now()),
        "account": {
            "id": account.id,
            "username": account.username,
            "mobile": account.mobile,
            "display_name": account.display_name,
            "kind": account.kind,
            "status": account.status,
            "created_at": _iso(account.created_at),
            "password_changed_at": _iso(account.password_changed_at),
        },
        "proofing": None
        if proofing is None
        else {
            "legal_name": proofing.legal_name,
            "resident_id": proofing.resident_id_masked,
            "method": proofing.method,
            "location": proofing.location,
            "document": proofing.document,
            "verified_at": _iso(proofing.verified_at),
        },
        "privacy": {
            "accepted_version": state.accepted_version if state else None,
            "accepted_at": _iso(state.accepted_at) if state else None,
            "closure_due_at": _iso(state.closure_due_at) if state else None,
        },
        "halls": [
            {
                "client_id": h["client_id"],
                "name": h["name"],
                "scopes": h["scopes"],
                "first_use": _iso(h["first"]),
                "last_use": _iso(h["last"]),
            }
            for h in halls(db, account_id)
        ],
        "consents": [
            {"client_id": c.client_id, "scope": c.scope.split(), "granted_at": _iso(c.granted_at)}
            for c in db.scalars(select(Consent).where(Consent.account_id == account_id))
        ],
        "logins": [
            {
                "at": _iso(s.created_at),
                "last_seen_at": _iso(s.last_seen_at),
                "ended_at": _iso(s.ended_at),
                "ip": s.ip,
                "user_agent": s.user_agent,
                "acr": s.acr,
                "amr": s.amr.split(),
            }
            for s in history(db, account_id, limit=1000)
        ],
        "certificates": [
            {
                "kind": c.kind,
                "subject": c.subject,
                "subject_id": c.subject_id_masked,
                "issuer": c.issuer,
                "serial": c.serial,
                "not_after": _iso(c.not_after),
                "bound_at": _iso(c.bound_at),
                "last_used_at": _iso(c.last_used_at),
                "last_status": c.last_status,
            }
            for c in db.scalars(select(CertificateBinding).where(CertificateBinding.account_id == account_id))
        ],
    }


# --------------------------------------------------------------------------- closure


def closure_of(db: Session, account_id: str) -> PrivacyState | None:
    """The pending closure, if any."""
    row = _state(db, account_id)
    return row if row is not None and row.closure_due_at is not None and row.closed_at is None else None


def request_closure(ctx: IdPContext, account_id: str, password: str, *, ip: str = "") -> datetime:
    """Ask for the account to be closed, proven with its current password; returns when it will be."""
    accounts.check_current_password(  # wrong passwords here count with the account page's
        ctx,
        account_id,
        password,
        ip=ip,
        inactive=lambda: PrivacyRefusal(N_("This account cannot be closed now."), code="cannot_close", status=409),
        wrong=lambda: PrivacyRefusal(N_("The current password is wrong."), code="wrong_current_password", status=403),
    )
    with core_db.transaction(ctx.sessions) as db:
        row = _state(db, account_id, create=True)
        now = utc_now()
        row.closure_requested_at = now
        row.closure_due_at = now + timedelta(days=ctx.settings.closure_cooling_off_days)
        audit.record(
            db,
            actor=f"account:{account_id}",
            action="idp.account.closure_requested",
            target=account_id,
            details={"due": row.closure_due_at.isoformat(), "ip": ip},
        )
        return row.closure_due_at


def cancel_closure(db: Session, account_id: str, *, actor: str, reason: str = "cancelled") -> bool:
    row = closure_of(db, account_id)
    if row is None:
        return False
    row.closure_requested_at = row.closure_due_at = None
    audit.record(db, actor=actor, action="idp.account.closure_cancelled", target=account_id, details={"reason": reason})
    return True


def close_now(db: Session, ctx: IdPContext, account_id: str, *, now: datetime | None = None) -> None:
    """Carry out one closure: disable, end every session and token, drop consents, mark for deletion."""
    now = now or utc_now()
    actor = "job:idp-closures"
    account = db.get(Account, account_id)
    row = _state(db, account_id, create=True)
    if account is not None and account.status != "closed":
        account.status = "closed"
        sessions.end_all_for(db, account_id, actor=actor)
        families = set(
            db.scalars(select(RefreshToken.family_id).where(RefreshToken.account_id == account_id, RefreshToken.revoked_at.is_(None)))
        )
        from idp.oidc import tokens

        for family in sorted(families):
            tokens.revoke_family(db, family, reason="account_closed", actor=actor)
        db.execute(delete(Consent).where(Consent.account_id == account_id))
    row.closed_at = now
    row.closure_due_at = None
    row.delete_after = now + timedelta(days=ctx.settings.closed_retention_days)
    audit.record(db, actor=actor, action="idp.account.closed", target=account_id, details={"delete_after": row.delete_after.isoformat()})


def carry_out_due(ctx: IdPContext, *, now: datetime | None = None) -> int:
    """The periodic job: every closure whose cooling-off has passed is carried out (one transaction each)."""
    now = now or utc_now()
    with core_db.read_only(ctx.sessions) as db:
        due = list(
            db.scalars(select(PrivacyState.account_id).where(PrivacyState.closure_due_at.is_not(None), PrivacyState.closure_due_at <= now))
        )
    for account_id in due:
        with core_db.transaction(ctx.sessions) as db:
            row = closure_of(db, account_id)
            if row is not None and row.closure_due_at <= now:  # not cancelled meanwhile
                close_now(db, ctx, account_id, now=now)
    return len(due)
