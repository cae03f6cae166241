"""The CA's JSON API (``ca/api.py``) in the OpenAPI document (see ``core.openapi``)."""

from __future__ import annotations

from ca.api import RESOURCE
from ca.queries import STATUSES
from ca.revocation import REASONS
from core.openapi import (
    DATE_TIME,
    STRING,
    STRINGS,
    bearer,
    header,
    json_body,
    json_response,
    obj,
    operation,
    page_parameters,
    part,
    path_parameter,
    problems,
    query_parameter,
    ref,
)
from core.web.i18n import N_

TAG = "ca"
ROOT = RESOURCE.root

CERTIFICATE = obj(
    {
        "serial": {"type": "string", "description": "Serial number, hexadecimal."},
        "authority": STRING,
        "profile": STRING,
        "subject": {"type": "string", "description": "The subject's distinguished name (RFC 4514)."},
        "subject_id": {"anyOf": [STRING, {"type": "null"}], "description": "The subject's resident ID or credit code, masked."},
        "status": {"enum": list(STATUSES)},
        "not_before": DATE_TIME,
        "not_after": DATE_TIME,
        "fingerprint_sha256": STRING,
        "issued_at": DATE_TIME,
        "revoked_at": DATE_TIME,
        "revocation_reason": STRING,
        "certificate": {"type": "string", "description": "The certificate, PEM (single-certificate answers only)."},
    },
    required=("serial", "authority", "profile", "subject", "status", "not_before", "not_after", "fingerprint_sha256", "issued_at"),
)

ISSUE_REQUEST = obj(
    {
        "profile": {"type": "string", "description": "A certificate profile (hallmark ca profiles)."},
        "csr": {"type": "string", "description": "A PKCS#10 certificate signing request, PEM."},
        "name": {"type": "string", "description": "The subject's name (CN)."},
        "subject_id": {"type": "string", "description": "Resident ID (persons) or unified social credit code (organisations)."},
        "san": {**STRINGS, "description": "Subject alternative names the profile allows."},
    },
    required=("profile", "csr", "name"),
)

SERIAL = path_parameter("serial", "The certificate's serial number, hexadecimal.", {"type": "string", "pattern": "^[0-9A-Fa-f]{1,40}$"})


def openapi() -> dict:
    certificate = json_response("The certificate.", ref("CACertificate"))
    paths = {
        ROOT + "/certificates": {
            "post": operation(
                "ca_issue_certificate",
                N_("Issue a certificate from a certificate signing request"),
                tag=TAG,
                security=bearer("ca:issue"),
                body=json_body(ref("CAIssueRequest")),
                responses={
                    "201": {**certificate, "headers": {"Location": header("The new certificate's address.")}},
                    **problems(400, 409, 422),
                },
            ),
            "get": operation(
                "ca_list_certificates",
                N_("List certificates, newest first"),
                tag=TAG,
                security=bearer("ca:read"),
                parameters=[
                    query_parameter("subject_id", "Only the certificates of this resident ID or credit code."),
                    query_parameter("status", "Only certificates in this state.", {"enum": list(STATUSES)}),
                    query_parameter("profile", "Only certificates of this profile."),
                    query_parameter("authority", "Only certificates of this issuing authority."),
                    *page_parameters(50),
                ],
                responses={
                    "200": json_response(
                        "A page of certificates.",
                        obj(
                            {
                                "certificates": {"type": "array", "items": ref("CACertificate")},
                                "limit": {"type": "integer"},
                                "offset": {"type": "integer"},
                            },
                            required=("certificates", "limit", "offset"),
                        ),
                    ),
                    **problems(400),
                },
            ),
        },
        ROOT + "/certificates/{serial}": {
            "get": operation(
                "ca_get_certificate",
                N_("Look up a certificate by serial number"),
                tag=TAG,
                security=bearer("ca:read"),
                parameters=[SERIAL],
                responses={"200": certificate, **problems(400)},
            ),
        },
        ROOT + "/certificates/{serial}/revoke": {
            "post": operation(
                "ca_revoke_certificate",
                N_("Revoke a certificate"),
                tag=TAG,
                security=bearer("ca:revoke"),
                parameters=[SERIAL],
                body=json_body(obj({"reason": {"enum": list(REASONS), "default": "unspecified"}})),
                responses={"200": json_response("The revoked certificate.", ref("CACertificate")), **problems(400, 409, 422)},
            ),
        },
    }
    return part(
        paths,
        schemas={"CACertificate": CERTIFICATE, "CAIssueRequest": ISSUE_REQUEST},
        tags=[(TAG, N_("Certificate authority: issue, look up and revoke certificates."))],
        scopes={
            "ca:issue": N_("Issue certificates (a CA officer's console, an enrolment service)."),
            "ca:read": N_("Look up and list certificates."),
            "ca:revoke": N_("Revoke certificates."),
        },
    )
