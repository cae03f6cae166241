"""``hallmark idp closures ...``: account closures (the periodic job ``idp-closures`` does the same on every worker)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from idp.context import IdPContext
from idp.people import privacy


def _ctx() -> IdPContext:
    return click.get_current_context().find_root().obj.idp()


@click.group(name="closures")
def closures_group():
    """Account closures asked for by residents (cooling-off period: the closure_cooling_off_days setting)."""


@closures_group.command(name="run")
@click.option("--as-of", "as_of", help="carry out the closures due at this UTC time (ISO 8601), e.g. to check a schedule; default: now")
def closures_run(as_of):
    """Carry out every closure whose cooling-off period has passed."""
    try:
        now = datetime.fromisoformat(as_of) if as_of else None
        now = now.replace(tzinfo=UTC) if now is not None and now.tzinfo is None else now
    except ValueError:
        raise click.UsageError(f"--as-of must be an ISO 8601 time, not {as_of!r}") from None
    done = privacy.carry_out_due(_ctx(), now=now)
    click.echo(f"{done} account closure(s) carried out")


COMMANDS = (closures_group,)
