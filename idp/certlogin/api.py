"""JSON API for USB-key certificate enrolment (``hallmark-key enroll`` calls it).

POST /api/idp/enrolments   {"profile", "csr", "name", "resident_id" | "credit_code"}
                           bearer token with scope cert:enrol -> 201 {"certificate", "chain", "serial"}
"""

from __future__ import annotations

from flask import Blueprint, g

from ca import context as ca_context
from ca.context import CAContext
from core.problems import json_object_body
from idp import context as idp_context
from idp.certlogin import enrolment
from idp.context import IdPContext
from idp.oidc.resources import IDP_API

bp = Blueprint("idp_enrolment_api", __name__, url_prefix="/api/idp")


@bp.post("/enrolments")
@IDP_API.require(enrolment.ENROL_SCOPE)
def enrol():
    idp: IdPContext = idp_context.current()
    ca: CAContext = ca_context.current()
    done = enrolment.enrol(idp, ca, g.token, json_object_body())
    return done.as_json(), 201, {"Location": f"/api/ca/certificates/{done.serial}"}
