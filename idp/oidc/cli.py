"""``hallmark idp client ...`` and ``hallmark idp rotate-keys``: thin commands over
``idp.oidc.clients`` and ``idp.oidc.keys``. Attached to the ``hallmark idp`` group by ``idp.cli``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from core import db as core_db
from idp import levels
from idp.context import IdPContext
from idp.oidc import clients, keys


def _ctx() -> IdPContext:
    return click.get_current_context().find_root().obj.idp()


def _level(value: str) -> int:
    level = levels.level_of(value) if value.startswith(levels.ACR_PREFIX) else (int(value) if value.isdigit() else None)
    if level not in levels.LEVELS:
        raise click.BadParameter(f"use 1, 2, 3 or {levels.ACR_PREFIX}N, not {value!r}")
    return level


@click.group(name="client")
def client():
    """Relying parties: halls and approval systems."""


@client.command(name="add")
@click.option("--name", required=True, help="shown to people on the consent page, e.g. 市政务服务网上办事大厅")
@click.option("--type", "client_type", type=click.Choice(clients.CLIENT_TYPES), default=clients.CONFIDENTIAL, show_default=True)
@click.option(
    "--redirect-uri", "redirect_uris", multiple=True, help="exact redirect URI (repeatable); https, or http to 127.0.0.1/localhost"
)
@click.option(
    "--grant",
    "grants",
    multiple=True,
    type=click.Choice(clients.GRANT_TYPES),
    help="repeatable; default authorization_code + refresh_token with a redirect URI, else client_credentials",
)
@click.option(
    "--scope", "scopes", multiple=True, help="scopes it may ask for (repeatable or space-separated); default 'openid profile' for halls"
)
@click.option("--min-acr", default="1", show_default=True, help="minimum level for every login: 1, 2, 3 or urn:hallmark:loa:N")
@click.option("--first-party", is_flag=True, help="a government hall of this province: no consent page")
@click.option(
    "--auth-method",
    type=click.Choice((*clients.SECRET_METHODS, clients.PRIVATE_KEY_JWT)),
    help="token endpoint authentication of a confidential client (default client_secret_basic)",
)
@click.option("--jwks", "jwks_file", type=click.Path(dir_okay=False), help="the client's public keys (JWKS JSON) for private_key_jwt")
@click.option("--backchannel-logout-uri")
@click.option("--frontchannel-logout-uri")
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True)
@click.option(
    "--id-token-alg", type=click.Choice(clients.ID_TOKEN_ALGS), default="ES256", show_default=True, help="how its ID tokens are signed"
)
@click.option(
    "--resource",
    "resources",
    multiple=True,
    help="an API it may ask tokens for (RFC 8707 resource: absolute URI, no fragment; repeatable). "
    "Default: this instance's APIs that serve one of its scopes",
)
@click.option("--client-id", help="choose the client id (default: random)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def add(
    name,
    client_type,
    redirect_uris,
    grants,
    scopes,
    min_acr,
    first_party,
    auth_method,
    jwks_file,
    backchannel_logout_uri,
    frontchannel_logout_uri,
    post_logout_redirect_uris,
    id_token_alg,
    resources,
    client_id,
    as_json,
):
    """Register a client. A secret is printed once; only a keyed hash of it is kept."""
    jwks = None
    if jwks_file:
        try:
            jwks = Path(jwks_file).read_text()
        except OSError as exc:
            raise click.ClickException(f"cannot read {jwks_file}: {exc.strerror}") from None
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        made = clients.add(
            ctx,
            db,
            name=name,
            client_type=client_type,
            redirect_uris=list(redirect_uris),
            grant_types=list(grants),
            scopes=list(scopes),
            min_acr=_level(min_acr),
            first_party=first_party,
            auth_method=auth_method,
            jwks=jwks,
            backchannel_logout_uri=backchannel_logout_uri,
            frontchannel_logout_uri=frontchannel_logout_uri,
            post_logout_redirect_uris=list(post_logout_redirect_uris),
            client_id=client_id,
            id_token_alg=id_token_alg,
            resources=list(resources),
            actor="cli",
        )
        from idp.models import Client

        described = clients.describe(db.get(Client, made.client_id))
    if as_json:
        click.echo(json.dumps({**described, "client_secret": made.client_secret}, ensure_ascii=False))
        return
    click.echo(f"client_id      {made.client_id}")
    if made.client_secret:
        click.echo(f"client_secret  {made.client_secret}")
        click.echo("               (shown once: store it now; only a keyed hash is kept)")
    click.echo(f"type           {described['type']} ({described['auth_method']})")
    click.echo(f"grants         {' '.join(described['grant_types'])}")
    click.echo(f"scope          {' '.join(described['scope'])}")
    click.echo(f"resources      {_resources_text(described)}")


def _resources_text(described: dict) -> str:
    if described["resources"] is None:
        return "(default: this instance's APIs that serve one of its scopes)"
    return " ".join(described["resources"])


def _described(client_id: str) -> dict:
    from idp.models import Client

    with _ctx().sessions() as db:
        row = db.get(Client, client_id)
        if row is None:
            raise click.ClickException(f"no client {client_id!r}")
        return clients.describe(row)


@client.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_clients(as_json):
    """List registered clients (never their secrets)."""
    ctx = _ctx()
    with ctx.sessions() as db:
        rows = [clients.describe(r) for r in clients.all_clients(db)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("no clients registered yet; add one with 'hallmark idp client add'")
    for row in rows:
        party = " first-party" if row["first_party"] else ""
        click.echo(f"{row['client_id']:<24} {row['type']:<12} loa>={row['min_acr']}{party}  {row['name']}")
        for uri in row["redirect_uris"]:
            click.echo(f"{'':<24} -> {uri}")
        for uri in row["resources"] or ():
            click.echo(f"{'':<24} resource {uri}")


@client.command(name="show")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
def show(client_id, as_json):
    """One client's registration (never its secret)."""
    described = _described(client_id)
    if as_json:
        click.echo(json.dumps(described, ensure_ascii=False))
        return
    labels = {
        "client_id": "client_id",
        "name": "name",
        "type": "type",
        "auth_method": "auth method",
        "grant_types": "grants",
        "scope": "scope",
        "redirect_uris": "redirect URIs",
        "min_acr": "minimum level",
        "first_party": "first party",
        "backchannel_logout_uri": "back-channel logout",
        "frontchannel_logout_uri": "front-channel logout",
        "post_logout_redirect_uris": "post-logout URIs",
        "id_token_signed_response_alg": "ID token alg",
        "created_at": "created",
    }
    for key, label in labels.items():
        value = described[key]
        click.echo(f"{label:<20} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    click.echo(f"{'resources':<20} {_resources_text(described)}")


@client.command(name="resources")
@click.argument("client_id")
@click.option("--resource", "resources", multiple=True, help="an API it may ask tokens for (repeatable); replaces the list")
@click.option("--default", "use_default", is_flag=True, help="back to the default: this instance's APIs that serve one of its scopes")
def set_resources(client_id, resources, use_default):
    """Set the resources (RFC 8707) a client may ask tokens for."""
    if bool(resources) == use_default:
        raise click.UsageError("give either --resource URI (repeatable) or --default")
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        clients.set_resources(ctx, db, client_id, list(resources) or None, actor="cli")
    click.echo(f"resources      {_resources_text(_described(client_id))}")


@client.command(name="remove")
@click.argument("client_id")
def remove(client_id):
    """Remove a client: its codes, refresh tokens and consents go with it."""
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        clients.remove(ctx, db, client_id, actor="cli")
    click.echo(f"removed client {client_id}")


@client.command(name="new-secret")
@click.argument("client_id")
def new_secret(client_id):
    """Replace a client's secret (printed once)."""
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        secret = clients.new_secret(ctx, db, client_id, actor="cli")
    click.echo(f"client_secret  {secret}")
    click.echo("               (shown once: store it now; the old secret no longer works)")


@click.command(name="rotate-keys")
@click.option(
    "--alg", "algs", multiple=True, type=click.Choice(list(keys.ALGORITHMS)), help="which key to rotate (repeatable; default all)"
)
@click.option("--immediately", is_flag=True, help="sign with the new key at once (suspected compromise, or a single node)")
def rotate_keys(algs, immediately):
    """Make new signing keys in the HSM; old ones stay in the JWKS until their tokens expire."""
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        done = [keys.rotate(ctx, db, alg, actor="cli", immediately=immediately) for alg in (algs or keys.ALGORITHMS)]
    for rotation in done:
        click.echo(f"{rotation.alg}  new key {rotation.new_kid} signs from {rotation.signs_from:%Y-%m-%d %H:%M:%S} UTC")
        if rotation.retired:
            click.echo(
                f"       retired {', '.join(rotation.retired)}; published until {rotation.old_published_until:%Y-%m-%d %H:%M:%S} UTC"
            )


@click.command(name="signing-keys")
def signing_keys():
    """List the provider's signing keys and whether they sign and are published."""
    ctx = _ctx()
    with ctx.sessions() as db:
        rows = keys.all_rows(db)
    if not rows:
        click.echo("no signing keys yet; they are made on first use or by 'hallmark idp rotate-keys'")
    for row in rows:
        state = "active" if row.retired_at is None else f"retired {row.retired_at:%Y-%m-%d %H:%M}"
        until = f", published until {row.publish_until:%Y-%m-%d %H:%M}" if row.publish_until else ""
        click.echo(f"{row.alg}  {row.kid}  {state}{until}")


COMMANDS = [client, rotate_keys, signing_keys]
