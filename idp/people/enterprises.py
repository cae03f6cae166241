"""Enterprises, their legal representative, and the agents the representative authorises.

* An enterprise is keyed by its unified social credit code (GB 32100, checksum
  validated). Staff register it with its legal representative, an account that
  is real-name verified (``hallmark idp enterprise add`` or the JSON API).
* The representative authorises agents (经办人) on the account page: an account
  (real-name verified too), the matters it may handle (a list of matter codes, or
  all) and an end date; and revokes any of them at any time.
* A session acts for one party at a time (:class:`~idp.models.SessionActing`): the
  person themselves, or an enterprise as its representative or an agent. Someone
  who may act for an enterprise chooses on the "act for" page; the choice lasts
  for the SSO session and can be changed from the account page.
* The enterprise's USB key: an enterprise certificate (credit code in it) is
  accepted from a person already signed in as themselves who is the enterprise's
  representative or one of its authorised agents. It makes the session act for
  the enterprise with its key proven, which counts as ``hwk`` (level 3) for the
  enterprise's matters only, never for the person's own.
* Codes and tokens issued while acting carry ``org_id`` (the credit code),
  ``org_name`` and ``org_role`` (representative | agent). What a code was issued
  for is remembered (:class:`~idp.models.ActingGrant`) and re-checked whenever a
  token is issued or looked at, so a revoked authorisation ends the agent's
  acting at once: its sessions stop acting for the enterprise, refresh tokens of
  that grant are refused, and its access tokens become inactive.
* When an authorization request names a ``matter``, an agent's scope must cover it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, exists, or_, select, update
from sqlalchemy.orm import Session

from core import audit
from core.db import utc_now
from core.identifiers import InvalidIdentifier, mask_credit_code, validate_credit_code
from idp import levels
from idp.i18n import N_, Refusal
from idp.models import (
    Account,
    ActingGrant,
    AgentAuthorisation,
    Enterprise,
    IdentityProofing,
    Matter,
    SessionActing,
    SSOSession,
)
from idp.people import accounts, sessions

ALL_MATTERS = "*"
REPRESENTATIVE, AGENT, SELF = "representative", "agent", "self"
CHOICE_PATH = "/account/act-for"
MAX_NAME = 100
MAX_MATTERS = 50
MAX_AUTHORISATION = timedelta(days=3 * 366)  # an authorisation is renewed at least every three years
STAFF_SCOPE = "idp:enterprises"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class EnterpriseRefusal(Refusal):
    pass


# --------------------------------------------------------------------------- enterprises


def parse_credit_code(text: str) -> str:
    try:
        return validate_credit_code((text or "").strip()).value
    except InvalidIdentifier as exc:
        reason = exc.reason if "check character" not in exc.reason else "the check character does not match"
        raise EnterpriseRefusal(
            N_("That is not a valid unified social credit code: %(reason)s."), code="bad_credit_code", reason=reason
        ) from None


def clean_name(text: str) -> str:
    name = " ".join((text or "").split())
    if not name or len(name) > MAX_NAME or _CONTROL.search(name):
        raise EnterpriseRefusal(N_("The enterprise name must be 1 to %(max)s characters."), code="bad_name", max=MAX_NAME)
    return name


def _proofed_account(db: Session, identifier: str, what: str) -> Account:
    account = accounts.find(db, identifier, by_id=True)
    if account is None or account.status != "active":
        raise EnterpriseRefusal(N_("There is no active account %(who)s."), code=f"no_{what}", status=404, who=identifier[:40])
    if db.get(IdentityProofing, account.id) is None:
        raise EnterpriseRefusal(
            N_("The account %(who)s is not real-name verified; only verified people can represent or act for an enterprise."),
            code=f"{what}_not_proofed",
            status=422,
            who=accounts.label(account),
        )
    return account


def add(db: Session, *, credit_code: str, name: str, representative: str, actor: str) -> Enterprise:
    """Register an enterprise and its legal representative (staff)."""
    code = parse_credit_code(credit_code)
    name = clean_name(name)
    account = _proofed_account(db, representative, "representative")
    if db.get(Enterprise, code) is not None:
        raise EnterpriseRefusal(N_("This enterprise is already registered."), code="enterprise_exists", status=409)
    now = utc_now()
    row = Enterprise(
        credit_code=code, name=name, representative_id=account.id, status="active", created_at=now, created_by=actor[:200], updated_at=now
    )
    db.add(row)
    db.flush()
    audit.record(db, actor=actor, action="idp.enterprise.added", target=code, details={"name": name, "representative": account.id})
    return row


def set_representative(db: Session, credit_code: str, representative: str, *, actor: str) -> Enterprise:
    """A new legal representative (staff). The old one's sessions stop acting for the enterprise."""
    row = get(db, credit_code)
    account = _proofed_account(db, representative, "representative")
    old = row.representative_id
    row.representative_id, row.updated_at = account.id, utc_now()
    ended = _stop_acting(db, (SessionActing.credit_code == row.credit_code) & (SessionActing.role == REPRESENTATIVE))
    audit.record(
        db,
        actor=actor,
        action="idp.enterprise.representative_changed",
        target=row.credit_code,
        details={"from": old, "to": account.id, "sessions_stopped_acting": ended},
    )
    return row


