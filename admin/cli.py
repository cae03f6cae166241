"""``hallmark admin grant|revoke|roles``: staff roles from the shell (how the first system administrator is made)."""

from __future__ import annotations

import json

import click

from admin import roles
from admin.context import NAME, AdminContext
from core import db as core_db
from core.web.i18n import Refusal

ACTOR = "cli"


def _ctx() -> AdminContext:
    return click.get_current_context().find_root().obj.service(NAME)


def _account(db, identifier: str):
    from idp.people import accounts

    account = accounts.find(db, identifier, by_id=True)
    if account is None:
        raise click.ClickException(f"there is no account {identifier!r} (give a username, a mobile number or an account id)")
    return account


@click.group(name="admin")
def admin_group():
    """Staff roles of the console (/admin)."""


@admin_group.command(name="grant")
@click.argument("account")
@click.argument("role", type=click.Choice(roles.ROLES))
@click.option("--department", help="the department's unified social credit code (for department roles)")
def grant(account, role, department):
    """Give ACCOUNT the staff ROLE (in --department for department roles)."""
    ctx = _ctx()
    try:
        with core_db.transaction(ctx.sessions) as db:
            found = _account(db, account)
            row, made = roles.grant(db, found.id, role, department, actor=ACTOR)
            where = f" in {row.department}" if row.department else ""
    except Refusal as exc:
        raise click.ClickException(exc.english()) from None
    click.echo(f"{account} {'now holds' if made else 'already held'} {role}{where}")


@admin_group.command(name="revoke")
@click.argument("account")
@click.argument("role", type=click.Choice(roles.ROLES))
@click.option("--department", help="the department's unified social credit code (for department roles)")
def revoke(account, role, department):
    """Take the staff ROLE (in --department) back from ACCOUNT."""
    ctx = _ctx()
    try:
        with core_db.transaction(ctx.sessions) as db:
            found = _account(db, account)
            removed = roles.revoke(db, found.id, role, department, actor=ACTOR)
    except Refusal as exc:
        raise click.ClickException(exc.english()) from None
    if not removed:
        raise click.ClickException(f"{account} does not hold {role}" + (f" in {department}" if department else ""))
    click.echo(f"{account} no longer holds {role}" + (f" in {department.upper()}" if department else ""))


@admin_group.command(name="roles")
@click.option("--json", "as_json", is_flag=True, help="print the grants as JSON")
def list_roles(as_json):
    """List every role grant."""
    from idp.models import Account

    ctx = _ctx()
    with core_db.read_only(ctx.sessions) as db:
        rows = []
        for row in roles.all_grants(db):
            account = db.get(Account, row.account_id)
            rows.append(
                {
                    "account": (account.username or account.id) if account else row.account_id,
                    "account_id": row.account_id,
                    "role": row.role,
                    "department": row.department,
                    "granted_at": row.granted_at.isoformat(),
                    "granted_by": row.granted_by,
                }
            )
    if as_json:
        click.echo(json.dumps({"grants": rows}, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("no staff roles granted yet: hallmark admin grant ACCOUNT system_admin")
        return
    for row in rows:
        click.echo(f"{row['account']:<24} {row['role']:<18} {row['department'] or '-':<20} {row['granted_at']}")
