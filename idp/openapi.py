"""The identity provider's JSON APIs in the OpenAPI document (see ``core.openapi``).

The OAuth 2.0 / OpenID Connect endpoints that answer JSON (token, introspection,
revocation, userinfo, discovery, the keys, protected-resource metadata) and the
IdP's own API under ``/api/idp``: counter verification, the matter catalogue,
enterprises and their agents, USB-key certificate enrolment. The browser
endpoints (authorize, consent, logout, the pages) answer HTML and redirects and
are described in the developers' guide instead.
"""

from __future__ import annotations

from core.openapi import (
    BOOLEAN,
    CLIENT_BASIC,
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
    page_parameters,
    part,
    path_parameter,
    problems,
    ref,
)
from core.web.i18n import N_
from idp import levels
from idp.certlogin.enrolment import ENROL_SCOPE
from idp.oidc import grants
from idp.oidc.api import DEVICE_AUTHORIZATION_PATH, JWKS_PATH, RESOURCE_METADATA_PATH, TOKEN_LIMITS, USERINFO_PATH
from idp.oidc.clients import DEVICE_CODE
from idp.oidc.resources import COUNTER_SCOPE, IDP_API
from idp.oidc.tokens import REALNAME_SCOPE
from idp.people.enterprises import STAFF_SCOPE

OAUTH_TAG, IDP_TAG = "oauth", "idp"
ROOT = IDP_API.root
FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": header("no-store: tokens are never cached.")}

OAUTH_ERROR = obj(
    {"error": {"type": "string", "description": "An OAuth 2.0 error code (RFC 6749 5.2, RFC 6750 3.1)."}, "error_description": STRING},
    required=("error",),
)
# Userinfo answers a request without any token with 401 and an empty object (RFC 6750 3.1: no error code then).
BEARER_ERROR = obj({"error": STRING, "error_description": STRING})


def _oauth_errors(*statuses: int, schema: str = "OAuthError") -> dict:
    return {str(s): json_response("An OAuth 2.0 error.", ref(schema)) for s in statuses}


def _form(properties: dict, required=(), description: str | None = None) -> dict:
    schema = obj(properties, required=required)
    if description:
        schema["description"] = description
    return {"required": True, "content": {FORM: {"schema": schema}}}


def _limited(name: str, description: str) -> dict:
    return {"type": "string", "maxLength": TOKEN_LIMITS.get(name, 300), "description": description}


