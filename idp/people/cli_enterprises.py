"""``hallmark idp enterprise ...``: enterprises and their legal representatives (staff), thin over ``idp.people.enterprises``."""

from __future__ import annotations

import json

import click

from core import db as core_db
from core.identifiers import mask_credit_code
from idp.context import IdPContext
from idp.i18n import Refusal
from idp.models import Account
from idp.people import accounts, enterprises


def _ctx() -> IdPContext:
    return click.get_current_context().find_root().obj.idp()


@click.group(name="enterprise")
def enterprise():
    """Enterprises (keyed by unified social credit code), their legal representatives and agents."""


@enterprise.command(name="add")
@click.option("--credit-code", required=True, help="the unified social credit code (18 characters, checksum validated)")
@click.option("--name", required=True, help="the registered name")
@click.option(
    "--representative", required=True, help="the legal representative's account: username, mobile number or id (real-name verified)"
)
def add(credit_code, name, representative):
    """Register an enterprise and its legal representative."""
    try:
        with core_db.transaction(_ctx().sessions) as db:
            row = enterprises.add(db, credit_code=credit_code, name=name, representative=representative, actor="cli")
            who = accounts.label(db.get(Account, row.representative_id))
    except Refusal as exc:
        raise click.ClickException(exc.english()) from None
    click.echo(f"enterprise {row.name} ({mask_credit_code(row.credit_code)}) registered; legal representative {who}")


@enterprise.command(name="set-representative")
@click.argument("credit_code")
@click.option("--representative", required=True, help="the new legal representative's account (real-name verified)")
def set_representative(credit_code, representative):
    """Change the legal representative (the old one's sessions stop acting for the enterprise)."""
    try:
        with core_db.transaction(_ctx().sessions) as db:
            row = enterprises.set_representative(db, credit_code, representative, actor="cli")
            who = accounts.label(db.get(Account, row.representative_id))
    except Refusal as exc:
        raise click.ClickException(exc.english()) from None
    click.echo(f"{row.name}: legal representative is now {who}")


@enterprise.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="print JSON, with each enterprise's agents")
def list_enterprises(as_json):
    """Registered enterprises."""
    with _ctx().sessions() as db:
        rows = enterprises.all_enterprises(db)
        if as_json:
            click.echo(json.dumps([enterprises.as_json(db, r, with_agents=True) for r in rows], ensure_ascii=False, indent=2))
            return
        for row in rows:
            representative = db.get(Account, row.representative_id)
            agents = len(enterprises.authorisations_of(db, row.credit_code))
            click.echo(
                f"{mask_credit_code(row.credit_code)}  {row.name}  representative {accounts.label(representative) if representative else '?'}"
                f"  agents {agents}  {row.status}"
            )
        if not rows:
            click.echo("no enterprises")


COMMANDS = [enterprise]