def get(db: Session, credit_code: str) -> Enterprise:
    row = db.get(Enterprise, parse_credit_code(credit_code))
    if row is None:
        raise EnterpriseRefusal(N_("There is no such enterprise."), code="no_enterprise", status=404)
    return row


def all_enterprises(db: Session, *, limit: int = 500, offset: int = 0) -> list[Enterprise]:
    return list(db.scalars(select(Enterprise).order_by(Enterprise.created_at, Enterprise.credit_code).limit(limit).offset(offset)))


def is_representative(db: Session, account_id: str, credit_code: str) -> bool:
    """Whether the account is the legal representative of the (active) enterprise with this credit code."""
    try:
        code = validate_credit_code((credit_code or "").strip()).value
    except InvalidIdentifier:
        return False
    row = db.get(Enterprise, code)
    return row is not None and row.status == "active" and row.representative_id == account_id


def as_json(db: Session, row: Enterprise, *, with_agents: bool = False) -> dict:
    representative = db.get(Account, row.representative_id)
    body = {
        "credit_code": row.credit_code,
        "name": row.name,
        "status": row.status,
        "representative": {"account_id": row.representative_id, "label": accounts.label(representative) if representative else None},
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
    }
    if with_agents:
        body["agents"] = [authorisation_json(db, a) for a in authorisations_of(db, row.credit_code, include_ended=True)]
    return body


# --------------------------------------------------------------------------- agents


def parse_matters(db: Session, value) -> str:
    """``*`` or known matter codes (a list, or text separated by spaces or commas), stored space-separated."""
    if value in (ALL_MATTERS, "all", ["*"], ["all"]):
        return ALL_MATTERS
    items = value if isinstance(value, list) else re.split(r"[\s,，;；]+", str(value or ""))
    codes = list(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))
    if not codes:
        raise EnterpriseRefusal(N_("Name the matters the agent may handle, or choose all matters."), code="no_matters")
    if len(codes) > MAX_MATTERS:
        raise EnterpriseRefusal(
            N_("At most %(max)s matters may be listed; choose all matters instead."), code="too_many_matters", max=MAX_MATTERS
        )
    unknown = [c for c in codes if len(c) > 64 or db.get(Matter, c) is None]
    if unknown:
        raise EnterpriseRefusal(
            N_("These matters are not in the catalogue: %(codes)s."), code="unknown_matters", codes=", ".join(c[:64] for c in unknown[:5])
        )
    return " ".join(codes)


