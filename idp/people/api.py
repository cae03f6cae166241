"""JSON API about people and policy: counter verification (scope ``idp:counter``) and the matter catalogue (public)."""

from __future__ import annotations

from flask import Blueprint, g

from core.problems import Problem, json_object_body
from idp import context as idp_context
from idp import levels
from idp.context import IdPContext
from idp.i18n import Refusal
from idp.models import Account
from idp.oidc.resources import COUNTER_SCOPE, IDP_API
from idp.people import realname

bp = Blueprint("idp_people_api", __name__, url_prefix="/api/idp")


def _ctx() -> IdPContext:
    return idp_context.current()


@bp.errorhandler(Refusal)
def _refused(exc: Refusal):
    titles = {
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        409: "Conflict",
        422: "Unprocessable Content",
        503: "Service Unavailable",
    }
    return Problem(exc.status, titles.get(exc.status, "Refused"), exc.english(), code=exc.code).response()


# -- counter verification (the coming admin console) ----------------------------------------


@bp.post("/counter-verifications")
@IDP_API.require(COUNTER_SCOPE)
def counter_verification():
    body = json_object_body()
    fields = ("account", "resident_id", "name", "clerk", "location", "document")
    for name in fields:
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise Problem(400, "Bad Request", f"'{name}' is required and must be a non-empty string")
    client = g.token.get("client_id") or g.token.get("sub")
    account, row = realname.verify_at_counter(
        _ctx(),
        account=body["account"],
        resident_id=body["resident_id"],
        name=body["name"],
        clerk=body["clerk"],
        location=body["location"],
        document=body["document"],
        via=f"api client:{client}",
    )
    return realname.as_json(account.id, row), 201, {"Location": f"/api/idp/accounts/{account.id}/proofing"}


@bp.get("/accounts/<account_id>/proofing")
@IDP_API.require(COUNTER_SCOPE)
def account_proofing(account_id):
    with _ctx().sessions() as db:
        if len(account_id) > 36 or db.get(Account, account_id) is None:
            raise Problem(404, "Not Found", "there is no account with this id")
        return realname.as_json(account_id, realname.proofing_of(db, account_id))


# -- the matter catalogue: public policy, read by halls -------------------------------------


@bp.get("/matters")
def list_matters():
    with _ctx().sessions() as db:
        body = {"matters": [levels.matter_json(m) for m in levels.all_matters(db)]}
    return body, 200, {"Cache-Control": "public, max-age=60"}


@bp.get("/matters/<code>")
def get_matter(code):
    with _ctx().sessions() as db:
        row = levels.matter(db, code)
        if row is None:
            raise Problem(404, "Not Found", "there is no matter with this code")
        return levels.matter_json(row), 200, {"Cache-Control": "public, max-age=60"}
