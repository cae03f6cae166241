"""``hallmark-key serve``: the local signing agent on 127.0.0.1.

Pages of the configured hall origins (and of no other) may ask it, from the
user's browser, to sign with the USB key; the agent signs only after the holder
has confirmed on the agent's own page (keyagent.approval):

    GET  /v1/status       -> {"version", "certificates": [{"id", "subject", "not_after", "fingerprint"}]}
    POST /v1/sign         {"purpose": "login" | "document", "data": base64url, "certificate": id?,
                           "document": {"name": str?, "pages": int?}?, "description": str?}
                          -> 202 {"request", "status": "pending", "confirm_url", "result_url", "expires_in"}
    GET  /confirm/<id>    the agent's confirmation page (its own origin): who asks, for what; 确认签名 / 拒绝
    POST /confirm/<id>    from that page only: csrf_token, decision=approve|deny
    GET  /v1/sign/<id>?wait=<s>
                          -> 202 {"status": "pending"} while the holder has not decided;
                             200 {"status": "signed", "signature": base64url, "algorithm", "certificate": base64 DER,
                                  "chain": [base64 DER]} once; 403 denied; 410 expired or already_used

What keeps a hostile page from using the key:

* Nothing is signed without the holder: a request waits until the holder approves
  it on ``http://127.0.0.1:<port>/confirm/<id>``, which shows the requesting origin,
  the purpose, for documents the name and page count (as the site states them) and
  the digest the signature covers (read from the data), and the certificate. Only a
  form post from that page approves: it must carry the CSRF token bound to that
  request, the agent's own ``Origin``, and (where the browser sends it)
  ``Sec-Fetch-Site: same-origin``. The page may not be framed, fetched or read by
  another origin (no CORS headers, ``frame-ancestors 'none'``, ``Sec-Fetch-Dest``
  must be ``document``). Requests expire after two minutes, are decided once, and
  their signature is handed out once, to the origin that asked.
* CORS with an explicit allow-list of origins, never a wildcard. A request from
  any other origin, or without an ``Origin`` header, is refused with 403 before
  anything else happens; a preflight is answered only for allowed origins (with
  ``Access-Control-Allow-Private-Network`` for Chrome's private network access).
* The ``Host`` header must name this loopback listener (DNS rebinding).
* ``POST /v1/sign`` takes ``application/json`` only, so a browser always preflights it.
* A login signature covers only ``hallmark-login/1 <origin> <nonce> <expires>``
  whose origin is the requesting page's own (a phishing page cannot relay
  a genuine hall's challenge) and which has not expired (checked again at approval).
* A document signature covers only DER-encoded CMS signed attributes (with a
  message digest), so the two purposes can never be confused with each other.

The PIN is entered once, where the agent is started (terminal or settings file),
never on any page. Each request, decision and signature is logged (purpose,
origin, certificate subject, SHA-256 of the data, for documents the name); the
PIN and the CSRF tokens never are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass

import pkcs11
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from werkzeug.wrappers import Request, Response

from keyagent import approval, confirm_page
from keyagent.token import StoredCertificate, TokenError, UnsupportedKey, UsbKey

VERSION = "1"
LOGIN_PREFIX = "hallmark-login/1"
MAX_CHALLENGE_AHEAD = 600  # seconds: refuse challenges that would stay valid longer than this
MAX_BODY = 64 * 1024
MAX_DATA = 16 * 1024
MAX_DESCRIPTION = 200
MAX_PAGES = 1_000_000
PREFLIGHT_MAX_AGE = 600
_NONCE = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REQUEST_PATH = re.compile(r"^/v1/sign/([A-Za-z0-9_\-]{16,64})$")
_CONFIRM_PATH = re.compile(r"^/confirm/([A-Za-z0-9_\-]{16,64})$")
ALGORITHM_NAMES = {"ec": "ecdsa-with-SHA256", "rsa": "sha256WithRSAEncryption"}

log = logging.getLogger("hallmark_key.agent")


class Refused(Exception):
    def __init__(self, status: int, error: str, detail: str, **extra):
        super().__init__(detail)
        self.status, self.error, self.detail, self.extra = status, error, detail, extra


@dataclass(frozen=True)
class Signature:
    value: bytes
    algorithm: str
    certificate: StoredCertificate
    chain: list[x509.Certificate]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_\-]*={0,2}", text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- what may be signed -----------------------------------------------------------------------


def check_login_challenge(data: bytes, origin: str, now: float | None = None) -> str:
    """The challenge text, if it is well formed, for ``origin`` and current; Refused otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "bad_challenge", "a login challenge must be UTF-8 text") from None
    parts = text.split(" ")
    if len(parts) != 4 or parts[0] != LOGIN_PREFIX or not _NONCE.match(parts[2]) or not parts[3].isascii() or not parts[3].isdigit():
        raise Refused(400, "bad_challenge", f"a login challenge must read '{LOGIN_PREFIX} <origin> <nonce> <expires-unix>'")
    if parts[1] != origin:
        raise Refused(403, "origin_mismatch", "the challenge was issued for another origin than the page asking; not signed")
    expires = int(parts[3])
    now = time.time() if now is None else now
    if expires <= now:
        raise Refused(400, "expired_challenge", "the login challenge has expired; reload the login page")
    if expires > now + MAX_CHALLENGE_AHEAD:
        raise Refused(400, "bad_challenge", f"a login challenge may be valid for at most {MAX_CHALLENGE_AHEAD} seconds")
    return text


