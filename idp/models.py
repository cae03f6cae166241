"""Tables of the identity provider.

Proofing (who a person is) and authentication (how they logged in this time) are
kept apart: ``IdentityProofing`` records the first, ``SSOSession`` the second, and
the achieved level is derived from both (see ``idp.levels``).

Secrets (passwords, client secrets, codes, refresh tokens) are stored only as
hashes; resident IDs only as a keyed hash plus a masked form.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime


class Account(Base):
    __tablename__ = "idp_accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # random UUID, the OIDC "sub"
    username: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    mobile: Mapped[str | None] = mapped_column(String(20), unique=True, nullable=True)
    display_name: Mapped[str] = mapped_column(String(64), default="")
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, PHC string
    kind: Mapped[str] = mapped_column(String(12), default="person")  # person | enterprise (certificate-login work)
    roles: Mapped[str] = mapped_column(String(200), default="")  # space-separated staff roles, e.g. "clerk"
    status: Mapped[str] = mapped_column(String(12), default="active")  # active | disabled
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    locale: Mapped[str] = mapped_column(String(10), default="zh")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When ``mobile`` was last confirmed by a text code (registration, the account page); NULL: never.
    # SMS login, SMS as a second factor and recovery use only a confirmed number.
    phone_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LoginFailure(Base):
    """Wrong passwords for a name that has no account, counted and locked as an account's are (``failed_logins``,
    ``locked_until``), so that the login form answers alike whether the name exists (idp.people.accounts)."""

    __tablename__ = "idp_login_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # keyed hash of the name as typed (normalised)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PowSpent(Base):
    """A login proof-of-work challenge already used (idp.people.loginguard): single use, kept until it expires."""

    __tablename__ = "idp_pow_spent"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the challenge's salt
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class IdentityProofing(Base):
    """That an account belongs to a real, identified person: one per account, one account per resident ID."""

    __tablename__ = "idp_identity_proofing"

    account_id: Mapped[str] = mapped_column(ForeignKey("idp_accounts.id"), primary_key=True)
    resident_id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    resident_id_masked: Mapped[str] = mapped_column(String(24))
    legal_name: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))  # registry | counter
    source: Mapped[str] = mapped_column(String(200))  # registry adapter name, or the clerk's account id
    location: Mapped[str] = mapped_column(String(200), default="")  # service centre, for counter checks
    document: Mapped[str] = mapped_column(String(64), default="")  # document type seen at the counter
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RegistryPerson(Base):
    """The embedded population-registry adapter's table (production uses an HTTP adapter)."""

    __tablename__ = "idp_registry_people"

    resident_id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    resident_id_masked: Mapped[str] = mapped_column(String(24))
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), default="normal")  # normal | deceased | cancelled
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Client(Base):
    """A relying party: a hall (authorization code) or an approval system (client credentials)."""

    __tablename__ = "idp_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    client_type: Mapped[str] = mapped_column(String(12))  # confidential | public
    secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # keyed HMAC-SHA256
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))  # client_secret_basic|client_secret_post|private_key_jwt|none
    jwks: Mapped[str | None] = mapped_column(Text, nullable=True)  # for private_key_jwt
    redirect_uris: Mapped[str] = mapped_column(Text, default="[]")  # JSON list, matched exactly
    grant_types: Mapped[str] = mapped_column(String(200))  # space-separated
    scope: Mapped[str] = mapped_column(String(500))  # space-separated scopes it may ask for
    min_acr: Mapped[int] = mapped_column(Integer, default=1)
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)  # consent skipped
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(400), nullable=True)
    frontchannel_logout_uri: Mapped[str | None] = mapped_column(String(400), nullable=True)
    post_logout_redirect_uris: Mapped[str] = mapped_column(Text, default="[]")
    id_token_signed_response_alg: Mapped[str] = mapped_column(String(10), default="ES256", server_default="ES256")  # ES256 | RS256
    # Resource indicators (RFC 8707) it may ask for, space-separated absolute URIs; NULL: this
    # instance's own APIs that serve one of its scopes (clients registered before resources existed).
    resources: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SigningKey(Base):
    """A JWS signing key in the HSM. Retired keys stay in JWKS until their tokens have expired."""

    __tablename__ = "idp_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10))  # ES256 | RS256
    key_uri: Mapped[str] = mapped_column(String(400))
    public_jwk: Mapped[str] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # no longer signs
    publish_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # leaves JWKS after


