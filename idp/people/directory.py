"""The identity provider's :class:`core.people.PeopleDirectory`: who is signed in, and which holders a person or token stands for.

Packages above ``idp`` (the licence library) get this under the service name
``core.people.NAME`` and never import ``idp``. A holder is named by its GB/T 36903
code type and the keyed lookup hash of its code; a full resident ID never leaves
here (the proofing row keeps only its hash and masked form anyway).

* A person stands for themself once real-name verified, and for each active
  enterprise they represent or are an authorised agent of now
  (:func:`idp.people.enterprises.choices_for`).
* An access token stands for the enterprise it was issued while acting for
  (``org_id``), else for its person; a client's own token (client_credentials,
  no ``acr``) stands for nobody.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit, bearer
from core import db as core_db
from core.identifiers import CREDIT_CODE, lookup_hash, mask_credit_code
from core.people import CREDIT_CODE as CREDIT_CODE_TYPE
from core.people import RESIDENT_ID as RESIDENT_ID_TYPE
from core.people import HolderRef, SignedIn
from idp import levels
from idp.context import IdPContext
from idp.models import Account, Client, Enterprise, IdentityProofing
from idp.oidc import tokens
from idp.people import accounts, enterprises, sessions

LOGIN_PATH = "/login"  # idp.pages.login
STEP_UP_PATH = "/login/step-up"  # idp.pages.step_up
# The longest ``next`` a sign-in page follows: an authorization request's URL, RFC 9396 details
# (core.authorization_details.MAX_JSON_BYTES) percent-encoded in it, comes back through the login page.
MAX_NEXT = 16384
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Directory:
    """``core.people.PeopleDirectory`` over the identity provider's accounts, sessions and enterprises."""

    def __init__(self, ctx: IdPContext):
        self.ctx = ctx

    # -- the browser --------------------------------------------------------------------------

    def signed_in(self) -> SignedIn | None:
        from flask import request

        cookie = request.cookies.get(sessions.COOKIE)
        if not cookie:
            return None
        with core_db.transaction(self.ctx.sessions) as db:  # a live session is marked seen (a write now and then)
            row = sessions.from_cookie(db, self.ctx.secret_key, cookie)
            if row is None:
                return None
            account = db.get(Account, row.account_id)
            if account is None or account.status != "active":
                return None
            proofing = db.get(IdentityProofing, account.id)
            # The person's own level: an enterprise's USB key counts for the enterprise only (idp.people.enterprises).
            level = levels.achieved(proofed=proofing is not None, amr=set(row.amr.split()))
            return SignedIn(
                account_id=account.id,
                display_name=account.display_name or accounts.label(account),
                acr=levels.acr_for(level),
                holders=self._holders_of_person(db, account.id, proofing),
            )

    def login_url(self, next_url: str, acr: str | None = None) -> str:
        """The login page (or, for a level above basic, the step-up page, which signs in first) back to ``next_url``.

        ``next_url`` must be a path on this site (an absolute URL of this site is cut to its path);
        anything else raises ValueError, as the login page would refuse it.
        """
        path = _same_origin_path(self.ctx.issuer, next_url)
        if acr is None:
            return LOGIN_PATH + "?" + urlencode({"next": path})
        level = levels.level_of(acr)
        if level is None:
            raise ValueError(f"unknown acr {acr[:40]!r}")
        if level <= 1:
            return LOGIN_PATH + "?" + urlencode({"next": path})
        return STEP_UP_PATH + "?" + urlencode({"next": path, "level": level})

    # -- access tokens ------------------------------------------------------------------------

    def holders_of_token(self, claims: dict) -> tuple[HolderRef, ...]:
        if "acr" not in claims:  # a client's own token (client_credentials): nobody's
            return ()
        with core_db.read_only(self.ctx.sessions) as db:
            org_id = claims.get("org_id")
            if org_id:
                return (self._enterprise_holder(db, str(org_id), str(claims.get("org_name") or "")),)
            sub = claims.get("sub")
            if not isinstance(sub, str) or not sub:
                return ()
            proofing = db.get(IdentityProofing, sub)
            return (_person_holder(proofing),) if proofing is not None else ()

    def token_inactive(self, claims: dict) -> str | None:
        if not isinstance(claims.get("jti"), str) or not claims.get("client_id"):
            return "not an access token of this provider"
        if bearer.checked_active(claims):  # this request's bearer check asked the database a moment ago
            return None
        with core_db.read_only_connection(self.ctx.sessions) as connection:
            # Revoked (jti, family, session), session ended, client removed (asked of the database, so a client
            # removed through another process stops at once): one select; enterprise no longer acted for.
            return tokens.inactive_reason(self.ctx, connection, claims)

    def api_token_inactive(self, claims: dict) -> str | None:
        """:meth:`token_inactive` for the bearer check of every JSON API (``core.bearer``), a refusal audited:
        a revoked token used again may be a stolen one."""
        reason = self.token_inactive(claims)
        if reason is not None:
            from flask import has_request_context, request

            client_id = str(claims.get("client_id") or "")[:64]
            with core_db.transaction(self.ctx.sessions) as db:
                audit.record(
                    db,
                    actor=f"client:{client_id}" if client_id else "anonymous",
                    action="idp.token.refused",
                    target=str(claims.get("jti") or "")[:12],
                    details={
                        "reason": reason,
                        "sub": str(claims.get("sub") or "")[:64],
                        "path": request.path[:200] if has_request_context() else "",
                    },
                )
        return reason

    def client_names(self, client_ids: list[str]) -> dict[str, str]:
        wanted = sorted({str(c)[:64] for c in client_ids if c})[:500]
        if not wanted:
            return {}
        with core_db.read_only(self.ctx.sessions) as db:
            return dict(db.execute(select(Client.client_id, Client.name).where(Client.client_id.in_(wanted))).all())

    # -- holders ------------------------------------------------------------------------------

    def _holders_of_person(self, db: Session, account_id: str, proofing: IdentityProofing | None) -> tuple[HolderRef, ...]:
        if proofing is None:
            return ()
        own = [_person_holder(proofing)]
        for choice in enterprises.choices_for(db, account_id):
            own.append(self._credit_code_holder(choice.credit_code, choice.name))
        return tuple(own)

    def _enterprise_holder(self, db: Session, credit_code: str, name: str) -> HolderRef:
        enterprise = db.get(Enterprise, credit_code)
        return self._credit_code_holder(credit_code, enterprise.name if enterprise is not None else name)

    def _credit_code_holder(self, credit_code: str, name: str) -> HolderRef:
        return HolderRef(CREDIT_CODE_TYPE, lookup_hash(self.ctx.lookup_key, CREDIT_CODE, credit_code), mask_credit_code(credit_code), name)


def _person_holder(proofing: IdentityProofing) -> HolderRef:
    return HolderRef(RESIDENT_ID_TYPE, proofing.resident_id_hash, proofing.resident_id_masked, proofing.legal_name)


def is_local_path(value: str) -> bool:
    """Whether ``value`` is a path on this site, safe to redirect to after signing in (never ``//host`` or a scheme)."""
    parts = urlsplit(value) if len(value) <= MAX_NEXT else None
    return not (
        parts is None
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or _CONTROL.search(value)
        or parts.scheme
        or parts.netloc
    )


def _same_origin_path(issuer: str, next_url: str) -> str:
    value = next_url or ""
    base = issuer.rstrip("/")
    if value.startswith(base + "/"):
        value = value[len(base) :]
    if not is_local_path(value):
        raise ValueError("the address to come back to must be a path on this site")
    return value
