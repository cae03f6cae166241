"""The console's JSON API under ``/admin/api/``, for the console's own pages and scripts of signed-in staff.

The same session cookie and role checks as the pages (``admin.access.requires``);
refusals are problem+json. Read-only so far, apart from the identity provider's back-channel logout notice, which
carries its own proof (a signed logout token) and no cookie.
"""

from __future__ import annotations

import json

from flask import Blueprint, g, request

from admin import login, proposals
from admin.access import requires
from admin.context import current
from core import db as core_db
from core import web

bp = Blueprint("admin_api", __name__, url_prefix="/admin/api")


@bp.record_once
def _on_register(setup):
    web.json_api(setup.app, "/admin/api/")


@bp.get("/proposals")
@requires(*proposals.roles_involved())
def proposal_list():
    """The proposals the signed-in staff member may see (as on the approvals page)."""
    with core_db.read_only(current().sessions) as db:
        rows = proposals.visible(db, g.staff)
        return {
            "proposals": [
                {
                    "id": row.id,
                    "kind": row.kind,
                    "parameters": json.loads(row.parameters),
                    "department": row.department,
                    "reason": row.reason,
                    "proposed_by": row.proposed_by,
                    "created_at": row.created_at.isoformat(),
                    "expires_at": row.expires_at.isoformat(),
                    "status": proposals.status_of(row),
                    "decided_by": row.decided_by,
                    "decided_at": row.decided_at.isoformat() if row.decided_at else None,
                    "may_decide": proposals.status_of(row) == proposals.PENDING and proposals.may_decide(g.staff, row),
                }
                for row in rows
            ]
        }


@bp.post("/backchannel-logout")
def backchannel_logout():
    """The identity provider's back-channel logout notice (a logout token, server to server): no cookie, no CSRF token."""
    try:
        login.backchannel_logout(current(), request.form.get("logout_token", ""))
    except login.LoginRefused as refusal:
        return {"error": "invalid_request", "error_description": refusal.english()}, 400, {"Cache-Control": "no-store"}
    return "", 200, {"Cache-Control": "no-store"}
