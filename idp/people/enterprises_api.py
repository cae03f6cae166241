"""JSON API for the staff console: enterprises and their agents (scope ``idp:enterprises``)."""

from __future__ import annotations

from flask import Blueprint, g

from core import db as core_db
from core.problems import Problem, json_object_body, page_args
from idp import context as idp_context
from idp.context import IdPContext
from idp.i18n import Refusal
from idp.oidc.resources import IDP_API
from idp.people import enterprises

bp = Blueprint("idp_enterprises_api", __name__, url_prefix="/api/idp/enterprises")
TITLES = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Content"}


def _ctx() -> IdPContext:
    return idp_context.current()


def _actor() -> str:
    return f"client:{g.token.get('client_id') or g.token.get('sub')}"


@bp.errorhandler(Refusal)
def _refused(exc: Refusal):
    return Problem(exc.status, TITLES.get(exc.status, "Refused"), exc.english(), code=exc.code).response()


def _string(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise Problem(400, "Bad Request", f"'{name}' is required and must be a non-empty string")
    return value


@bp.post("")
@IDP_API.require(enterprises.STAFF_SCOPE)
def add():
    body = json_object_body()
    with core_db.transaction(_ctx().sessions) as db:
        row = enterprises.add(
            db,
            credit_code=_string(body, "credit_code"),
            name=_string(body, "name"),
            representative=_string(body, "representative"),
            actor=_actor(),
        )
        answer = enterprises.as_json(db, row)
    return answer, 201, {"Location": f"{bp.url_prefix}/{row.credit_code}"}


@bp.get("")
@IDP_API.require(enterprises.STAFF_SCOPE)
def list_all():
    limit, offset = page_args(default_limit=100)
    with _ctx().sessions() as db:
        return {
            "enterprises": [enterprises.as_json(db, r) for r in enterprises.all_enterprises(db, limit=limit, offset=offset)],
            "limit": limit,
            "offset": offset,
        }


@bp.get("/<code>")
@IDP_API.require(enterprises.STAFF_SCOPE)
def get_one(code):
    with _ctx().sessions() as db:
        return enterprises.as_json(db, enterprises.get(db, code[:40]), with_agents=True)


@bp.put("/<code>/representative")
@IDP_API.require(enterprises.STAFF_SCOPE)
def set_representative(code):
    body = json_object_body()
    with core_db.transaction(_ctx().sessions) as db:
        row = enterprises.set_representative(db, code[:40], _string(body, "representative"), actor=_actor())
        return enterprises.as_json(db, row)


@bp.post("/<code>/agents/<authorisation_id>/revoke")
@IDP_API.require(enterprises.STAFF_SCOPE)
def revoke(code, authorisation_id):
    """Staff may revoke an agent too (a representative reports a lost USB key at the counter, say)."""
    with core_db.transaction(_ctx().sessions) as db:
        row = enterprises.revoke_agent(db, credit_code=code[:40], authorisation_id=authorisation_id[:40], actor=_actor())
        return enterprises.authorisation_json(db, row)