def authorise_agent(
    db: Session, *, credit_code: str, representative_id: str, agent: str, matters, expires_at: datetime, actor: str | None = None
) -> AgentAuthorisation:
    """The representative authorises an agent; an earlier authorisation of the same agent is replaced."""
    enterprise = get(db, credit_code)
    if enterprise.status != "active" or enterprise.representative_id != representative_id:
        raise EnterpriseRefusal(
            N_("Only the enterprise's legal representative may authorise agents."), code="not_representative", status=403
        )
    agent_account = _proofed_account(db, agent, "agent")
    if agent_account.id == representative_id:
        raise EnterpriseRefusal(
            N_("The legal representative acts for the enterprise already and needs no authorisation."), code="agent_is_representative"
        )
    scope = parse_matters(db, matters)
    now = utc_now()
    if expires_at.tzinfo is None or expires_at <= now:
        raise EnterpriseRefusal(N_("The authorisation must end at a date in the future."), code="bad_expiry")
    if expires_at > now + MAX_AUTHORISATION:
        raise EnterpriseRefusal(N_("An authorisation may last at most three years."), code="bad_expiry")
    actor = actor or f"account:{representative_id}"
    for earlier in authorisations_of(db, enterprise.credit_code):
        if earlier.agent_id == agent_account.id:
            _revoke(db, earlier, actor=actor, reason="replaced")
    row = AgentAuthorisation(
        id=str(uuid.uuid4()),
        credit_code=enterprise.credit_code,
        agent_id=agent_account.id,
        matters=scope,
        granted_by=representative_id,
        granted_at=now,
        expires_at=expires_at.replace(microsecond=0),
    )
    db.add(row)
    db.flush()
    audit.record(
        db,
        actor=actor,
        action="idp.enterprise.agent_authorised",
        target=enterprise.credit_code,
        details={"authorisation": row.id, "agent": agent_account.id, "matters": scope, "expires_at": row.expires_at.isoformat()},
    )
    return row


def revoke_agent(
    db: Session, *, credit_code: str, authorisation_id: str, by_account: str | None = None, actor: str | None = None
) -> AgentAuthorisation:
    """Revoke at once: by the representative (``by_account``) or by staff (``actor`` only)."""
    enterprise = get(db, credit_code)
    if by_account is not None and enterprise.representative_id != by_account:
        raise EnterpriseRefusal(
            N_("Only the enterprise's legal representative may revoke its agents."), code="not_representative", status=403
        )
    row = db.get(AgentAuthorisation, authorisation_id) if isinstance(authorisation_id, str) and len(authorisation_id) <= 36 else None
    if row is None or row.credit_code != enterprise.credit_code:
        raise EnterpriseRefusal(N_("There is no such authorisation."), code="no_authorisation", status=404)
    if row.revoked_at is not None:
        raise EnterpriseRefusal(N_("This authorisation has already been revoked."), code="already_revoked", status=409)
    _revoke(db, row, actor=actor or f"account:{by_account}", reason="revoked")
    return row


def _revoke(db: Session, row: AgentAuthorisation, *, actor: str, reason: str) -> None:
    row.revoked_at, row.revoked_by = utc_now(), actor[:200]
    stopped = _stop_acting(db, SessionActing.authorisation_id == row.id)
    audit.record(
        db,
        actor=actor,
        action="idp.enterprise.agent_revoked",
        target=row.credit_code,
        details={"authorisation": row.id, "agent": row.agent_id, "reason": reason, "sessions_stopped_acting": stopped},
    )


def _stop_acting(db: Session, condition) -> int:
    """Sessions acting under what just ended go back to acting for the person (they choose again)."""
    return db.execute(delete(SessionActing).where(condition).execution_options(synchronize_session=False)).rowcount


def authorisations_of(db: Session, credit_code: str, *, include_ended: bool = False) -> list[AgentAuthorisation]:
    query = select(AgentAuthorisation).where(AgentAuthorisation.credit_code == credit_code)
    if not include_ended:
        query = query.where(AgentAuthorisation.revoked_at.is_(None), AgentAuthorisation.expires_at > utc_now())
    return list(db.scalars(query.order_by(AgentAuthorisation.granted_at.desc())))