# Client authentication in the form (client_secret_post, private_key_jwt, public clients); HTTP Basic is the clientBasic scheme.
CLIENT_FIELDS = {
    "client_id": _limited("client_id", "The client, when it does not authenticate with HTTP Basic."),
    "client_secret": _limited("client_secret", "client_secret_post."),
    "client_assertion_type": _limited("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
    "client_assertion": _limited("client_assertion", "private_key_jwt (RFC 7523): a JWT signed with the client's key."),
}
CLIENT_AUTH = [{CLIENT_BASIC: []}, {}]  # HTTP Basic, or the fields above in the form

TOKEN_ANSWER = obj(
    {
        "access_token": STRING,
        "token_type": {"type": "string", "description": "Bearer"},
        "expires_in": INTEGER,
        "scope": STRING,
        "id_token": STRING,
        "refresh_token": STRING,
        "authorization_details": {"type": "array", "items": {"type": "object"}},
    },
    required=("access_token", "token_type", "expires_in"),
)

DEVICE_ANSWER = obj(
    {
        "device_code": STRING,
        "user_code": {"type": "string", "description": "8 letters shown as XXXX-XXXX, for the person to enter at /device."},
        "verification_uri": STRING,
        "verification_uri_complete": STRING,
        "expires_in": INTEGER,
        "interval": INTEGER,
    },
    required=("device_code", "user_code", "verification_uri", "expires_in"),
)

INTROSPECTION = obj(
    {
        "active": BOOLEAN,
        "scope": STRING,
        "client_id": STRING,
        "sub": STRING,
        "aud": {"anyOf": [STRING, STRINGS]},
        "iss": STRING,
        "exp": INTEGER,
        "iat": INTEGER,
        "token_type": STRING,
    },
    required=("active",),
)

PROVIDER_METADATA = obj(
    {
        "issuer": STRING,
        "authorization_endpoint": STRING,
        "token_endpoint": STRING,
        "userinfo_endpoint": STRING,
        "jwks_uri": STRING,
        "introspection_endpoint": STRING,
        "revocation_endpoint": STRING,
        "device_authorization_endpoint": STRING,
        "end_session_endpoint": STRING,
        "scopes_supported": STRINGS,
        "acr_values_supported": STRINGS,
        "protected_resources": STRINGS,
        "authorization_details_types_supported": STRINGS,
    },
    required=("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported", "subject_types_supported"),
    description="OpenID Connect Discovery 1.0 provider metadata.",
)

RESOURCE_METADATA = obj(
    {"resource": STRING, "authorization_servers": STRINGS, "scopes_supported": STRINGS, "bearer_methods_supported": STRINGS},
    required=("resource", "authorization_servers", "scopes_supported"),
    description="RFC 9728 protected resource metadata.",
)

USERINFO = obj(
    {
        "sub": STRING,
        "name": STRING,
        "preferred_username": STRING,
        "locale": STRING,
        "real_name_verified": BOOLEAN,
        "resident_id_masked": STRING,
        "real_name_method": STRING,
    },
    required=("sub",),
)

PROOFING = obj(
    {
        "account_id": STRING,
        "verified": BOOLEAN,
        "method": STRING,
        "resident_id": {"type": "string", "description": "Masked."},
        "legal_name": STRING,
        "source": STRING,
        "location": nullable(STRING),
        "document": nullable(STRING),
        "verified_at": DATE_TIME,
    },
    required=("account_id", "verified"),
)

COUNTER_VERIFICATION = obj(
    {
        "account": {"type": "string", "description": "The account: its id, username or mobile number."},
        "resident_id": {"type": "string", "description": "The resident ID on the document shown (GB 11643)."},
        "name": {"type": "string", "description": "The legal name on the document."},
        "clerk": {"type": "string", "description": "Who checked the document."},
        "location": {"type": "string", "description": "Which counter."},
        "document": {"type": "string", "description": "Which document was shown."},
    },
    required=("account", "resident_id", "name", "clerk", "location", "document"),
)

MATTER = obj(
    {
        "code": STRING,
        "name": STRING,
        "level": {"type": "integer", "enum": list(levels.LEVELS)},
        "acr": STRING,
        "level_name": STRING,
        "department": nullable(STRING),
        "updated_at": DATE_TIME,
    },
    required=("code", "name", "level", "acr"),
)

PARTY = obj({"account_id": STRING, "label": nullable(STRING)}, required=("account_id",))
AUTHORISATION = obj(
    {
        "id": STRING,
        "agent": PARTY,
        "matters": {"anyOf": [{"const": "*"}, STRINGS], "description": "The matter codes the agent may handle, or * for all."},
        "granted_at": DATE_TIME,
        "expires_at": DATE_TIME,
        "status": {"enum": ["active", "expired", "revoked"]},
        "revoked_at": DATE_TIME,
    },
    required=("id", "agent", "matters", "status"),
)
ENTERPRISE = obj(
    {
        "credit_code": {"type": "string", "description": "Unified social credit code (GB 32100)."},
        "name": STRING,
        "status": STRING,
        "representative": PARTY,
        "created_at": DATE_TIME,
        "created_by": STRING,
        "agents": {"type": "array", "items": ref("IdPAgentAuthorisation")},
    },
    required=("credit_code", "name", "status", "representative"),
)
ACCOUNT_REF = {"type": "string", "description": "The account: its id, username or mobile number."}

ENROLMENT_REQUEST = obj(
    {
        "profile": {"type": "string", "description": "The certificate profile (a USB-key person or enterprise profile)."},
        "csr": {"type": "string", "description": "PKCS#10, PEM, made with the key on the USB key."},
        "name": STRING,
        "resident_id": STRING,
        "credit_code": STRING,
    },
    required=("profile", "csr"),
)
ENROLMENT = obj({"serial": STRING, "certificate": STRING, "chain": STRINGS}, required=("serial", "certificate", "chain"))


def _oauth_paths() -> dict:
    form_token = _limited("token", "The token.")
    hint = {"type": "string", "enum": ["access_token", "refresh_token"], "description": "token_type_hint (RFC 7009)."}
    return {
        grants.TOKEN_PATH: {
            "post": operation(
                "oauth_token",
                N_("Get an access token (OAuth 2.0 token endpoint)"),
                tag=OAUTH_TAG,
                security=CLIENT_AUTH,
                description="client_credentials for a system acting for itself; authorization_code (with PKCE) and "
                "refresh_token for a hall acting for a person; the device code grant (RFC 8628) for a kiosk or TV, polled "
                "until the person decided. Name the API with resource (RFC 8707). Parameters go in the "
                "body, each at most once (resource may repeat).",
                body=_form(
                    {
                        "grant_type": {
                            "type": "string",
                            "enum": ["client_credentials", "authorization_code", "refresh_token", DEVICE_CODE],
                        },
                        "device_code": _limited("device_code", "From the device authorization answer (RFC 8628)."),
                        "scope": _limited("scope", "Space-separated scopes."),
                        "resource": _limited("resource", "The API the token is for: public URL + its root (e.g. /api/ca)."),
                        "code": STRING,
                        "redirect_uri": _limited("redirect_uri", "As in the authorization request."),
                        "code_verifier": STRING,
                        "refresh_token": STRING,
                        "authorization_details": _limited("authorization_details", "RFC 9396, a JSON array."),
                        **CLIENT_FIELDS,
                    },
                    required=("grant_type",),
                ),
                responses={"200": json_response("The token.", TOKEN_ANSWER, NO_STORE), **_oauth_errors(400, 401), **problems()},
            )
        },
        DEVICE_AUTHORIZATION_PATH: {
            "post": operation(
                "oauth_device_authorization",
                N_("Start a sign-in on a kiosk or TV (RFC 8628 device authorization)"),
                tag=OAUTH_TAG,
                security=CLIENT_AUTH,
                description="For clients registered for the device code grant. Show user_code and verification_uri (or a QR "
                "code of verification_uri_complete), then poll the token endpoint with device_code every interval seconds.",
                body=_form({"scope": _limited("scope", "Space-separated scopes; the client's own."), **CLIENT_FIELDS}),
                responses={"200": json_response("The codes.", DEVICE_ANSWER, NO_STORE), **_oauth_errors(400, 401), **problems()},
            )
        },
        grants.INTROSPECTION_PATH: {
            "post": operation(
                "oauth_introspect",
                N_("Ask whether a token is active (RFC 7662)"),
                tag=OAUTH_TAG,
                security=CLIENT_AUTH,
                body=_form({"token": form_token, "token_type_hint": hint, **CLIENT_FIELDS}, required=("token",)),
                responses={"200": json_response("What the token is.", INTROSPECTION), **_oauth_errors(400, 401), **problems()},
            )
        },
        grants.REVOCATION_PATH: {
            "post": operation(
                "oauth_revoke",
                N_("Revoke a token (RFC 7009)"),
                tag=OAUTH_TAG,
                security=CLIENT_AUTH,
                body=_form({"token": form_token, "token_type_hint": hint, **CLIENT_FIELDS}, required=("token",)),
                responses={
                    "200": json_response("Revoked, or it was not valid anyway.", obj({})),
                    **_oauth_errors(400, 401),
                    **problems(),
                },
            )
        },
        USERINFO_PATH: {
            method: operation(
                f"oauth_userinfo_{method}",
                N_("The signed-in person's claims (OpenID Connect userinfo)"),
                tag=OAUTH_TAG,
                security=[{"oauth2": ["openid"]}],
                responses={
                    "200": json_response("The claims the token's scopes allow.", USERINFO, NO_STORE),
                    "401": json_response("No token, or one that is not valid.", ref("BearerError")),
                    "403": json_response("The token was not issued with the openid scope.", ref("BearerError")),
                    **problems(),
                },
            )
            for method in ("get", "post")
        },
        "/.well-known/openid-configuration": {
            "get": operation(
                "oidc_discovery",
                N_("OpenID Connect discovery document"),
                tag=OAUTH_TAG,
                responses={"200": json_response("The provider's metadata.", PROVIDER_METADATA), **problems()},
            )
        },
        RESOURCE_METADATA_PATH: {
            "get": operation(
                "oauth_resource_metadata_issuer",
                N_("Protected resource metadata of the provider itself (RFC 9728)"),
                tag=OAUTH_TAG,
                responses={"200": json_response("The metadata.", RESOURCE_METADATA), **problems()},
            )
        },
        RESOURCE_METADATA_PATH + "/{root}": {
            "get": operation(
                "oauth_resource_metadata",
                N_("Protected resource metadata of an API (RFC 9728)"),
                tag=OAUTH_TAG,
                parameters=[path_parameter("root", "The API's root without its leading slash, e.g. api/ca.")],
                responses={
                    "200": json_response("The metadata.", RESOURCE_METADATA),
                    "404": json_response("No such API.", ref("OAuthError")),
                }
                | {k: v for k, v in problems().items() if k != "404"},
            )
        },
        JWKS_PATH: {
            "get": operation(
                "oidc_jwks",
                N_("The keys ID tokens and access tokens are signed with"),
                tag=OAUTH_TAG,
                responses={"200": json_response("A JWK set (RFC 7517).", ref("JWKS")), **problems()},
            )
        },
    }


def _api_paths() -> dict:
    enterprise = json_response("The enterprise.", ref("IdPEnterprise"))
    code = path_parameter("code", "The enterprise's unified social credit code.")
    return {
        ROOT + "/counter-verifications": {
            "post": operation(
                "idp_counter_verification",
                N_("Record a real-name check made at a service-centre counter"),
                tag=IDP_TAG,
                security=bearer(COUNTER_SCOPE),
                body=json_body(ref("IdPCounterVerification")),
                responses={
                    "201": {
                        **json_response("The account's proofing.", ref("IdPProofing")),
                        "headers": {"Location": header("The account's proofing.")},
                    },
                    **problems(400, 409, 422, 429),
                },
            )
        },
        ROOT + "/accounts/{account_id}/proofing": {
            "get": operation(
                "idp_account_proofing",
                N_("Whether and how an account's real name was verified"),
                tag=IDP_TAG,
                security=bearer(COUNTER_SCOPE),
                parameters=[path_parameter("account_id", "The account's id.")],
                responses={"200": json_response("The account's proofing.", ref("IdPProofing"))} | problems(),
            )
        },
        ROOT + "/matters": {
            "get": operation(
                "idp_list_matters",
                N_("The matter catalogue: the authentication level each matter needs"),
                tag=IDP_TAG,
                responses={
                    "200": json_response(
                        "Every matter.", obj({"matters": {"type": "array", "items": ref("IdPMatter")}}, required=("matters",))
                    )
                }
                | problems(),
            )
        },
        ROOT + "/matters/{code}": {
            "get": operation(
                "idp_get_matter",
                N_("One matter of the catalogue"),
                tag=IDP_TAG,
                parameters=[path_parameter("code", "The matter's code.")],
                responses={"200": json_response("The matter.", ref("IdPMatter"))} | problems(),
            )
        },
        ROOT + "/enterprises": {
            "post": operation(
                "idp_add_enterprise",
                N_("Register an enterprise and its legal representative"),
                tag=IDP_TAG,
                security=bearer(STAFF_SCOPE),
                body=json_body(
                    obj(
                        {"credit_code": STRING, "name": STRING, "representative": ACCOUNT_REF},
                        required=("credit_code", "name", "representative"),
                    )
                ),
                responses={
                    "201": {**enterprise, "headers": {"Location": header("The enterprise's address.")}},
                    **problems(400, 409, 422),
                },
            ),
            "get": operation(
                "idp_list_enterprises",
                N_("List enterprises"),
                tag=IDP_TAG,
                security=bearer(STAFF_SCOPE),
                parameters=page_parameters(100),
                responses={
                    "200": json_response(
                        "A page of enterprises.",
                        obj(
                            {"enterprises": {"type": "array", "items": ref("IdPEnterprise")}, "limit": INTEGER, "offset": INTEGER},
                            required=("enterprises", "limit", "offset"),
                        ),
                    ),
                    **problems(400),
                },
            ),
        },
        ROOT + "/enterprises/{code}": {
            "get": operation(
                "idp_get_enterprise",
                N_("An enterprise with its agents"),
                tag=IDP_TAG,
                security=bearer(STAFF_SCOPE),
                parameters=[code],
                responses={"200": enterprise, **problems(400, 422)},
            )
        },
        ROOT + "/enterprises/{code}/representative": {
            "put": operation(
                "idp_set_representative",
                N_("Change an enterprise's legal representative"),
                tag=IDP_TAG,
                security=bearer(STAFF_SCOPE),
                parameters=[code],
                body=json_body(obj({"representative": ACCOUNT_REF}, required=("representative",))),
                responses={"200": enterprise, **problems(400, 409, 422)},
            )
        },
        ROOT + "/enterprises/{code}/agents/{authorisation_id}/revoke": {
            "post": operation(
                "idp_revoke_agent",
                N_("Revoke an agent's authorisation"),
                tag=IDP_TAG,
                security=bearer(STAFF_SCOPE),
                parameters=[code, path_parameter("authorisation_id", "The authorisation's id.")],
                responses={"200": json_response("The authorisation, revoked.", ref("IdPAgentAuthorisation")), **problems(400, 409, 422)},
            )
        },
        ROOT + "/enrolments": {
            "post": operation(
                "idp_enrol_certificate",
                N_("Enrol a USB key: a certificate for the signed-in person or their enterprise"),
                tag=IDP_TAG,
                security=bearer(ENROL_SCOPE),
                description="Called by hallmark-key enroll with the person's own access token (authorization code flow).",
                body=json_body(ref("IdPEnrolmentRequest")),
                responses={
                    "201": {
                        **json_response("The certificate and its chain (issuing CA first).", ref("IdPEnrolment")),
                        "headers": {"Location": header("The certificate in the CA's API.")},
                    },
                    **problems(400, 409, 422),
                },
            )
        },
    }


def openapi() -> dict:
    return part(
        {**_oauth_paths(), **_api_paths()},
        schemas={
            "OAuthError": OAUTH_ERROR,
            "BearerError": BEARER_ERROR,
            "IdPProofing": PROOFING,
            "IdPCounterVerification": COUNTER_VERIFICATION,
            "IdPMatter": MATTER,
            "IdPEnterprise": ENTERPRISE,
            "IdPAgentAuthorisation": AUTHORISATION,
            "IdPEnrolmentRequest": ENROLMENT_REQUEST,
            "IdPEnrolment": ENROLMENT,
        },
        tags=[
            (OAUTH_TAG, N_("OAuth 2.0 and OpenID Connect: tokens, introspection, revocation, userinfo, discovery, keys.")),
            (IDP_TAG, N_("Identity: counter verification, the matter catalogue, enterprises and agents, USB-key enrolment.")),
        ],
        scopes={
            "openid": N_("OpenID Connect sign-in (userinfo)."),
            "profile": N_("The person's name and username."),
            REALNAME_SCOPE: N_("Whether the person's real name is verified, and their masked resident ID."),
            COUNTER_SCOPE: N_("Record in-person identity checks (service-centre counters)."),
            STAFF_SCOPE: N_("Manage enterprises and their agents (staff console)."),
            ENROL_SCOPE: N_("Enrol the signed-in person's USB key (hallmark-key)."),
        },
        security_schemes={CLIENT_BASIC: {"type": "http", "scheme": "basic", "description": "Client id and secret (client_secret_basic)."}},
    )
