"""Status-event subscriptions of approval systems (scope ``licences:read``; a client sees and ends only its own).

=============================================  ==============  ===================================================
method and path                                scope           in → out
=============================================  ==============  ===================================================
``POST /api/licences/subscriptions``           licences:read   ``endpoint``, ``types`` (codes it holds a grant
                                                               for), ``accessed`` → 201, the subscription
``GET /api/licences/subscriptions``            licences:read   → its active subscriptions
``DELETE /api/licences/subscriptions/<id>``    licences:read   → 204
=============================================  ==============  ===================================================

What is sent and how: ``licenses.events`` and docs/licences.md.
"""

from __future__ import annotations

from flask import Blueprint, g

from core.db import read_only, transaction
from core.problems import Problem, json_object_body
from licenses import context, events, sharing
from licenses.api import READ, RESOURCE

bp = Blueprint("licenses_events_api", __name__)
PATH = RESOURCE.root + "/subscriptions"


def _client_id() -> str:
    return sharing.caller_of(context.current(), g.token).client_id


@bp.post(PATH)
@RESOURCE.require(READ)
def subscribe():
    client_id = _client_id()
    body = json_object_body()
    if not isinstance(body.get("accessed", False), bool):
        raise Problem(422, "Unprocessable Content", "accessed must be true or false", code="bad_accessed")
    with transaction(context.current().sessions) as db:
        row = events.subscribe(
            db,
            client_id=client_id,
            endpoint=body.get("endpoint"),
            type_codes=body.get("types", []),
            accessed=body.get("accessed") is True,
            actor=f"client:{client_id}",
            allowed_hosts=events.endpoint_hosts(context.current()),
            need_grant=True,
        )
        answer = events.as_json(row)
    return answer, 201, {"Location": f"{PATH}/{answer['id']}"}


@bp.get(PATH)
@RESOURCE.require(READ)
def list_subscriptions():
    client_id = _client_id()
    with read_only(context.current().sessions) as db:
        return {"subscriptions": [events.as_json(row) for row in events.subscriptions(db, client_id=client_id)]}


@bp.delete(PATH + "/<int:subscription_id>")
@RESOURCE.require(READ)
def unsubscribe(subscription_id: int):
    client_id = _client_id()
    with transaction(context.current().sessions) as db:
        events.unsubscribe(db, subscription_id, actor=f"client:{client_id}", client_id=client_id)
    return "", 204
