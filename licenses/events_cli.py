"""``hallmark licences subscribe | subscriptions | unsubscribe``: status-event subscriptions, kept by staff.

The commands join the ``licences`` group of ``licenses.cli`` when this module is imported (licenses.component).
"""

from __future__ import annotations

import click

from core.db import read_only, transaction
from licenses import events
from licenses.cli import ACTOR, _ctx, licences


@licences.command(name="subscribe")
@click.argument("client_id")
@click.option("--endpoint", required=True, help="the URL the client receives SETs at (RFC 8935 push)")
@click.option("--type", "type_codes", multiple=True, help="a licence type code; repeat for several")
@click.option("--accessed", is_flag=True, help="also every licence this client has accessed")
def subscribe(client_id, endpoint, type_codes, accessed):
    """Send CLIENT a status event (SET) on each change of licences of the given types (or that it accessed)."""
    # A bad endpoint or an unknown type is a Problem, which the hallmark command prints as one line.
    ctx = _ctx()
    with transaction(ctx.sessions) as db:
        row = events.subscribe(
            db,
            client_id=client_id,
            endpoint=endpoint,
            type_codes=list(type_codes),
            accessed=accessed,
            actor=ACTOR,
            allowed_hosts=events.endpoint_hosts(ctx),
        )
        answer = events.as_json(row)
    click.echo(f"subscription {answer['id']}: {client_id} -> {answer['endpoint']}")


@licences.command(name="subscriptions")
@click.option("--client", "client_id", help="only this client's")
def list_subscriptions(client_id):
    """Active status-event subscriptions: id, client, types, accessed, endpoint."""
    with read_only(_ctx().sessions) as db:
        rows = [events.as_json(row) for row in events.subscriptions(db, client_id=client_id)]
    if not rows:
        click.echo("no subscriptions")
    for row in rows:
        scope = ",".join(row["types"]) or "-"
        click.echo(f"{row['id']:<6} {row['client_id']:<24} {scope:<30} {'accessed' if row['accessed'] else '-':<9} {row['endpoint']}")


@licences.command(name="unsubscribe")
@click.argument("subscription_id", type=int)
def unsubscribe(subscription_id):
    """End a subscription (SETs already queued are still delivered)."""
    with transaction(_ctx().sessions) as db:
        events.unsubscribe(db, subscription_id, actor=ACTOR)
    click.echo(f"subscription {subscription_id} ended")