def authorisation_json(db: Session, row: AgentAuthorisation) -> dict:
    agent = db.get(Account, row.agent_id)
    return {
        "id": row.id,
        "agent": {"account_id": row.agent_id, "label": accounts.label(agent) if agent else None},
        "matters": ALL_MATTERS if row.matters == ALL_MATTERS else row.matters.split(),
        "granted_at": row.granted_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
        "status": state_of(row),
        **({"revoked_at": row.revoked_at.isoformat()} if row.revoked_at else {}),
    }


def state_of(row: AgentAuthorisation, now: datetime | None = None) -> str:
    if row.revoked_at is not None:
        return "revoked"
    return "expired" if row.expires_at <= (now or utc_now()) else "active"


def covers(matters: str, matter_code: str | None) -> bool:
    return matter_code is None or matters == ALL_MATTERS or matter_code in matters.split()


# --------------------------------------------------------------------------- for whom a session acts


@dataclass(frozen=True)
class Choice:
    """An enterprise an account may act for, and how."""

    credit_code: str
    name: str
    role: str  # representative | agent
    authorisation_id: str | None
    matters: str  # "*" or codes
    expires_at: datetime | None

    @property
    def masked_code(self) -> str:
        return mask_credit_code(self.credit_code)

    def covers(self, matter_code: str | None) -> bool:
        return covers(self.matters, matter_code)


def choices_for(db: Session, account_id: str) -> list[Choice]:
    """Every enterprise the account may act for now: as representative, or as an agent in force."""
    now = utc_now()
    found = [
        Choice(e.credit_code, e.name, REPRESENTATIVE, None, ALL_MATTERS, None)
        for e in db.scalars(select(Enterprise).where(Enterprise.representative_id == account_id, Enterprise.status == "active"))
    ]
    rows = db.execute(
        select(AgentAuthorisation, Enterprise)
        .join(Enterprise, Enterprise.credit_code == AgentAuthorisation.credit_code)
        .where(
            AgentAuthorisation.agent_id == account_id,
            AgentAuthorisation.revoked_at.is_(None),
            AgentAuthorisation.expires_at > now,
            Enterprise.status == "active",
        )
    )
    found += [Choice(e.credit_code, e.name, AGENT, a.id, a.matters, a.expires_at) for a, e in rows]
    return sorted(found, key=lambda c: (c.role != REPRESENTATIVE, c.name))


def may_act_for_any(account_id: ColumnElement, now: ColumnElement) -> ColumnElement:
    """Whether :func:`choices_for` would find anything, as one SQL expression (for a query that has the account).

    The same conditions as :func:`choices_for`; most people act for nobody, and
    this answers that in the query that reads their session.
    """
    represents = exists().where(Enterprise.representative_id == account_id, Enterprise.status == "active")
    is_agent = exists().where(
        AgentAuthorisation.agent_id == account_id,
        AgentAuthorisation.revoked_at.is_(None),
        AgentAuthorisation.expires_at > now,
        Enterprise.credit_code == AgentAuthorisation.credit_code,
        Enterprise.status == "active",
    )
    return or_(represents, is_agent)


def _choice_in_force(db: Session, account_id: str, credit_code: str, role: str, authorisation_id: str | None) -> Choice | None:
    """The choice if it still holds (the representative is still so; the authorisation not revoked or expired)."""
    enterprise = db.get(Enterprise, credit_code)
    if enterprise is None or enterprise.status != "active":
        return None
    if role == REPRESENTATIVE:
        return Choice(credit_code, enterprise.name, role, None, ALL_MATTERS, None) if enterprise.representative_id == account_id else None
    row = db.get(AgentAuthorisation, authorisation_id) if authorisation_id else None
    if row is None or row.agent_id != account_id or row.credit_code != credit_code or state_of(row) != "active":
        return None
    return Choice(credit_code, enterprise.name, AGENT, row.id, row.matters, row.expires_at)


