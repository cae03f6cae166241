"""The licence library's JSON APIs (``licenses/api.py``, ``requests_api.py``, ``events_api.py``) in the OpenAPI document."""

from __future__ import annotations

from core.openapi import (
    BOOLEAN,
    DATE,
    DATE_TIME,
    INTEGER,
    STRING,
    STRINGS,
    bearer,
    header,
    json_body,
    json_response,
    nullable,
    obj,
    operation,
    part,
    path_parameter,
    problems,
    query_parameter,
    ref,
)
from core.web.i18n import N_
from licenses import grants, lifecycle
from licenses.api import ISSUE, READ, RESOURCE, STATE_ACTIONS, VERSION_ACTIONS
from licenses.signer import JWKS_PATH

TAG = "licences"
ROOT = RESOURCE.root
IDENTIFIER = path_parameter("identifier", "The licence's identifier (GB/T 36904).", {"type": "string", "maxLength": 64})
HOLDER_TYPES = ["111", "001"]  # resident ID, unified social credit code (GB/T 36904 holder code types)

NAMED = obj({"code": STRING, "name": STRING, "name_en": nullable(STRING)}, required=("code",))
STATUS = obj(
    {
        "state": {"enum": list(lifecycle.STATES)},
        "national_code": STRING,
        "usable": BOOLEAN,
        "reason": nullable(STRING),
        "changed_at": DATE_TIME,
        "superseded_by": nullable(STRING),
        "valid_from": DATE,
        "valid_until": nullable(DATE),
    },
    required=("state", "usable"),
)
LICENCE = obj(
    {
        "identifier": STRING,
        "type": NAMED,
        "issuer": obj({"code": STRING, "name": STRING}),
        "holder": obj({"type": STRING, "code": {"type": "string", "description": "Masked."}, "name": nullable(STRING)}),
        "version": STRING,
        "status": ref("LicenceStatus"),
        "predecessor": nullable(STRING),
        "successor": nullable(STRING),
        "issued_at": DATE_TIME,
        "verify_url": STRING,
        "face": {"type": "object", "description": "The face fields (read mode only, and only those asked for)."},
    },
    required=("identifier", "type", "status"),
)
ACCESS = {
    "access": obj({"seq": INTEGER, "route": STRING}, required=("seq", "route"), description="The holder's access-log entry for this call."),
    "receipt": {"type": "string", "description": "A signed receipt of the access (compact JWS, keys at /api/licences/jwks)."},
}
USE = {
    "purpose": {"type": "string", "description": "Why the licence is asked for (shown to the holder)."},
    "matter": {"type": "string", "description": "The matter (事项) code the call serves."},
}
MODES = {"type": "string", "enum": [grants.COMPARE, grants.READ], "default": grants.COMPARE}
FIELDS = {"type": "string", "description": "Comma-separated face fields to answer (read mode)."}
LOOKUP = obj({"licence": ref("Licence"), **ACCESS}, required=("licence", "access", "receipt"))
QUERY = obj({"type": STRING, "licences": {"type": "array", "items": ref("Licence")}, **ACCESS}, required=("licences", "access", "receipt"))
COMPARISON = obj(
    {
        "licence": ref("Licence"),
        "comparison": obj(
            {
                "status": STRING,
                "fields": {"type": "object", "additionalProperties": {"enum": ["match", "no_match", "absent"]}},
                "all_match": BOOLEAN,
            },
            required=("fields", "all_match"),
        ),
        **ACCESS,
    },
    required=("comparison", "access", "receipt"),
)
TYPE_FIELDS = obj({"type": STRING, "name": STRING, "name_en": nullable(STRING), "fields": {"type": "array"}}, required=("type", "fields"))
ISSUE_REQUEST = obj(
    {
        "type": {"type": "string", "description": "The licence type's code."},
        "issuer": {"type": "string", "description": "The issuing department's credit code."},
        "holder": {"type": "string", "description": "The holder's resident ID or credit code."},
        "face": {"type": "object", "description": "The face fields, as the type's JSON Schema describes them."},
        "valid_from": DATE,
        "valid_until": DATE,
        "serial": STRING,
        "request_id": {"type": "string", "description": "The licence request this issuance answers."},
    },
    required=("type", "issuer", "holder", "face"),
)
CHANGE_REQUEST = obj(
    {
        "reason": STRING,
        "face": {"type": "object", "description": "renew and change: the changed face fields."},
        "valid_until": DATE,
    }
)
LICENCE_ANSWER = obj({"licence": ref("Licence")}, required=("licence",))
REQUEST = obj(
    {
        "id": STRING,
        "state": STRING,
        "type": NAMED,
        "issuer": obj({"code": STRING, "name": STRING}),
        "holder": obj({"type": nullable(STRING), "code": nullable(STRING)}),
        "matter": STRING,
        "reason": nullable(STRING),
        "requested_by": STRING,
        "created_at": DATE_TIME,
        "deadline": DATE_TIME,
        "overdue": BOOLEAN,
    },
    required=("id", "state", "type", "deadline"),
)
REQUEST_BODY = obj(
    {
        "type": STRING,
        "issuer": STRING,
        "matter": STRING,
        "reason": STRING,
        "holder_type": {"type": "string", "enum": HOLDER_TYPES},
        "holder": STRING,
    },
    required=("type", "issuer", "matter"),
)
SUBSCRIPTION = obj(
    {"id": INTEGER, "client_id": STRING, "endpoint": STRING, "types": STRINGS, "accessed": BOOLEAN, "created_at": DATE_TIME},
    required=("id", "endpoint", "types", "accessed"),
)
PDF = {"type": "string", "format": "binary", "contentMediaType": "application/pdf"}


