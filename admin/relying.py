"""Relying parties (halls, approval systems) and the matter catalogue, on the services that own them.

Clients: ``idp.oidc.clients`` (add, change, set_resources, new_secret, remove) and
their standing licence grants ``licenses.grants`` (add, revoke); matters:
``idp.levels`` (set_matter). Each of those records its change in the audit trail.
A system administrator does all of this; a department administrator edits the
matters of their own departments (a matter whose department is one of theirs,
named by its credit code or the name the licence library or its seal knows it by).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from admin import roles
from admin.context import AdminContext
from admin.roles import Staff
from core import db as core_db
from core.problems import Problem
from core.web.i18n import N_, Refusal

CLIENT_ADMINS = (roles.SYSTEM_ADMIN,)
MATTER_ADMINS = (roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN)


class ClientRefusal(Refusal):
    status = 422

    def translated(self) -> str:
        from flask_babel import gettext

        params = dict(self.params)
        if "meaning" in params:  # a refusal that carries a msgid of its own (refusal_of): that is translated too
            params["meaning"] = gettext(params["meaning"])
        return gettext(self.message, **params)


class OutsideDepartment(Refusal):
    status = 403


# What a service's refusal means, for a person: by its code, else by what its English detail is about.
BY_CODE = {
    "unknown_type": N_("There is no such licence type."),
    "bad_mode": N_("Choose a mode: compare, read, copy or issue."),
    "bad_matter": N_("A matter is 1 to 100 characters; an issue grant takes no matters."),
}
BY_TOPIC = (
    ("client name", N_("The client's name must have 1 to 100 characters.")),
    (
        "URI",
        N_(
            "A URI is not acceptable: it must be an absolute https:// address (http only to this machine), without a fragment or user information."
        ),
    ),
    ("resource", N_("A resource must be an absolute http(s) URI without a fragment.")),
    ("scope", N_("Give at least one scope: letters, digits and : . _ - /.")),
)


def refusal_of(problem: Problem) -> ClientRefusal:
    """A service's problem as a refusal a page shows: the meaning in the person's language, the service's words after it."""
    code = problem.extensions.get("code", "refused")
    detail = (problem.detail or problem.title)[:400]
    status = 404 if problem.status == 404 else 422
    message = BY_CODE.get(code) or next((m for topic, m in BY_TOPIC if topic in detail), None)
    if message is None:
        return ClientRefusal(N_("Not accepted: %(detail)s"), code=code, status=status, detail=detail)
    return ClientRefusal(N_("%(meaning)s (%(detail)s)"), code=code, status=status, meaning=message, detail=detail)


def _who(person: Staff) -> str:
    return f"account:{person.account_id}"


def _lines(text: str) -> list[str]:
    return [line.strip() for line in str(text or "").replace(",", "\n").splitlines() if line.strip()][:50]


def _words(text: str) -> list[str]:
    return [w for w in str(text or "").replace(",", " ").split() if w][:50]


@dataclass(frozen=True)
class ClientForm:
    name: str
    kind: str  # hall (authorization code, confidential) | system (client credentials)
    redirect_uris: list[str]
    scopes: list[str]
    resources: list[str]
    first_party: bool
    backchannel_logout_uri: str | None


def read_form(form) -> ClientForm:
    return ClientForm(
        name=str(form.get("name", ""))[:200],
        kind="system" if form.get("kind") == "system" else "hall",
        redirect_uris=_lines(form.get("redirect_uris", "")),
        scopes=_words(form.get("scopes", "")),
        resources=_lines(form.get("resources", "")),
        first_party=form.get("first_party") in ("1", "on"),
        backchannel_logout_uri=str(form.get("backchannel_logout_uri", "")).strip()[:500] or None,
    )


def clients(ctx: AdminContext) -> list[dict]:
    from idp.oidc import clients as oidc_clients

    with core_db.read_only(ctx.sessions) as db:
        return [oidc_clients.describe(row) for row in oidc_clients.all_clients(db)]


def client(ctx: AdminContext, client_id: str) -> dict:
    from idp.models import Client
    from idp.oidc import clients as oidc_clients
    from licenses import grants

    with core_db.read_only(ctx.sessions) as db:
        row = db.get(Client, str(client_id)[:64])
        if row is None:
            raise ClientRefusal(N_("There is no such client."), code="unknown_client", status=404)
        shown = oidc_clients.describe(row)
        shown["grants"] = [grants.as_json(g) for g in grants.for_client(db, row.client_id) if g.revoked_at is None]
        return shown


def register(ctx: AdminContext, person: Staff, form: ClientForm) -> tuple[str, str | None]:
    """Register a client; (client id, its secret: shown once, never stored)."""
    from idp.oidc import clients as oidc_clients

    system = form.kind == "system"
    try:
        with core_db.transaction(ctx.sessions) as db:
            made = oidc_clients.add(
                ctx.idp,
                db,
                name=form.name,
                client_type=oidc_clients.CONFIDENTIAL,
                redirect_uris=[] if system else form.redirect_uris,
                grant_types=["client_credentials"] if system else ["authorization_code", "refresh_token"],
                scopes=form.scopes,
                first_party=form.first_party,
                backchannel_logout_uri=form.backchannel_logout_uri,
                resources=form.resources or None,
                actor=_who(person),
            )
    except Problem as problem:
        raise refusal_of(problem) from None
    return made.client_id, made.client_secret