class SSOSession(Base):
    """One browser's login at the IdP, shared by every hall it signs in to."""

    __tablename__ = "idp_sessions"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_accounts.id"), index=True)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)  # last time the user actively authenticated
    amr: Mapped[str] = mapped_column(String(100))  # space-separated RFC 8176 values proven in this session
    acr: Mapped[int] = mapped_column(Integer)  # level achieved (1..3)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ip: Mapped[str] = mapped_column(String(45), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    # Random, drawn anew at login, re-authentication and any change of level; the cookie's MAC covers it
    # (idp.people.sessions.cookie_value), so a cookie from before the change opens nothing. Never sent anywhere.
    secret: Mapped[str] = mapped_column(String(64), default="", server_default="")


class SessionClient(Base):
    """A client the session signed in to: who must hear about logout."""

    __tablename__ = "idp_session_clients"

    sid: Mapped[str] = mapped_column(ForeignKey("idp_sessions.sid"), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("idp_clients.client_id"), primary_key=True)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuthorizationCode(Base):
    __tablename__ = "idp_authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("idp_clients.client_id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_accounts.id"))
    sid: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(400))
    scope: Mapped[str] = mapped_column(String(500))
    nonce: Mapped[str | None] = mapped_column(String(200), nullable=True)
    code_challenge: Mapped[str | None] = mapped_column(String(128), nullable=True)
    code_challenge_method: Mapped[str | None] = mapped_column(String(10), nullable=True)
    acr: Mapped[int] = mapped_column(Integer)
    amr: Mapped[str] = mapped_column(String(100))
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    claims: Mapped[str | None] = mapped_column(Text, nullable=True)  # the OIDC claims request, JSON
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    family_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # tokens issued from it, revoked on replay
    resources: Mapped[str | None] = mapped_column(Text, nullable=True)  # RFC 8707 resources of the authorization request
    # RFC 9396 authorization_details the person agreed to, JSON (idp.oidc.authorization_details); NULL: none asked for
    authorization_details: Mapped[str | None] = mapped_column(Text, nullable=True)