def _sharing_paths() -> dict:
    use_query = [query_parameter(name, schema["description"], {"type": "string"}, required=True) for name, schema in USE.items()]
    shared = problems(400, 422)
    return {
        ROOT: {
            "get": operation(
                "licences_query",
                N_("A holder's licences of a type"),
                tag=TAG,
                security=bearer(READ),
                parameters=[
                    query_parameter("type", "The licence type's code.", required=True),
                    query_parameter(
                        "holder_type", "111: resident ID, 001: unified social credit code.", {"type": "string", "enum": HOLDER_TYPES}
                    ),
                    query_parameter("holder", "The holder's code (or none with a consent token: its holder)."),
                    *use_query,
                    query_parameter("mode", "compare (default) or read.", MODES),
                    query_parameter("fields", "Read mode: only these face fields.", FIELDS),
                ],
                responses={"200": json_response("The holder's licences of the type.", ref("LicenceQuery")), **shared},
            )
        },
        ROOT + "/{identifier}": {
            "get": operation(
                "licences_lookup",
                N_("Look up a licence by identifier"),
                tag=TAG,
                security=bearer(READ),
                parameters=[
                    IDENTIFIER,
                    *use_query,
                    query_parameter("mode", "compare (default) or read.", MODES),
                    query_parameter("fields", "Read mode: only these face fields.", FIELDS),
                ],
                responses={"200": json_response("The licence and its status (its face in read mode).", ref("LicenceLookup")), **shared},
            )
        },
        ROOT + "/compare": {
            "post": operation(
                "licences_compare",
                N_("Compare claimed values with a licence's face"),
                tag=TAG,
                security=bearer(READ),
                body=json_body(
                    obj(
                        {
                            "identifier": STRING,
                            "type": STRING,
                            "holder_type": {"type": "string", "enum": HOLDER_TYPES},
                            "holder": STRING,
                            "claims": {"type": "object", "description": "Face field name: the value claimed."},
                            **USE,
                        },
                        required=("claims", "purpose", "matter"),
                    )
                ),
                responses={"200": json_response("Per field: match, no_match or absent.", ref("LicenceComparison")), **shared},
            )
        },
        ROOT + "/qr": {
            "post": operation(
                "licences_qr",
                N_("Look up the licence a scanned QR code names"),
                tag=TAG,
                security=bearer(READ),
                body=json_body(
                    obj(
                        {"qr": {"type": "string", "description": "The text the QR code carries."}, **USE, "mode": MODES, "fields": FIELDS},
                        required=("qr", "purpose", "matter"),
                    )
                ),
                responses={"200": json_response("As a lookup.", ref("LicenceLookup")), **shared},
            )
        },
        ROOT + "/{identifier}/copy": {
            "post": operation(
                "licences_copy",
                N_("A stamped copy of a licence for one matter, usable until a date"),
                tag=TAG,
                security=bearer(READ),
                parameters=[IDENTIFIER],
                body=json_body(obj({**USE, "until": DATE}, required=("purpose", "matter", "until"))),
                responses={
                    "200": {
                        "description": "The stamped copy.",
                        "headers": {
                            "Hallmark-Copy-Until": header("The last day the copy may be used."),
                            "Hallmark-Verify-URL": header("Where anyone can check it."),
                            "Hallmark-Access-Seq": header("The access-log entry."),
                            "Hallmark-Receipt": header("The signed receipt."),
                        },
                        "content": {"application/pdf": {"schema": PDF}},
                    },
                    **shared,
                },
            )
        },
        ROOT + "/verify": {
            "post": operation(
                "licences_verify",
                N_("Check whether a PDF is a genuine licence file"),
                tag=TAG,
                security=bearer(READ),
                parameters=[query_parameter(name, schema["description"]) for name, schema in USE.items()],
                body={
                    "required": True,
                    "content": {
                        "application/pdf": {"schema": PDF},
                        "multipart/form-data": {"schema": obj({"file": PDF, **USE}, required=("file",))},
                    },
                },
                responses={
                    "200": json_response(
                        "The verdict (with the access-log entry when it is one of the library's licences).",
                        obj({"verdict": STRING, "licence": {"type": "object"}, **ACCESS}, required=("verdict",)),
                    ),
                    **problems(400, 415, 422),
                },
            )
        },
        ROOT + "/types/{code}/fields": {
            "get": operation(
                "licences_type_fields",
                N_("The face fields of a licence type"),
                tag=TAG,
                security=bearer(),
                parameters=[path_parameter("code", "The licence type's code.")],
                responses={"200": json_response("The type and its face fields.", ref("LicenceTypeFields")), **problems(400, 422)},
            )
        },
        JWKS_PATH: {
            "get": operation(
                "licences_jwks",
                N_("The keys receipts and QR codes are signed with"),
                tag=TAG,
                responses={"200": json_response("A JWK set (RFC 7517).", ref("JWKS")), **problems()},
            )
        },
    }


