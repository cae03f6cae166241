"""``hallmark idp account|registry|verify-at-counter|matter``: thin commands over the service modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from core import db as core_db
from core.identifiers import mask_resident_id
from idp import levels
from idp.context import IdPContext
from idp.i18n import Refusal
from idp.people import accounts, passwords, realname


def _ctx() -> IdPContext:
    return click.get_current_context().find_root().obj.idp()


def _instance() -> Path:
    return click.get_current_context().find_root().obj.services().settings.instance


def _refused(exc: Refusal):
    return click.ClickException(exc.english())


# -- accounts -------------------------------------------------------------------------------


@click.group(name="account")
def account_group():
    """Accounts (for demos, tests and staff set-up; residents register on the web)."""


@account_group.command(name="add")
@click.option("--username", help="3-32 characters a-z 0-9 _ . -, starting with a letter")
@click.option("--mobile", help="an 11-digit mainland China mobile number (instead of --username)")
@click.option("--display-name", default="", help="the name shown on pages")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input (else one is generated and printed once)")
@click.option("--role", "roles", multiple=True, type=click.Choice(accounts.ROLES), help="a staff role; repeatable")
def account_add(username, mobile, display_name, password_stdin, roles):
    """Create an account."""
    if bool(username) == bool(mobile):
        raise click.UsageError("give exactly one of --username and --mobile")
    if password_stdin and sys.stdin.isatty():
        password, generated = click.prompt("Password", hide_input=True, confirmation_prompt=True), False
    elif password_stdin:
        password, generated = sys.stdin.readline().rstrip("\r\n"), False
    else:
        password, generated = passwords.generate(), True
    ctx = _ctx()
    try:
        with core_db.transaction(ctx.sessions) as db:
            account = accounts.register(
                db, identifier=username or mobile, password=password, display_name=display_name, roles=tuple(roles), actor="cli"
            )
    except Refusal as exc:
        raise _refused(exc) from None
    click.echo(f"account {accounts.label(account)} created (id {account.id}{', roles: ' + account.roles if account.roles else ''})")
    if generated:
        click.echo(f"password (shown only now): {password}")


def _set_status(identifier: str, status: str) -> None:
    ctx = _ctx()
    try:
        with core_db.transaction(ctx.sessions) as db:
            account = accounts.find(db, identifier, by_id=True)
            if account is None:
                raise click.ClickException(f"there is no account {identifier}")
            accounts.set_status(db, account, status, actor="cli")
    except Refusal as exc:
        raise _refused(exc) from None
    click.echo(f"account {accounts.label(account)} is {status}")


@account_group.command(name="disable")
@click.argument("account")
def account_disable(account):
    """Disable an account (USERNAME, MOBILE or id) and end all its sessions."""
    _set_status(account, "disabled")


@account_group.command(name="enable")
@click.argument("account")
def account_enable(account):
    """Enable a disabled account again (and lift a lockout)."""
    _set_status(account, "active")


# -- real-name verification at the counter --------------------------------------------------


@click.command(name="verify-at-counter")
@click.option("--account", required=True, help="the account's username, mobile number or id")
@click.option("--resident-id", required=True, help="the ID number on the document seen; '-' reads it from standard input")
@click.option("--name", required=True, help="the name on the document")
@click.option("--clerk", required=True, help="username of the clerk who checked (must hold the clerk role)")
@click.option("--location", required=True, help="the service centre where the check took place")
@click.option("--document", required=True, type=click.Choice(list(realname.DOCUMENTS)), help="the document seen")
def verify_at_counter(account, resident_id, name, clerk, location, document):
    """Record an in-person identity check: the account becomes real-name verified."""
    if resident_id == "-":
        resident_id = sys.stdin.readline().strip()
    try:
        target, row = realname.verify_at_counter(
            _ctx(), account=account, resident_id=resident_id, name=name, clerk=clerk, location=location, document=document, via="cli"
        )
    except Refusal as exc:
        raise _refused(exc) from None
    click.echo(
        f"account {accounts.label(target)} verified at the counter: {row.legal_name}, resident ID {row.resident_id_masked}, "
        f"{realname.DOCUMENTS[document]} checked by {clerk} at {row.location}, {row.verified_at:%Y-%m-%d %H:%M} UTC"
    )


# -- the embedded population registry -------------------------------------------------------


@click.group(name="registry")
def registry_group():
    """The embedded population registry (used when registry_url is not set)."""


@registry_group.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--encoding", default="utf-8-sig", show_default=True, help="the file's text encoding (e.g. gb18030 for files saved by Excel in Chinese)"
)
def registry_import(file, encoding):
    """Import people from a CSV file: name,resident_id[,status].

    Every row is checked first; bad rows are listed by line with the reason (IDs
    masked) and the good ones are imported together. Re-importing a file changes
    nothing. Exit status 0 when every row was good, 2 when some were rejected.
    """
    ctx = _ctx()

    def progress(rows):
        click.echo(f"  {rows} rows checked ...", err=True)

    try:
        with file.open(encoding=encoding, newline="") as handle:
            report = realname.import_registry(ctx, handle, actor="cli", source=file.name, progress=progress)
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"{file.name} is not {encoding} text (byte {exc.start}); give the right --encoding, e.g. --encoding gb18030"
        ) from None
    except LookupError:
        raise click.ClickException(f"unknown encoding {encoding!r}") from None
    for bad in report.bad:
        click.echo(f"{file.name}:{bad.line}: {bad.reason}", err=True)
    click.echo(
        f"{report.rows} rows: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, {len(report.bad)} rejected"
    )
    if report.bad:
        sys.exit(2)


@registry_group.command(name="demo")
@click.option("--count", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file for the full list (default: demo-people.csv in the instance folder)",
)
def registry_demo(count, out):
    """Add synthetic demo people (valid-looking, checksum-correct IDs) to the embedded registry."""
    ctx = _ctx()
    people = realname.demo_people(count)
    report = realname.import_people(ctx, people, actor="cli", source="demo")
    out = out or _instance() / "demo-people.csv"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write("name,resident_id,status\n")
        for person in people:
            handle.write(f"{person.name},{person.resident_id},normal\n")
    click.echo(f"{count} demo people in the registry ({report.added} new). The first few:")
    for person in people[:5]:
        click.echo(f"  {person.name:<10} {mask_resident_id(person.resident_id)}")
    click.echo(f"The full list, with whole ID numbers to try real-name verification, is in {out}")
    click.echo("These people are synthetic: the numbers are checksum-valid but belong to no one.")


# -- the matter catalogue -------------------------------------------------------------------


@click.group(name="matter")
def matter_group():
    """The matter catalogue: which level each matter needs."""


@matter_group.command(name="set")
@click.argument("code")
@click.option("--level", required=True, type=click.IntRange(1, 3), help="1 basic, 2 real-name, 3 certificate")
@click.option("--name", help="the matter's name (needed for a new matter)")
@click.option("--department", help="the department responsible")
def matter_set(code, level, name, department):
    """Create or change a matter."""
    try:
        with core_db.transaction(_ctx().sessions) as db:
            row = levels.set_matter(db, code, level=level, name=name, department=department, actor="cli")
    except Refusal as exc:
        raise _refused(exc) from None
    click.echo(f"{row.code}: {row.name} — level {row.level} ({row.department or 'no department'})")


@matter_group.command(name="list")
def matter_list():
    """List the catalogue."""
    with _ctx().sessions() as db:
        rows = levels.all_matters(db)
    if not rows:
        click.echo("the catalogue is empty; add matters with 'hallmark idp matter set' or 'hallmark idp matter demo'")
    for row in rows:
        click.echo(f"{row.code:<32} level {row.level}  {row.name}  ({row.department})")


@matter_group.command(name="demo")
def matter_demo():
    """Add a few demo matters, one per level."""
    with core_db.transaction(_ctx().sessions) as db:
        for code, name, level, department in levels.DEMO_MATTERS:
            levels.set_matter(db, code, level=level, name=name, department=department, actor="cli:demo")
    for code, name, level, _ in levels.DEMO_MATTERS:
        click.echo(f"{code:<32} level {level}  {name}")


COMMANDS = [account_group, verify_at_counter, registry_group, matter_group]
