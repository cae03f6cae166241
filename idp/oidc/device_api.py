"""``POST /oauth/device_authorization`` (RFC 8628 §3.1): thin; the rules are in ``idp.oidc.device`` and Authlib."""

from __future__ import annotations

from flask import Blueprint

from idp import context as idp_context
from idp.oidc import api, device
from idp.oidc import server as oidc_server

bp = Blueprint("idp_device_api", __name__)


@bp.post(api.DEVICE_AUTHORIZATION_PATH)
def device_authorization():
    problem = api._form_problem()  # the token endpoint's checks: body only, no repeats, sizes, one way of authenticating
    if problem is not None:
        return problem
    return oidc_server.server_for(idp_context.current()).endpoint_response(device.DeviceAuthorizationEndpoint.ENDPOINT_NAME)