def acting(db: Session, sid: str) -> tuple[SessionActing, Choice | None] | None:
    """What the session acts as: None (no choice made yet), (row, None) for oneself, (row, choice) for an enterprise.

    A choice that no longer holds (an authorisation that expired) is dropped here, so the person chooses again.
    """
    return _acting_of(db, db.get(SessionActing, sid))


def _acting_of(db: Session, row: SessionActing | None) -> tuple[SessionActing, Choice | None] | None:
    if row is None:
        return None
    if row.credit_code is None:
        return row, None
    choice = _choice_in_force(db, row.account_id, row.credit_code, row.role, row.authorisation_id)
    if choice is None:
        db.delete(row)
        db.flush()
        return None
    return row, choice


def choose(db: Session, session: SSOSession, credit_code: str | None, *, matter_code: str | None = None) -> SessionActing:
    """Act for oneself (``credit_code`` None) or for an enterprise one may act for."""
    choice = None
    if credit_code:
        code = parse_credit_code(credit_code)
        choice = next((c for c in choices_for(db, session.account_id) if c.credit_code == code), None)
        if choice is None:
            raise EnterpriseRefusal(N_("You may not act for this enterprise."), code="may_not_act", status=403)
        if not choice.covers(matter_code):
            raise EnterpriseRefusal(
                N_("Your authorisation for this enterprise does not cover this matter."), code="matter_not_covered", status=403
            )
    row = db.get(SessionActing, session.sid)
    keep_key = row is not None and choice is not None and row.credit_code == choice.credit_code and row.key_proven
    if row is None:
        row = SessionActing(sid=session.sid, account_id=session.account_id)
        db.add(row)
    row.account_id = session.account_id
    row.credit_code = choice.credit_code if choice else None
    row.role = choice.role if choice else SELF
    row.authorisation_id = choice.authorisation_id if choice else None
    row.key_proven = keep_key
    row.chosen_at = utc_now()
    db.flush()
    audit.record(
        db,
        actor=f"account:{session.account_id}",
        action="idp.enterprise.acting_chosen",
        target=session.sid[:12],
        details={"credit_code": choice.credit_code if choice else None, "role": row.role, "authorisation": row.authorisation_id},
    )
    return row


def prove_key(db: Session, session: SSOSession, account_id: str, credit_code: str) -> SessionActing:
    """The enterprise's certificate key was proven by this signed-in person: act for the enterprise, key proven."""
    code = parse_credit_code(credit_code)
    enterprise = db.get(Enterprise, code)
    if enterprise is None or enterprise.status != "active":
        raise EnterpriseRefusal(N_("The enterprise of this certificate is not registered here."), code="no_enterprise", status=403)
    choice = next((c for c in choices_for(db, account_id) if c.credit_code == code), None)
    if choice is None:
        raise EnterpriseRefusal(
            N_(
                "You are neither the legal representative of this enterprise nor one of its authorised agents, so its USB key is not accepted from you."
            ),
            code="not_representative_or_agent",
            status=403,
        )
    row = choose(db, session, code)
    row.key_proven = True
    sessions.renew(session)  # the session's level for the enterprise rose: a new cookie (set by the page)
    db.flush()
    return row


def effective_amr(db: Session, session: SSOSession) -> set[str]:
    """The session's methods, plus ``hwk`` while it acts for an enterprise whose key it proved."""
    amr = set(session.amr.split())
    current = acting(db, session.sid)
    if current is not None and current[1] is not None and current[0].key_proven:
        amr.add(levels.HARDWARE_KEY)
    return amr


# --------------------------------------------------------------------------- authorization and tokens


@dataclass(frozen=True)
class Decision:
    """How an authorization request stands with respect to enterprises."""

    ask: str | None  # None | "choose" (no choice made yet) | "not_covered" (the agent's scope lacks the matter)
    choice: Choice | None  # the enterprise acted for, if any
    extra_amr: frozenset = frozenset()


_NOT_READ = object()


