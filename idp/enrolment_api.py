"""JSON API for USB-key certificate enrolment (``hallmark-key enroll`` calls it).

POST /api/idp/enrolments   {"profile", "csr", "name", "resident_id" | "credit_code"}
                           bearer token with scope cert:enrol -> 201 {"certificate", "chain", "serial"}
"""

from __future__ import annotations

from flask import Blueprint, current_app, g

from ca.context import CAContext
from core.problems import json_object_body
from idp import enrolment
from idp.context import EXTENSION, IdPContext
from idp.resources import IDP_API

bp = Blueprint("idp_enrolment_api", __name__, url_prefix="/api/idp")
CA_EXTENSION = "hallmark.ca"


@bp.post("/enrolments")
@IDP_API.require(enrolment.ENROL_SCOPE)
def enrol():
    idp: IdPContext = current_app.extensions[EXTENSION]
    ca: CAContext = current_app.extensions[CA_EXTENSION]
    done = enrolment.enrol(idp, ca, g.token, json_object_body())
    return done.as_json(), 201, {"Location": f"/api/ca/certificates/{done.serial}"}