def check_signed_attributes(data: bytes) -> bytes:
    """``data`` must be DER-encoded CMS signed attributes (RFC 5652 5.4) with a message digest; returns that digest."""
    if data[:1] != b"\x31":
        raise Refused(400, "bad_document_data", "document data must be DER-encoded CMS signed attributes (a SET)")
    try:
        attributes = cms.CMSAttributes.load(data, strict=True)
        types = [a["type"].native for a in attributes]
        reencoded = attributes.dump(force=True)
    except (ValueError, TypeError) as exc:
        raise Refused(400, "bad_document_data", f"document data are not CMS signed attributes: {exc}") from None
    if reencoded != data:
        raise Refused(400, "bad_document_data", "document data are not in DER")
    if "message_digest" not in types or "content_type" not in types:
        raise Refused(400, "bad_document_data", "signed attributes must include content-type and message-digest")
    digests = [a["values"][0].native for a in attributes if a["type"].native == "message_digest" and len(a["values"]) == 1]
    if len(digests) != 1 or not isinstance(digests[0], bytes) or len(digests[0]) != 32:
        raise Refused(400, "bad_document_data", "signed attributes must hold one SHA-256 message digest")
    return digests[0]


def _usable_for(certificate: x509.Certificate, purpose: str) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    try:
        eku = list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        eku = None
    if purpose == "login":
        return (usage is None or usage.digital_signature) and (eku is None or ExtendedKeyUsageOID.CLIENT_AUTH in eku)
    # A document signature puts the holder's name under its content: only a signing (nonRepudiation)
    # certificate may make one, never the login key, whatever page asks.
    return usage is not None and usage.content_commitment


# -- the agent --------------------------------------------------------------------------------