def for_authorization(
    db: Session,
    session: SSOSession,
    matter_code: str | None,
    *,
    acting_row: SessionActing | object | None = _NOT_READ,
    may_act: bool | None = None,
) -> Decision:
    """``acting_row`` (the session's :class:`SessionActing` or None) and ``may_act``
    (:func:`may_act_for_any`) when the caller read them already in this transaction."""
    current = acting(db, session.sid) if acting_row is _NOT_READ else _acting_of(db, acting_row)
    if current is None:
        if may_act is None:
            may_act = bool(choices_for(db, session.account_id))
        return Decision("choose" if may_act else None, None)
    row, choice = current
    if choice is None:
        return Decision(None, None)
    if not choice.covers(matter_code):
        return Decision("not_covered", choice)
    return Decision(None, choice, frozenset({levels.HARDWARE_KEY}) if row.key_proven else frozenset())


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()  # as idp.oidc.tokens.digest stores codes


def remember_code(db: Session, code: str, account_id: str, decision: Decision) -> None:
    if decision.choice is None:
        return
    choice = decision.choice
    db.add(
        ActingGrant(
            code_hash=_code_hash(code),
            account_id=account_id,
            credit_code=choice.credit_code,
            org_name=choice.name,
            role=choice.role,
            authorisation_id=choice.authorisation_id,
            created_at=utc_now(),
        )
    )


def claims_of(grant: ActingGrant) -> dict:
    return {"org_id": grant.credit_code, "org_name": grant.org_name, "org_role": grant.role}


def _in_force(db: Session, grant: ActingGrant) -> bool:
    return _choice_in_force(db, grant.account_id, grant.credit_code, grant.role, grant.authorisation_id) is not None


def auth_for_code(db: Session, auth, code_hash: str, family_id: str):
    """The code's Authentication with its enterprise claims; None when the enterprise may no longer be acted for."""
    grant = db.get(ActingGrant, code_hash)
    if grant is None:
        return auth
    if not _in_force(db, grant):
        return None
    db.execute(update(ActingGrant).where(ActingGrant.code_hash == code_hash).values(family_id=family_id))
    return dataclasses.replace(auth, org=claims_of(grant))


def auth_for_family(db: Session, auth, family_id: str):
    """As :func:`auth_for_code`, for a refresh token's family."""
    grant = db.scalar(select(ActingGrant).where(ActingGrant.family_id == family_id)) if family_id else None
    if grant is None:
        return auth
    if not _in_force(db, grant):
        return None
    return dataclasses.replace(auth, org=claims_of(grant))


def token_in_force(db: Session, claims: dict) -> bool:
    """For an access token carrying ``org_id``: whether what it was issued for still holds."""
    if not claims.get("org_id"):
        return True
    family = claims.get("fam")
    grant = db.scalar(select(ActingGrant).where(ActingGrant.family_id == family)) if family else None
    return grant is not None and grant.credit_code == claims["org_id"] and _in_force(db, grant)


def account_summary(db: Session, account_id: str) -> dict:
    """For the account page: enterprises one may act for, and those one represents with their agents."""
    represented = list(db.scalars(select(Enterprise).where(Enterprise.representative_id == account_id).order_by(Enterprise.name)))
    agents = {e.credit_code: authorisations_of(db, e.credit_code) for e in represented}
    labels = {}
    for rows in agents.values():
        for row in rows:
            other = db.get(Account, row.agent_id)
            labels[row.agent_id] = accounts.label(other) if other else row.agent_id[:8]
    return {"choices": choices_for(db, account_id), "represented": represented, "agents": agents, "labels": labels}


def any_for(db: Session, account_id: str) -> bool:
    return (
        db.scalar(select(Enterprise.credit_code).where(Enterprise.representative_id == account_id).limit(1)) is not None
        or db.scalar(
            select(AgentAuthorisation.id).where(AgentAuthorisation.agent_id == account_id, AgentAuthorisation.revoked_at.is_(None)).limit(1)
        )
        is not None
    )
