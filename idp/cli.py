"""``hallmark idp ...``: the identity provider's commands.

The composition root puts an object with ``services()`` on the root click
context; the subcommand modules below take what they need from it.
"""

from __future__ import annotations

import click


@click.group(name="idp")
def idp():
    """Identity provider: clients, keys, registry, real-name checks, matters."""


def register_subcommands() -> None:
    """Attach the subcommand modules (each owns its own commands)."""
    from idp.oidc import cli as cli_clients
    from idp.people import cli as cli_people
    from idp.people import cli_enterprises, cli_privacy

    for module in (cli_clients, cli_people, cli_enterprises, cli_privacy):
        for command in module.COMMANDS:
            idp.add_command(command)
