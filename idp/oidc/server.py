"""The authorization server of one IdP context: this module's grants and endpoints, and the device grant built on them.

Kept apart from ``idp.oidc.grants`` so that ``idp.oidc.device``, which builds on those grants,
is put in without ``grants`` importing it back (no import circle).
"""

from __future__ import annotations

from idp.context import IdPContext
from idp.oidc import device, grants

_SERVER = "idp.grants.server"


def server_for(ctx: IdPContext) -> grants.HallmarkServer:
    server = ctx.cache.get(_SERVER)
    if server is None:
        server = grants.HallmarkServer(ctx)
        device.register(server)  # RFC 8628: the device authorization endpoint and the device code grant
        ctx.cache[_SERVER] = server
    return server