class Agent:
    def __init__(self, usb: UsbKey, allowed_origins: list[str], port: int, request_lifetime: float = approval.LIFETIME):
        if not allowed_origins:
            raise ValueError("no allowed origins configured; the agent would refuse every page")
        if any(o in ("*", "null") for o in allowed_origins):
            raise ValueError("wildcard or null origins are never allowed")
        self.usb = usb
        self.allowed = frozenset(allowed_origins)
        self.port = port
        self.hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})
        self.approvals = approval.Approvals(lifetime=request_lifetime)

    # -- token -------------------------------------------------------------------------

    def identities(self) -> list[StoredCertificate]:
        try:
            return self.usb.identities()
        except (TokenError, pkcs11.PKCS11Error) as exc:
            raise Refused(503, "token_unavailable", f"the USB key cannot be read: {exc or type(exc).__name__}") from None

    def choose(self, purpose: str, wanted: str | None) -> StoredCertificate:
        identities = self.identities()
        if wanted is not None:
            found = [c for c in identities if c.id == wanted.lower() or c.fingerprint == wanted.lower()]
            if not found:
                raise Refused(404, "no_such_certificate", "no certificate with this id (and its key) is on the USB key")
            chosen = found[0]
            if not chosen.valid_at():
                raise Refused(409, "certificate_expired", "this certificate is expired or not yet valid")
            if not _usable_for(chosen.certificate, purpose):
                raise Refused(409, "wrong_certificate", f"this certificate may not be used for {purpose}")
            return chosen
        candidates = [c for c in identities if c.valid_at() and _usable_for(c.certificate, purpose)]
        if not candidates:
            raise Refused(409, "no_certificate", f"the USB key holds no valid certificate usable for {purpose}")
        if len(candidates) > 1:
            raise Refused(
                409,
                "choose_certificate",
                "several certificates fit; name one by its id",
                certificates=[self._status_entry(c) for c in candidates],
            )
        return candidates[0]

    def sign(self, purpose: str, data: bytes, wanted: str | None) -> Signature:
        chosen = self.choose(purpose, wanted)
        try:
            value, kind = self.usb.sign(chosen.key_id, data)
            algorithm = ALGORITHM_NAMES[kind]
            chain = self.usb.chain_for(chosen.certificate)
        except UnsupportedKey:
            raise Refused(409, "unsupported_key", "the key of this certificate is neither EC nor RSA") from None
        except (TokenError, pkcs11.PKCS11Error) as exc:
            raise Refused(503, "token_unavailable", f"the USB key did not sign: {exc or type(exc).__name__}") from None
        return Signature(value, algorithm, chosen, chain)

    @staticmethod
    def _status_entry(c: StoredCertificate) -> dict:
        return {"id": c.id, "subject": c.subject, "not_after": c.certificate.not_valid_after_utc.isoformat(), "fingerprint": c.fingerprint}

    # -- HTTP --------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = Request(environ, populate_request=False)
        request.max_content_length = MAX_BODY
        try:
            response = self.dispatch(request)
        except Refused as exc:
            response = self.error(request, exc)
        return response(environ, start_response)

    def _cors(self, request: Request, response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin in self.allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def error(self, request: Request, exc: Refused) -> Response:
        body = {"error": exc.error, "detail": exc.detail, **exc.extra}
        response = Response(json.dumps(body, ensure_ascii=False), exc.status, mimetype="application/json")
        return self._cors(request, response)

    def dispatch(self, request: Request) -> Response:
        origin = request.headers.get("Origin")
        where = f"{request.method} {request.path}"
        if request.host not in self.hosts:
            log.warning("refused %s: Host %r is not this agent (DNS rebinding?)", where, request.host[:80])
            raise Refused(403, "bad_host", "requests must be addressed to 127.0.0.1")
        confirming = _CONFIRM_PATH.match(request.path)
        if confirming:
            return self.confirmation(request, confirming.group(1))
        if origin is None or origin not in self.allowed:
            log.warning("refused %s from origin %r: not on the allow-list", where, (origin or "(none)")[:120])
            raise Refused(403, "origin_not_allowed", "this page's origin may not use the USB key")
        if request.method == "OPTIONS":
            return self.preflight(request)
        if request.path == "/v1/status" and request.method == "GET":
            body = {"version": VERSION, "certificates": [self._status_entry(c) for c in self.identities()]}
            return self._json(request, body)
        if request.path == "/v1/sign":
            if request.method != "POST":
                raise Refused(405, "method_not_allowed", "use POST")
            return self.sign_request(request, origin)
        asked = _REQUEST_PATH.match(request.path)
        if asked:
            if request.method != "GET":
                raise Refused(405, "method_not_allowed", "use GET")
            return self.outcome(request, asked.group(1), origin)
        raise Refused(404, "not_found", "unknown endpoint")

    def _json(self, request: Request, body: dict, status: int = 200) -> Response:
        return self._cors(request, Response(json.dumps(body, ensure_ascii=False), status, mimetype="application/json"))

    def preflight(self, request: Request) -> Response:
        if request.path not in ("/v1/sign", "/v1/status") and not _REQUEST_PATH.match(request.path):
            raise Refused(404, "not_found", "unknown endpoint")
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Allow-Private-Network"] = "true"
        response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
        return self._cors(request, response)

    # -- asking: a pending request -----------------------------------------------------

    def sign_request(self, request: Request, origin: str) -> Response:
        if request.mimetype != "application/json":
            raise Refused(415, "bad_content_type", "send the request as application/json")
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise Refused(413, "too_large", f"requests are limited to {MAX_BODY} bytes")
        try:
            body = json.loads(request.get_data(cache=False))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Refused(400, "bad_request", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "bad_request", "the body must be a JSON object")
        purpose = body.get("purpose")
        if purpose not in ("login", "document"):
            raise Refused(400, "bad_request", "purpose must be 'login' or 'document'")
        wanted = body.get("certificate")
        if wanted is not None and (not isinstance(wanted, str) or not re.fullmatch(r"[0-9a-fA-F]{2,128}", wanted)):
            raise Refused(400, "bad_request", "certificate must be the id of a certificate from /v1/status")
        try:
            data = b64url_decode(body.get("data"))
        except (ValueError, binascii.Error):
            raise Refused(400, "bad_request", "data must be base64url") from None
        if not data or len(data) > MAX_DATA:
            raise Refused(400, "bad_request", f"data must be 1 to {MAX_DATA} bytes")
        name, pages = _document_facts(body)
        digest = hashlib.sha256(data).hexdigest()
        try:
            if purpose == "login":
                check_login_challenge(data, origin)
                covered = digest
            else:
                covered = check_signed_attributes(data).hex()
        except Refused as exc:
            log.warning("refused to sign %s data sha256=%s for origin %s: %s", purpose, digest, origin, exc.detail)
            raise
        chosen = self.choose(purpose, wanted)
        try:
            pending = self.approvals.create(
                origin=origin,
                purpose=purpose,
                data=data,
                certificate_id=chosen.id,
                certificate_subject=chosen.subject,
                document_name=name,
                document_pages=pages,
                digest=covered,
            )
        except approval.Unavailable as exc:
            raise Refused(exc.status, exc.error, exc.detail) from None
        base = f"http://{request.host}"
        confirm_url = f"{base}/confirm/{pending.id}"
        log.info(
            "origin %s asks to sign %s%s with %s (data sha256=%s); waiting for the holder's confirmation at %s",
            origin,
            purpose,
            f" {name!r}" if purpose == "document" else "",
            chosen.subject,
            digest,
            confirm_url,
        )
        answer = {
            "request": pending.id,
            "status": "pending",
            "confirm_url": confirm_url,
            "result_url": f"{base}/v1/sign/{pending.id}",
            "expires_in": pending.seconds_left(pending.created),
        }
        return self._json(request, answer, 202)

    def outcome(self, request: Request, request_id: str, origin: str) -> Response:
        """The outcome for the page that asked: pending (202), the signature once (200), denied (403), gone (410)."""
        try:
            wait = float(request.args.get("wait", "0"))
        except ValueError:
            raise Refused(400, "bad_request", "wait must be a number of seconds") from None
        if not 0 <= wait <= approval.MAX_WAIT:
            wait = approval.MAX_WAIT if wait > 0 else 0
        try:
            found = self.approvals.collect(request_id, origin, wait=wait)
        except approval.Unavailable as exc:
            raise Refused(exc.status, exc.error, exc.detail) from None
        if found.state in ("pending", "signing"):
            return self._json(request, {"status": "pending", "expires_in": found.seconds_left(self.approvals.clock())}, 202)
        if found.state == "denied":
            raise Refused(403, "denied", "the holder denied this signing request; nothing was signed")
        if found.state == "failed":
            status, error, detail = found.error
            raise Refused(status, error, detail)
        return self._json(request, {"status": "signed", **found.answer})

    def _sign_approved(self, pending: approval.SigningRequest) -> dict:
        if pending.purpose == "login":
            check_login_challenge(pending.data, pending.origin)  # it may have run out while the holder read
        signature = self.sign(pending.purpose, pending.data, pending.certificate_id)
        digest = hashlib.sha256(pending.data).hexdigest()
        if pending.purpose == "login":
            log.info(
                "signed login challenge for origin %s with %s, confirmed by the holder; data sha256=%s",
                pending.origin,
                signature.certificate.subject,
                digest,
            )
        else:
            log.info(
                "signed document %r for origin %s with %s, confirmed by the holder; signed attributes sha256=%s",
                pending.document_name,
                pending.origin,
                signature.certificate.subject,
                digest,
            )
        return {
            "signature": b64url(signature.value),
            "algorithm": signature.algorithm,
            "certificate": _b64(signature.certificate.der),
            "chain": [_b64(c.public_bytes(Encoding.DER)) for c in signature.chain],
        }

    # -- confirming: the agent's own page ----------------------------------------------

    def _page(self, rendered: tuple[str, int, str]) -> Response:
        text, status, nonce = rendered
        response = Response(text, status, mimetype="text/html")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Not no-referrer: with it a browser sends "Origin: null" on the page's own form post.
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def confirmation(self, request: Request, request_id: str) -> Response:
        """GET: the request's page. POST (from that page only): the holder's decision. No CORS headers, ever."""
        if request.method == "GET":
            dest = request.headers.get("Sec-Fetch-Dest")
            if dest is not None and dest != "document":
                log.warning("refused the confirmation page of %s as %r (framed or fetched by a page?)", request_id[:8], dest[:20])
                return self._page(confirm_page.message_page(403, *REFUSALS["not_a_window"]))
            try:
                found = self.approvals.view(request_id)
            except approval.Unavailable:
                return self._page(confirm_page.message_page(404, *REFUSALS["no_such_request"]))
            return self._page(confirm_page.request_page(found, self.approvals.clock()))
        if request.method != "POST":
            return self._page(confirm_page.message_page(405, *REFUSALS["method"]))
        own = f"http://{request.host}"
        origin, site = request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site")
        if origin != own or (site is not None and site != "same-origin"):
            log.warning(
                "refused a confirmation of %s from origin %r (Sec-Fetch-Site %r): not the agent's own page",
                request_id[:8],
                (origin or "(none)")[:120],
                (site or "(none)")[:20],
            )
            return self._page(confirm_page.message_page(403, *REFUSALS["foreign_page"]))
        if request.mimetype != "application/x-www-form-urlencoded":
            return self._page(confirm_page.message_page(415, *REFUSALS["foreign_page"]))
        decision = request.form.get("decision")
        if decision not in ("approve", "deny"):
            return self._page(confirm_page.message_page(400, *REFUSALS["no_decision"]))
        try:
            decided = self.approvals.decide(request_id, request.form.get("csrf_token", ""), decision == "approve", self._sign_approved)
        except approval.Unavailable as exc:
            log.warning("refused a confirmation of %s: %s", request_id[:8], exc.detail)
            return self._page(confirm_page.message_page(exc.status, *REFUSALS.get(exc.error, REFUSALS["no_such_request"])))
        if decided.state == "denied":
            log.info("the holder denied %s's request to sign %s; nothing signed", decided.origin, decided.purpose)
        elif decided.state == "failed":
            log.warning("the holder confirmed %s's request to sign %s, but: %s", decided.origin, decided.purpose, decided.error[2])
        response = Response(status=303)
        response.headers["Location"] = f"/confirm/{request_id}"
        response.headers["Cache-Control"] = "no-store"
        return response


REFUSALS = {
    "no_such_request": (
        "没有这个签名请求（可能已过期）。请回到网站重新发起。",
        "No such signing request (it may have expired). Ask again from the site.",
    ),
    "bad_csrf_token": (
        "这次确认不是从此请求的页面发出的，没有签名。",
        "This confirmation did not come from this request's page; nothing was signed.",
    ),
    "foreign_page": (
        "只能在 hallmark-key 自己的确认页面上确认，没有签名。",
        "Only hallmark-key's own confirmation page can confirm; nothing was signed.",
    ),
    "already_decided": ("此签名请求已经处理过了。", "This signing request was decided already."),
    "expired": (
        "此签名请求已过期，没有签名。请回到网站重新发起。",
        "This signing request has expired; nothing was signed. Ask again from the site.",
    ),
    "not_a_window": ("确认页面只能在浏览器窗口中单独打开。", "The confirmation page opens only in a browser window of its own."),
    "no_decision": ("请选择“确认签名”或“拒绝”。", "Choose Sign or Deny."),
    "method": ("不支持此操作。", "Not supported."),
}


def _document_facts(body: dict) -> tuple[str, int | None]:
    """The document's name and page count as the site states them (shown to the holder as such)."""
    facts = body.get("document")
    if facts is None:
        facts = {}
    if not isinstance(facts, dict):
        raise Refused(400, "bad_request", 'document must be an object: {"name": text, "pages": number}')
    name = facts.get("name", body.get("description")) or ""
    if not isinstance(name, str):
        raise Refused(400, "bad_request", "document name (or description) must be text")
    pages = facts.get("pages")
    if pages is not None and (isinstance(pages, bool) or not isinstance(pages, int) or not 1 <= pages <= MAX_PAGES):
        raise Refused(400, "bad_request", "document pages must be a whole number of pages")
    return confirm_page.clean(_CONTROL.sub(" ", name))[:MAX_DESCRIPTION], pages


def serve(agent: Agent, host: str = "127.0.0.1", on_ready=None) -> None:
    """Serve until interrupted, one thread per connection (signatures queue in the token's session pool)."""
    from werkzeug.serving import make_server

    if host not in ("127.0.0.1", "::1"):
        raise ValueError("the agent listens on the loopback interface only")
    server = make_server(host, agent.port, agent, threaded=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # our own log lines say what matters
    if on_ready:
        on_ready(server)
    try:
        server.serve_forever()
    finally:
        server.server_close()