def edit(ctx: AdminContext, person: Staff, client_id: str, form: ClientForm) -> None:
    from idp.oidc import clients as oidc_clients

    try:
        with core_db.transaction(ctx.sessions) as db:
            oidc_clients.change(
                ctx.idp,
                db,
                client_id,
                name=form.name,
                redirect_uris=form.redirect_uris,
                scopes=form.scopes,
                first_party=form.first_party,
                backchannel_logout_uri=form.backchannel_logout_uri,
                actor=_who(person),
            )
            oidc_clients.set_resources(ctx.idp, db, client_id, form.resources or None, actor=_who(person))
    except Problem as problem:
        raise refusal_of(problem) from None


def rotate_secret(ctx: AdminContext, person: Staff, client_id: str) -> str:
    from idp.oidc import clients as oidc_clients

    try:
        with core_db.transaction(ctx.sessions) as db:
            return oidc_clients.new_secret(ctx.idp, db, client_id, actor=_who(person))
    except Problem as problem:
        raise refusal_of(problem) from None


def remove(ctx: AdminContext, person: Staff, client_id: str) -> None:
    from idp.oidc import clients as oidc_clients

    try:
        with core_db.transaction(ctx.sessions) as db:
            oidc_clients.remove(ctx.idp, db, client_id, actor=_who(person))
    except Problem as problem:
        raise refusal_of(problem) from None


def add_grant(ctx: AdminContext, person: Staff, client_id: str, type_code: str, mode: str, matters: str) -> None:
    from idp.models import Client
    from licenses import grants

    try:
        with core_db.transaction(ctx.sessions) as db:
            if db.get(Client, str(client_id)[:64]) is None:
                raise ClientRefusal(N_("There is no such client."), code="unknown_client", status=404)
            grants.add(
                db, client_id=client_id, type_code=str(type_code)[:40], mode=mode, matters=_lines(matters) or None, actor=_who(person)
            )
    except Problem as problem:
        raise refusal_of(problem) from None


def remove_grant(ctx: AdminContext, person: Staff, client_id: str, grant_id: int) -> None:
    from licenses import grants
    from licenses.models import Grant

    try:
        with core_db.transaction(ctx.sessions) as db:
            row = db.get(Grant, grant_id)
            if row is None or row.client_id != client_id:
                raise ClientRefusal(N_("There is no such grant."), code="unknown_grant", status=404)
            grants.revoke(db, grant_id, actor=_who(person))
    except Problem as problem:
        raise refusal_of(problem) from None


def licence_types(ctx: AdminContext) -> list:
    from licenses import catalogue

    with core_db.read_only(ctx.sessions) as db:
        return catalogue.all_types(db)


# -- matters -------------------------------------------------------------------------------------------------------


def department_names(db: Session, person: Staff) -> dict[str, str]:
    """The department administrator's departments: credit code -> the name the licence library or a seal knows."""
    from licenses.models import Issuer
    from signing.models import Seal

    codes = person.departments(roles.DEPARTMENT_ADMIN)
    names = {code: code for code in codes}
    if codes:
        for code, name in db.execute(select(Seal.credit_code, Seal.department).where(Seal.credit_code.in_(sorted(codes)))):
            names[code] = name
        for code, name in db.execute(select(Issuer.credit_code, Issuer.name).where(Issuer.credit_code.in_(sorted(codes)))):
            names[code] = name
    return names


def _may_edit(db: Session, person: Staff, department: str) -> bool:
    if person.has(roles.SYSTEM_ADMIN):
        return True
    names = department_names(db, person)
    return bool(department) and (department in names or department in names.values())


def matters(ctx: AdminContext, person: Staff) -> list:
    from idp import levels

    with core_db.read_only(ctx.sessions) as db:
        return [row for row in levels.all_matters(db) if _may_edit(db, person, row.department)]


def set_matter(ctx: AdminContext, person: Staff, code: str, level: str, name: str, department: str):
    from idp import levels

    try:
        number = int(level)
    except ValueError:
        number = 0
    code = str(code or "").strip()[:64]
    with core_db.transaction(ctx.sessions) as db:
        existing = levels.matter(db, code)
        if not person.has(roles.SYSTEM_ADMIN):
            names = department_names(db, person)
            department = department.strip()
            if existing is not None:
                if not _may_edit(db, person, existing.department):
                    raise OutsideDepartment(N_("This matter belongs to another department."), code="other_department")
                department = existing.department
            elif department not in names.values() and department not in names:
                raise OutsideDepartment(N_("You may add matters only for your own departments."), code="other_department")
            else:
                department = names.get(department, department)
        return levels.set_matter(db, code, level=number, name=name or None, department=department or None, actor=_who(person))
