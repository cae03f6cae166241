"""``hallmark outbox ...``: the staff's view of the outbox (dead letters above all) until the console has one."""

from __future__ import annotations

import click

from core import db as core_db
from core import outbox

ACTOR = "cli"


def _services():
    return click.get_current_context().find_root().obj.services()


@click.group(name="outbox")
def outbox_group():
    """Outgoing deliveries (logout tokens, licence status events): list, retry, deliver."""


@outbox_group.command(name="list")
@click.option("--dead", is_flag=True, help="only messages given up (the dead letters)")
@click.option("--pending", is_flag=True, help="only messages still to be delivered")
@click.option("--kind", help="only this kind (idp.logout.back, licences.set, ...)")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
def list_command(dead, pending, kind, limit):
    """Messages, newest first: id, kind, state, attempts, next attempt, target, last error."""
    if dead and pending:
        raise click.UsageError("give --dead or --pending, not both")
    state = outbox.DEAD if dead else outbox.PENDING if pending else None
    with core_db.read_only(_services().sessions) as db:
        rows = outbox.listing(db, state=state, kind=kind, limit=limit)
    if not rows:
        click.echo("no messages")
        return
    for row in rows:
        when = f"{row.next_attempt_at:%Y-%m-%d %H:%M:%S}" if row.state == outbox.PENDING else "-"
        click.echo(f"{row.id:<8} {row.kind:<18} {row.state:<9} {row.attempts:>3}  {when:<19}  {row.target}")
        if row.last_error:
            click.echo(f"{'':<8} last error: {row.last_error}")


@outbox_group.command(name="retry")
@click.argument("message_id", type=int)
def retry_command(message_id):
    """Put a dead message back in line, with a fresh set of attempts (audited)."""
    try:
        with core_db.transaction(_services().sessions) as db:
            row = outbox.retry(db, message_id, actor=ACTOR)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if row is None:
        raise click.ClickException(f"there is no outbox message {message_id}")
    click.echo(f"message {message_id} ({row.kind}) will be sent again at the next delivery run")


@outbox_group.command(name="deliver")
def deliver_command():
    """Deliver what is due now, from this process, and say what happened."""
    counts = outbox.deliver_due(_services().sessions)
    click.echo(f"claimed {counts.claimed}, delivered {counts.delivered}, retrying {counts.retrying}, dead {counts.dead}")
    for error in counts.errors:
        click.echo(f"  {error}")