def _issuing_paths() -> dict:
    answer = json_response("The licence.", ref("LicenceAnswer"))
    created = {**answer, "headers": {"Location": header("The new licence (version).")}}
    return {
        ROOT + "/issue": {
            "post": operation(
                "licences_issue",
                N_("Issue a licence"),
                tag=TAG,
                security=bearer(ISSUE),
                body=json_body(ref("LicenceIssueRequest")),
                responses={"201": created, **problems(400, 409, 422)},
            )
        },
        ROOT + "/{identifier}/{action}": {
            "post": operation(
                "licences_change",
                N_("Suspend, resume, revoke, withdraw, cancel, renew or change a licence"),
                tag=TAG,
                security=bearer(ISSUE),
                description="suspend, resume, revoke, withdraw and cancel change its state (reason); renew (valid_until, face) "
                "and change (face, reason) make a new version, answered 201.",
                parameters=[IDENTIFIER, path_parameter("action", "What to do.", {"enum": [*STATE_ACTIONS, *VERSION_ACTIONS]})],
                body=json_body(ref("LicenceChangeRequest"), required=False),
                responses={"200": answer, "201": created, **problems(400, 409, 422)},
            )
        },
        ROOT + "/requests": {
            "post": operation(
                "licences_ask",
                N_("Ask a department for a licence the holder is missing"),
                tag=TAG,
                security=bearer(READ),
                body=json_body(ref("LicenceRequestBody")),
                responses={
                    "201": {**json_response("The request.", ref("LicenceRequest")), "headers": {"Location": header("The request.")}},
                    **problems(400, 409, 422),
                },
            )
        },
        ROOT + "/requests/{request_id}": {
            "get": operation(
                "licences_request",
                N_("A licence request's state and answer"),
                tag=TAG,
                security=bearer(READ),
                parameters=[path_parameter("request_id", "The request's id.")],
                responses={"200": json_response("The request.", ref("LicenceRequest")), **problems(400, 422)},
            )
        },
        ROOT + "/subscriptions": {
            "post": operation(
                "licences_subscribe",
                N_("Subscribe to status events of licence types"),
                tag=TAG,
                security=bearer(READ),
                body=json_body(
                    obj(
                        {
                            "endpoint": {"type": "string", "description": "https URL the signed events are posted to."},
                            "types": {**STRINGS, "description": "Licence type codes the client holds a grant for."},
                            "accessed": {"type": "boolean", "description": "Also every licence the client has accessed."},
                        },
                        required=("endpoint",),
                    )
                ),
                responses={
                    "201": {**json_response("The subscription.", ref("LicenceSubscription")), "headers": {"Location": header("It.")}},
                    **problems(400, 409, 422),
                },
            ),
            "get": operation(
                "licences_subscriptions",
                N_("The client's active subscriptions"),
                tag=TAG,
                security=bearer(READ),
                responses={
                    "200": json_response(
                        "Its subscriptions.",
                        obj({"subscriptions": {"type": "array", "items": ref("LicenceSubscription")}}, required=("subscriptions",)),
                    ),
                    **problems(),
                },
            ),
        },
        ROOT + "/subscriptions/{subscription_id}": {
            "delete": operation(
                "licences_unsubscribe",
                N_("End a subscription"),
                tag=TAG,
                security=bearer(READ),
                parameters=[path_parameter("subscription_id", "The subscription's id.", {"type": "integer", "minimum": 0})],
                responses={"204": {"description": "Ended."}, **problems(400, 422)},
            )
        },
    }


def openapi() -> dict:
    return part(
        {**_sharing_paths(), **_issuing_paths()},
        schemas={
            "Licence": LICENCE,
            "LicenceStatus": STATUS,
            "LicenceLookup": LOOKUP,
            "LicenceQuery": QUERY,
            "LicenceComparison": COMPARISON,
            "LicenceTypeFields": TYPE_FIELDS,
            "LicenceAnswer": LICENCE_ANSWER,
            "LicenceIssueRequest": ISSUE_REQUEST,
            "LicenceChangeRequest": CHANGE_REQUEST,
            "LicenceRequest": REQUEST,
            "LicenceRequestBody": REQUEST_BODY,
            "LicenceSubscription": SUBSCRIPTION,
        },
        tags=[(TAG, N_("The electronic licence library: look up, compare and verify with consent or a grant; issue and change."))],
        scopes={
            READ: N_("Look up, compare, verify and copy licences (with the holder's consent or a standing grant); requests; events."),
            ISSUE: N_("Issue licences and change their state or version (with an issue grant and the department's seal)."),
        },
    )
