"""Resource indicators (RFC 8707): which resources an access token is for, its ``aud``.

A client names the resources it wants a token for with the ``resource`` parameter
(repeatable; an absolute URI without a fragment) of the authorization request and
of the token request (``authorization_code``, ``refresh_token``,
``client_credentials``). What it may ask for:

* the identity provider itself (the issuer URL: userinfo), always;
* the resources registered for the client (``hallmark idp client add --resource``);
* without registered resources (every client registered before resource
  indicators, and halls that never call an API): this instance's own JSON APIs
  that serve at least one of the client's scopes (``IdPContext.resources``).

Anything else, or a malformed URI, is ``invalid_target`` (RFC 8707 §2). A token
request may narrow what the authorization request (or the refresh token) was
granted, never widen it.

Without a ``resource`` parameter the audience is every resource the client may
ask for that serves one of the token's scopes (a registered resource outside this
instance always counts), plus the issuer when the scope holds ``openid``; a token
that would have no audience at all is for the issuer. Resource URIs are compared
as exact strings.

A token carrying RFC 9396 ``authorization_details`` is also for the API of each
detail's type (``idp.oidc.authorization_details``), whatever else its audience holds.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import OAuth2Error

from core.bearer import ApiResource
from idp.certlogin import enrolment
from idp.context import IdPContext
from idp.oidc import clients
from idp.oidc.clients import RegisteredClient
from idp.people import enterprises

COUNTER_SCOPE = "idp:counter"
# The identity provider's JSON API (people, enterprises, enrolment) as one resource: public URL + /api/idp.
IDP_API = ApiResource("/api/idp", scopes=(COUNTER_SCOPE, enterprises.STAFF_SCOPE, enrolment.ENROL_SCOPE))
PARAMETER = "resource"


class InvalidTarget(OAuth2Error):
    """RFC 8707 §2: the resource asked for is malformed, unknown, or not for this client."""

    error = "invalid_target"
    status_code = 400


def parse(values: list[str]) -> tuple[str, ...]:
    """The ``resource`` values of a request, each checked for form; repeats dropped."""
    if len(values) > clients.MAX_RESOURCES:
        raise InvalidTarget(description=f"At most {clients.MAX_RESOURCES} resources may be asked for.")
    for value in values:
        problem = clients.resource_uri_problem(value)
        if problem:
            raise InvalidTarget(description=problem[0].upper() + problem[1:] + ".")
    return tuple(dict.fromkeys(values))


def may_ask(ctx: IdPContext, client: RegisteredClient, uri: str) -> bool:
    if uri == ctx.issuer:
        return True
    if client.resources is not None:
        return uri in client.resources
    served = ctx.resources.get(uri)
    return served is not None and not served.isdisjoint(client.scopes)


def check(ctx: IdPContext, client: RegisteredClient, asked: tuple[str, ...], granted: tuple[str, ...] | None = None) -> None:
    """Refuse (``invalid_target``) a resource the client may not ask for, or one outside what was granted."""
    for uri in asked:
        if not may_ask(ctx, client, uri) or (granted is not None and uri not in granted):
            raise InvalidTarget(description=f"The client may not ask for the resource {uri}.")


def audience(
    ctx: IdPContext,
    client: RegisteredClient,
    scope: str,
    asked: tuple[str, ...] = (),
    granted: tuple[str, ...] | None = None,
    details: tuple[str, ...] = (),
) -> list[str]:
    """The ``aud`` of an access token: what was asked for, else the default (see the module's docstring).

    ``details`` are the resources of the RFC 9396 authorization details the token carries
    (``idp.oidc.authorization_details.audience``): the person granted them, so they are always
    in the audience and may be asked for by name.
    """
    check(ctx, client, tuple(uri for uri in asked if uri not in details), granted)
    if asked:
        out = list(asked)
    elif granted is not None:
        out = [uri for uri in granted if may_ask(ctx, client, uri)]
    else:
        scopes = set(scope.split())
        candidates = client.resources if client.resources is not None else tuple(ctx.resources)
        out = [ctx.issuer] if "openid" in scopes else []
        for uri in candidates:
            served = ctx.resources.get(uri)
            if uri not in out and (served is None or not served.isdisjoint(scopes)) and may_ask(ctx, client, uri):
                out.append(uri)
    out += [uri for uri in details if uri not in out]
    return out or [ctx.issuer]


def stored(resources: tuple[str, ...] | None) -> str | None:
    """How granted resources are kept with a code or a refresh token (space-separated; None when none were asked for)."""
    return " ".join(resources) if resources else None


def loaded(text: str | None) -> tuple[str, ...] | None:
    return tuple(text.split()) if text else None