class RefreshToken(Base):
    """Rotated on every use; a replayed (already rotated) token revokes its whole family."""

    __tablename__ = "idp_refresh_tokens"
    __table_args__ = (Index("ix_idp_refresh_tokens_family_id", "family_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(ForeignKey("idp_clients.client_id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_accounts.id"))
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    scope: Mapped[str] = mapped_column(String(500))
    resources: Mapped[str | None] = mapped_column(Text, nullable=True)  # RFC 8707 resources granted; NULL: what the client may ask for
    authorization_details: Mapped[str | None] = mapped_column(Text, nullable=True)  # RFC 9396 details granted, JSON; NULL: none
    acr: Mapped[int] = mapped_column(Integer)
    amr: Mapped[str] = mapped_column(String(100))
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TokenRevocation(Base):
    """Revoked JWT access tokens (by jti) and token families, kept until they would have expired."""

    __tablename__ = "idp_token_revocations"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)  # "jti:<jti>" or "family:<id>" or "sid:<sid>"
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LogoutDelivery(Base):
    """A back- or front-channel logout notice owed to a client, retried until delivered or given up."""

    __tablename__ = "idp_logout_deliveries"
    __table_args__ = (UniqueConstraint("sid", "client_id", "channel", name="uq_idp_logout_deliveries_target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sid: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(ForeignKey("idp_clients.client_id"))
    channel: Mapped[str] = mapped_column(String(8))  # back | front
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(String(300), default="")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Matter(Base):
    """An administrative matter (事项) and the level its department requires."""

    __tablename__ = "idp_matters"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[int] = mapped_column(Integer)
    department: Mapped[str] = mapped_column(String(100), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(200))


class Consent(Base):
    """Scopes an account agreed to share with a client (first-party halls need none)."""

    __tablename__ = "idp_consents"

    account_id: Mapped[str] = mapped_column(ForeignKey("idp_accounts.id"), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("idp_clients.client_id"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(500))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)


# -- certificate login and enterprises (issue 5) --------------------------------------------


class LoginChallenge(Base):
    """A one-time challenge for a USB-key login: stored hashed, bound to one browser, used once."""

    __tablename__ = "idp_login_challenges"

    nonce_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the nonce
    browser_hash: Mapped[str] = mapped_column(String(64))  # keyed hash of the browser's cookies (see idp.certlogin.login)
    purpose: Mapped[str] = mapped_column(String(12))  # login | step-up | enterprise
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CertificateBinding(Base):
    """A certificate an account has logged in with: person certificates bind the account, enterprise
    certificates record which representative or agent presented them."""

    __tablename__ = "idp_certificate_bindings"
    __table_args__ = (UniqueConstraint("fingerprint", "account_id", name="uq_idp_certificate_bindings_fingerprint_account"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)  # SHA-256 of the DER
    account_id: Mapped[str] = mapped_column(ForeignKey("idp_accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(12))  # person | enterprise
    subject_id_hash: Mapped[str] = mapped_column(String(64))  # keyed hash of the resident ID or credit code
    subject_id_masked: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(400))  # DN, resident ID masked
    serial: Mapped[str] = mapped_column(String(64))  # lower-case hex
    issuer: Mapped[str] = mapped_column(String(400))
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    via: Mapped[str] = mapped_column(String(12))  # agent | proxy: how it was first presented
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_status: Mapped[str] = mapped_column(String(20), default="valid")  # what path validation said last time


class Enterprise(Base):
    """An enterprise, keyed by its unified social credit code (public register data), and its legal representative."""

    __tablename__ = "idp_enterprises"

    credit_code: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    representative_id: Mapped[str] = mapped_column(ForeignKey("idp_accounts.id"), index=True)
    status: Mapped[str] = mapped_column(String(12), default="active")  # active | suspended
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AgentAuthorisation(Base):
    """The representative's authorisation of an agent (经办人) to act for the enterprise, for some or all matters."""

    __tablename__ = "idp_agent_authorisations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    credit_code: Mapped[str] = mapped_column(ForeignKey("idp_enterprises.credit_code"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("idp_accounts.id"), index=True)
    matters: Mapped[str] = mapped_column(Text)  # "*" for every matter, else space-separated matter codes
    granted_by: Mapped[str] = mapped_column(String(36))  # the representative's account id at the time
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class SessionActing(Base):
    """For whom an SSO session acts: the person themselves, or an enterprise as representative or agent."""

    __tablename__ = "idp_session_acting"

    sid: Mapped[str] = mapped_column(ForeignKey("idp_sessions.sid"), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(36))
    credit_code: Mapped[str | None] = mapped_column(String(18), nullable=True, index=True)  # None: for oneself
    role: Mapped[str] = mapped_column(String(16))  # self | representative | agent
    authorisation_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    key_proven: Mapped[bool] = mapped_column(Boolean, default=False)  # the enterprise certificate's key, this session
    chosen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ActingGrant(Base):
    """The enterprise a code (and the tokens from it) was issued for; re-checked at every token issuance."""

    __tablename__ = "idp_acting_grants"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    account_id: Mapped[str] = mapped_column(String(36))
    credit_code: Mapped[str] = mapped_column(String(18))
    org_name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))  # representative | agent
    authorisation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeviceAuthorization(Base):
    """An RFC 8628 device authorization: a kiosk's or TV's request, approved or denied by a person at ``/device``
    (idp.oidc.device). Both codes are stored as hashes; the device code is exchanged for tokens once."""

    __tablename__ = "idp_device_authorizations"

    device_code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_code_hash: Mapped[str] = mapped_column(String(64), unique=True)  # of the 8 letters, without the dash
    client_id: Mapped[str] = mapped_column(ForeignKey("idp_clients.client_id"), index=True)
    scope: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending | approved | denied | used
    interval: Mapped[int] = mapped_column(Integer)  # seconds between polls; raised by 5 at every slow_down
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # who decided, and how they had authenticated (the tokens' level is the approving session's)
    account_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    sid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acr: Mapped[int | None] = mapped_column(Integer, nullable=True)
    amr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    family_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # tokens issued from it, revoked on replay


class ScanLogin(Base):
    """Scan-to-login: a desktop login page's QR code, confirmed on a phone already signed in (idp.people.scanlogin).

    The QR holds ``code`` (stored as a hash); the desktop browser holds ``browser_secret`` (a hash here) in a
    cookie, and only a poll carrying it can start the desktop session."""

    __tablename__ = "idp_scan_logins"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending | scanned | confirmed | refused | used
    next_url: Mapped[str] = mapped_column(String(400), default="/account")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    desktop_ip: Mapped[str] = mapped_column(String(45), default="")
    desktop_user_agent: Mapped[str] = mapped_column(String(200), default="")
    phone_sid: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the first session that opened it
    account_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    acr: Mapped[int | None] = mapped_column(Integer, nullable=True)
    amr: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    desktop_sid: Mapped[str | None] = mapped_column(String(64), nullable=True)


# -- privacy: the notice accepted, account closure (issue 16 item 6) ---------------------------


class PrivacyState(Base):
    """Which privacy notice an account accepted, and its closure: asked for, due after the cooling-off, carried out."""

    __tablename__ = "idp_privacy_states"

    account_id: Mapped[str] = mapped_column(ForeignKey("idp_accounts.id"), primary_key=True)
    accepted_version: Mapped[str] = mapped_column(String(32), default="")  # "" = none yet
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closure_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closure_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)  # NULL: no closure pending
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delete_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # retention: kept until then, then deleted
