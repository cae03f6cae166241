"""An approval system for one matter, 食品经营许可 (a food business licence), built on Hallmark's public interfaces only.

It is a relying party like the halls of ``examples/hall``, and uses nothing but
OpenID Connect and Hallmark's documented JSON APIs (docs/approval-systems.md walks
through it). One case goes:

1. **Login** (``/login``): authorization code + PKCE with ``matter=<code>``; Hallmark's
   matter catalogue decides the level (level 3 here: the enterprise's USB key), and
   the ID token's ``acr`` is checked against the catalogue again on the way back.
2. **Licence consent** (same request): an RFC 9396 ``authorization_details`` entry asks
   the applicant to let this system *compare* their business licence for this matter;
   ``/apply`` compares the values the applicant claims (``/api/licences/compare``)
   and never reads the licence itself.
3. **Signed application form**: the page has the applicant's ``hallmark-key`` agent sign
   the form (Hallmark's remote signing: ``/api/sign/remote``, then ``.../finish``); the
   signed PDF is accepted only when ``/api/validate`` passes it and names the applicant.
4. **Fee notice**: sealed with the department's seal (``/api/sign/pdf``) and handed to the
   payment service (``payment.py``), which checks seal and amount before it takes payment.
5. **Kiosk** (``/kiosk``): the device authorization grant logs the applicant in at the
   counter; the counter camera's photo is hashed in the browser and its digest kept on the case.
6. **Approval** (``/officer``): an officer logged in at level 3 approves; the system asks
   Hallmark to issue the licence (``/api/licences/issue``) and can suspend it later.
7. **Verification** (``/verify``, on any instance): a licence is checked by comparison under
   a standing grant; status events (RFC 8417 SETs pushed per RFC 8935) arrive at ``/events``
   and are verified against ``/api/licences/jwks``.

Configuration (``examples/run.py`` sets it): APPROVAL_CLIENT_ID, APPROVAL_CLIENT_SECRET,
APPROVAL_PORT, APPROVAL_IDP, APPROVAL_NAME, APPROVAL_MATTER, APPROVAL_ISSUER (the
department's credit code: its seal, and the licences it issues), APPROVAL_OFFICERS
(usernames who may approve), APPROVAL_PAYMENT (the payment service's address) and
APPROVAL_AGENT (the hallmark-key agent the browser talks to); APPROVAL_HOST, APPROVAL_BASE
and APPROVAL_EVENTS_URL where it listens, where browsers and where Hallmark's events reach it
(127.0.0.1 by default; docker/compose.yaml sets them). Cases live in memory.
"""

from __future__ import annotations

import base64
import html
import json
import os
import secrets
import string
import threading
import time
from datetime import UTC, datetime

import requests
from authlib.integrations.flask_client import OAuth, OAuthError
from flask import Flask, abort, redirect, request, session, url_for
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

BUSINESS_LICENCE = "11100000000013952E001"  # 营业执照: compared, never read
FOOD_PERMIT = "11100000000013952E002"  # 食品经营许可证: what this matter issues
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
FEE = "300.00"  # yuan; the amount the fee notice states and the payment service must find under the seal


def acr_of(level: int) -> str:
    return f"urn:hallmark:loa:{level}"


def level_of(acr: str | None) -> int:
    try:
        return int(str(acr).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


def simple_pdf(title: str, lines: list[str], info: str = "") -> bytes:
    """A one-page PDF (ASCII text in Helvetica; the Chinese title in the document information as UTF-16, and ``info``'s
    entries beside it)."""
    safe = [line.encode("ascii", "replace").decode().translate(str.maketrans("()\\", "[]/")) for line in lines]  # no escapes needed
    text = "BT /F1 12 Tf 60 760 Td 16 TL " + " ".join(f"({line}) '" for line in safe) + " ET"
    title_hex = (b"\xfe\xff" + title.encode("utf-16-be")).hex().upper()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text.encode("ascii")),
        f"<< /Title <{title_hex}> /Producer (examples/approval) {info} >>".encode(),
    ]
    out, offsets = bytearray(b"%PDF-1.7\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


class Hallmark:
    """Hallmark's APIs with this system's own (client credentials) tokens, one per API (RFC 8707 audience)."""

    def __init__(self, idp: str, client_id: str, client_secret: str):
        self.idp, self.client_id, self.auth = idp.rstrip("/"), client_id, (client_id, client_secret)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.meta = None

    def metadata(self) -> dict:
        if self.meta is None:
            self.meta = requests.get(self.idp + "/.well-known/openid-configuration", timeout=10).json()
        return self.meta

    def token(self, scope: str, resource: str) -> str:
        with self._lock:
            token, until = self._tokens.get(scope, ("", 0.0))
            if time.time() < until - 30:
                return token
        answer = requests.post(
            self.metadata()["token_endpoint"],
            data={"grant_type": "client_credentials", "scope": scope, "resource": self.idp + resource},
            auth=self.auth,
            timeout=10,
        )
        answer.raise_for_status()
        body = answer.json()
        with self._lock:
            self._tokens[scope] = (body["access_token"], time.time() + body.get("expires_in", 300))
        return body["access_token"]

    def call(
        self, method: str, path: str, *, scope: str = "", resource: str = "", bearer: str | None = None, **kwargs
    ) -> requests.Response:
        """Call an API with this system's token for ``scope`` at ``resource``, or with a person's ``bearer`` token."""
        headers = {"Authorization": "Bearer " + (bearer or self.token(scope, resource)), **kwargs.pop("headers", {})}
        return requests.request(method, self.idp + path, headers=headers, timeout=60, **kwargs)

    def matter(self, code: str) -> dict:
        answer = requests.get(f"{self.idp}/api/idp/matters/{code}", timeout=10)
        answer.raise_for_status()
        return answer.json()

    def validate(self, pdf: bytes) -> requests.Response:
        """Hallmark's validation report of a signed PDF (``/api/validate``): 200 with the report, or a problem (not a PDF, ...)."""
        return self.call(
            "POST", "/api/validate", scope="sign:validate", resource="/api/sign", data=pdf, headers={"Content-Type": "application/pdf"}
        )


def problem(answer: requests.Response) -> str:
    try:
        body = answer.json()
        return f"{answer.status_code} {body.get('code') or body.get('error') or ''}: {body.get('detail') or body.get('error_description') or ''}"
    except ValueError:
        return f"{answer.status_code}"


def create_app(
    *,
    client_id: str,
    client_secret: str,
    name: str,
    base: str,
    idp: str,
    matter: str,
    issuer: str,
    officers: tuple[str, ...] = (),
    payment: str | None = None,
    agent: str | None = None,
    events_url: str | None = None,
) -> Flask:
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)
    app.config.update(SESSION_COOKIE_NAME=f"approval_{client_id}", SESSION_COOKIE_SAMESITE="Lax")
    hallmark = Hallmark(idp, client_id, client_secret)
    cases: dict[str, dict] = {}  # case id -> the case (in memory: an example)
    logins: dict[str, dict] = {}  # server-side sessions: access tokens never go into the cookie
    kiosks: dict[str, dict] = {}  # device-grant logins under way at the counter
    events: list[dict] = []  # status events received and verified
    seen_jti: set[str] = set()
    watched: dict[str, dict] = {}  # licences this system verified
    app.extensions["approval"] = {"cases": cases, "events": events, "watched": watched, "hallmark": hallmark}
    oauth = OAuth(app)
    oauth.register(
        "hallmark",
        client_id=client_id,
        client_secret=client_secret,
        server_metadata_url=idp.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile licences:read", "code_challenge_method": "S256"},
    )
    purpose = "核验申请人营业执照（食品经营许可）"

    def user() -> dict | None:
        return logins.get(session.get("login", ""))

    def need_user(level: int | None = None) -> dict:
        who = user()
        if who is None or (level and level_of(who["acr"]) < level):
            abort(redirect(url_for("home")))
        return who

    def case_of(case_id: str, who: dict) -> dict:
        case = cases.get(case_id)
        if case is None or (case["applicant_sub"] != who["sub"] and who["username"] not in officers):
            abort(404)
        return case

    def matter_info() -> dict:
        try:
            return hallmark.matter(matter)
        except (requests.RequestException, ValueError):
            return {"code": matter, "name": matter, "level": 3}

    @app.errorhandler(requests.RequestException)
    def unreachable(exc):
        app.logger.warning("a service did not answer: %s", exc)
        return page(
            "暂时无法办理 Unavailable",
            "<p>统一身份认证平台或缴费平台暂时无法访问，请稍后再试。 A service did not answer; try again later.</p>",
        ), 502

    # -- 1 and 2: login at the catalogue's level, with the consent to compare the business licence -------------

    @app.get("/login")
    def login():
        officer = request.args.get("as") == "officer"
        session["officer"] = officer
        if officer:  # an officer approves at level 3, whatever the matter asks of applicants
            return oauth.hallmark.authorize_redirect(base + "/callback", acr_values=acr_of(3), scope="openid profile")
        detail = {
            "type": "hallmark_licence",
            "datatypes": [BUSINESS_LICENCE],
            "actions": ["compare"],
            "matter": matter,
            "purpose": purpose,
            "duration": 3600,
        }
        # matter=...: Hallmark raises the level to what its catalogue says this matter needs; we cannot lower it.
        return oauth.hallmark.authorize_redirect(base + "/callback", matter=matter, authorization_details=json.dumps([detail]))

    @app.get("/callback")
    def callback():
        if request.args.get("error"):
            session["notice"] = f"{request.args['error']}: {request.args.get('error_description', '')}"
            return redirect(url_for("home"))
        try:
            token = oauth.hallmark.authorize_access_token()
        except OAuthError as exc:
            session["notice"] = f"{exc.error}: {exc.description or ''}"
            return redirect(url_for("home"))
        claims = token["userinfo"]  # the ID token, checked by Authlib (signature, issuer, audience, nonce)
        needed = 3 if session.get("officer") else matter_info()["level"]
        if level_of(claims.get("acr")) < needed:  # never trust that the request was not tampered with on its way
            session["notice"] = f"level {claims.get('acr')} is below the {needed} this matter needs"
            return redirect(url_for("home"))
        info = oauth.hallmark.userinfo(token=token)
        handle = secrets.token_urlsafe(24)
        logins[handle] = {
            "sub": claims["sub"],
            "acr": claims.get("acr"),
            "name": info.get("name") or claims["sub"][:8],
            "username": info.get("preferred_username") or "",
            "org_id": claims.get("org_id"),  # acting for an enterprise: its credit code
            "org_name": claims.get("org_name"),
            "access_token": token["access_token"],
        }
        session["login"] = handle
        return redirect(url_for("officer_page" if session.get("officer") else "home"))

    @app.post("/logout")
    def logout():
        logins.pop(session.pop("login", ""), None)
        return redirect(url_for("home"))

    @app.post("/apply")
    def apply():
        """Step 2: compare what the applicant claims with their business licence; nothing of it is read."""
        who = need_user(matter_info()["level"])
        if not who["org_id"]:
            session["notice"] = "食品经营许可由企业申请：请以企业身份登录 Apply for an enterprise (log in acting for it)"
            return redirect(url_for("home"))
        claims = {
            "name": request.form.get("name", "").strip(),
            "legal_representative": request.form.get("legal_representative", "").strip(),
        }
        answer = hallmark.call(
            "POST",
            "/api/licences/compare",
            bearer=who["access_token"],  # the holder's consent travels in this token
            json={"type": BUSINESS_LICENCE, "claims": claims, "purpose": purpose, "matter": matter},
        )
        if answer.status_code != 200:
            session["notice"] = "营业执照核验失败 Business licence check failed: " + problem(answer)
            return redirect(url_for("home"))
        result = answer.json()
        if not result["all_match"] or not result["status"].get("usable", True):
            session["notice"] = "营业执照信息不符 The business licence does not match: " + json.dumps(result["fields"], ensure_ascii=False)
            return redirect(url_for("home"))
        case_id = "SP" + datetime.now(UTC).strftime("%Y%m%d") + secrets.token_hex(3).upper()
        cases[case_id] = {
            "id": case_id,
            "applicant_sub": who["sub"],
            "enterprise": who["org_name"],
            "credit_code": who["org_id"],
            "claims": {**claims, "premises": request.form.get("premises", "").strip()},
            "compared": {"fields": result["fields"], "receipt": result.get("receipt")},
            "state": "compared",
            "log": [("营业执照比对一致 business licence matches", time.time())],
        }
        return redirect(url_for("case_page", case_id=case_id))

    # -- 3: the application form, signed with the enterprise's USB key through hallmark-key ------------------

    def form_pdf(case: dict) -> bytes:
        return simple_pdf(
            f"食品经营许可申请书 {case['id']}",
            [
                "Application for a food business licence",
                f"Case {case['id']}",
                f"Applicant credit code {case['credit_code']}",
                f"Premises {case['claims']['premises']}",
                "The applicant declares that the information given is true.",
            ],
        )

    @app.post("/case/<case_id>/sign/prepare")
    def sign_prepare(case_id):
        """The browser sends the fingerprints its hallmark-key agent holds; we find the certificate and prepare."""
        case = case_of(case_id, need_user())
        fingerprints = {str(f).lower().replace(":", "") for f in (request.get_json(silent=True) or {}).get("fingerprints", [])}
        listed = hallmark.call(
            "GET",
            "/api/ca/certificates",
            scope="ca:read",
            resource="/api/ca",
            params={"subject_id": case["credit_code"], "profile": "enterprise-sign", "status": "valid"},
        )
        listed.raise_for_status()
        serial = next((c["serial"] for c in listed.json()["certificates"] if c["fingerprint_sha256"].lower() in fingerprints), None)
        if serial is None:
            return {"detail": "这把USB Key上没有本企业的签名证书 No signing certificate of this enterprise on the key"}, 409
        pem = hallmark.call("GET", f"/api/ca/certificates/{serial}", scope="ca:read", resource="/api/ca").json()["certificate"]
        der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
        prepared = hallmark.call(
            "POST",
            "/api/sign/remote",
            scope="sign:remote",
            resource="/api/sign",
            json={
                "pdf": base64.b64encode(form_pdf(case)).decode(),
                "certificate": base64.b64encode(der).decode(),
                "expected_identifier": case["credit_code"],  # Hallmark refuses another signer's certificate
                "reason": f"申请食品经营许可 {case['id']}",
            },
        )
        if prepared.status_code != 201:
            return {"detail": problem(prepared)}, 409
        body = prepared.json()
        case["signing_session"] = body["session"]
        return {"to_sign": body["to_sign"], "document": {"name": f"食品经营许可申请书 {case['id']}", "pages": 1}}

    @app.post("/case/<case_id>/sign/finish")
    def sign_finish(case_id):
        case = case_of(case_id, need_user())
        signature = str((request.get_json(silent=True) or {}).get("signature", ""))
        if not signature or signature.strip(string.ascii_letters + string.digits + "-_") or len(signature) % 4 == 1:
            return {"detail": "signature is not base64url"}, 400
        # the agent answers base64url; the finish call takes base64
        signature = base64.b64encode(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))).decode()
        finished = hallmark.call(
            "POST",
            f"/api/sign/remote/{case.get('signing_session', 'none')}/finish",
            scope="sign:remote",
            resource="/api/sign",
            json={"signature": signature},
        )
        if finished.status_code != 200:
            return {"detail": problem(finished)}, 409
        return accept_signed_form(case, base64.b64decode(finished.json()["pdf"]))

    def accept_signed_form(case: dict, pdf: bytes):
        """Accept a signed form only when Hallmark's validation passes it and names the applicant as the signer."""
        answer = hallmark.validate(pdf)
        if answer.status_code != 200:
            return {"detail": "无法验证 cannot be validated: " + problem(answer)}, 422
        report = answer.json()
        signature = (report.get("signatures") or [{}])[0]
        signer = (signature.get("signer") or {}).get("identifier") or {}
        if report.get("indication") != "TOTAL_PASSED" or signer.get("value") != case["credit_code"]:
            return {"detail": f"签名未通过验证 not accepted: {report.get('indication')} {signature.get('sub_indication') or ''}"}, 422
        case.update(signed_form=pdf, state="signed", signed_report={"indication": report["indication"], "signer": signer.get("masked")})
        case["log"].append(("申请书签名验证通过 signed form validated", time.time()))
        return {"state": "signed"}

    @app.post("/case/<case_id>/form")
    def upload_signed_form(case_id):
        """A form signed elsewhere (hallmark-key sign-pdf / sign-remote) is accepted on the same condition."""
        case = case_of(case_id, need_user())
        answer = accept_signed_form(case, request.get_data())
        return answer

    @app.get("/case/<case_id>/form.pdf")
    def form_download(case_id):
        case = case_of(case_id, need_user())
        return case.get("signed_form") or form_pdf(case), 200, {"Content-Type": "application/pdf"}

    # -- 4: the fee notice, sealed, and the payment service ---------------------------------------------------

    @app.post("/case/<case_id>/pay")
    def pay(case_id):
        case = case_of(case_id, need_user())
        if case["state"] != "signed" or not payment:
            abort(409)
        notice = simple_pdf(
            f"缴费通知书 {case['id']}",
            ["Fee notice", f"Case {case['id']}", f"Payer {case['credit_code']}", f"Amount CNY {FEE}"],
            info=f"/HallmarkFee ({case['id']} {FEE})",  # what the payment service reads, under the seal
        )
        sealed = hallmark.call(
            "POST",
            "/api/sign/pdf",
            scope="sign:seal",
            resource="/api/sign",
            params={"reason": f"缴费通知 {case['id']}"},  # our one department's seal (the grant says which)
            data=notice,
            headers={"Content-Type": "application/pdf"},
        )
        if sealed.status_code != 200:
            session["notice"] = "盖章失败 sealing failed: " + problem(sealed)
            return redirect(url_for("case_page", case_id=case_id))
        case["fee_notice"] = sealed.content
        paid = requests.post(
            payment + "/payments",
            json={"case": case["id"], "amount": FEE, "notice": base64.b64encode(sealed.content).decode()},
            timeout=60,
        )
        if paid.status_code == 201:
            case.update(state="paid", payment=paid.json())
            case["log"].append((f"已缴费 paid CNY {FEE} ({paid.json()['payment']})", time.time()))
        else:
            session["notice"] = "缴费未成功 payment refused: " + paid.text[:300]
        return redirect(url_for("case_page", case_id=case_id))

    @app.get("/case/<case_id>/fee.pdf")
    def fee_download(case_id):
        case = case_of(case_id, need_user())
        return case.get("fee_notice") or abort(404), 200, {"Content-Type": "application/pdf"}

    # -- 5: the counter kiosk: device authorization grant, and the camera photo's digest ----------------------

    @app.post("/kiosk/start")
    def kiosk_start():
        answer = requests.post(
            hallmark.metadata()["device_authorization_endpoint"], data={"scope": "openid profile"}, auth=hallmark.auth, timeout=10
        )
        answer.raise_for_status()
        handle = secrets.token_urlsafe(16)
        kiosks[handle] = {**answer.json(), "started": time.time()}
        return {
            "kiosk": handle,
            **{k: answer.json()[k] for k in ("user_code", "verification_uri", "verification_uri_complete", "interval")},
        }

    @app.get("/kiosk/<handle>")
    def kiosk_poll(handle):
        kiosk = kiosks.get(handle) or abort(404)
        if "person" not in kiosk:
            answer = requests.post(
                hallmark.metadata()["token_endpoint"],
                data={"grant_type": DEVICE_GRANT, "device_code": kiosk["device_code"]},
                auth=hallmark.auth,
                timeout=10,
            )
            if answer.status_code != 200:
                return {"status": answer.json().get("error", "error")}, 202 if answer.status_code == 400 else 502
            token = answer.json()
            info = requests.get(
                hallmark.metadata()["userinfo_endpoint"], headers={"Authorization": "Bearer " + token["access_token"]}, timeout=10
            )
            kiosk["person"] = {**info.json(), "acr": info.json().get("acr")}
        person = kiosk["person"]
        mine = [c["id"] for c in cases.values() if c["applicant_sub"] == person["sub"] and c["state"] in ("paid", "photo")]
        return {"status": "logged_in", "name": person.get("name"), "cases": mine}

    @app.post("/kiosk/<handle>/photo")
    def kiosk_photo(handle):
        kiosk = kiosks.get(handle) or abort(404)
        person, body = kiosk.get("person") or abort(409), request.get_json(silent=True) or {}
        case = cases.get(body.get("case", "")) or abort(404)
        digest = str(body.get("sha256", ""))
        if case["applicant_sub"] != person["sub"] or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            abort(422)
        case.update(state="photo", photo={"sha256": digest, "at": time.time(), "acr": person.get("acr")})
        case["log"].append((f"窗口拍照 counter photo sha256 {digest[:16]}…", time.time()))
        kiosks.pop(handle, None)  # one person, one photo: the kiosk is free again
        return {"state": "photo"}

    @app.get("/kiosk")
    def kiosk_page():
        return page("自助终端 Counter kiosk", KIOSK_HTML.replace("__IDP__", html.escape(idp)))

    # -- 6: an officer approves at level 3; Hallmark issues (and later suspends) the licence -------------------

    @app.get("/officer")
    def officer_page():
        who = user()
        if who is None or level_of(who["acr"]) < 3 or who["username"] not in officers:
            return page(
                "审批 Approval",
                '<p>请以审批人员身份登录（数字证书） Officers log in at level 3:</p><a class="btn" id="officer-login" href="/login?as=officer">审批登录 Officer login</a>',
            )
        rows = "".join(
            f'<li><a href="/case/{e(c["id"])}">{e(c["id"])}</a> {e(c["enterprise"] or "")} · <span class="state">{e(c["state"])}</span>'
            + (
                f'<form method="post" action="/case/{e(c["id"])}/approve"><button id="approve-{e(c["id"])}">批准并发证 Approve</button></form>'
                if c["state"] == "photo"
                else ""
            )
            + (
                f'<form method="post" action="/case/{e(c["id"])}/suspend"><button id="suspend-{e(c["id"])}">暂扣 Suspend</button></form>'
                if c["state"] == "approved"
                else ""
            )
            + "</li>"
            for c in cases.values()
        )
        return page("审批 Approval", f"<p>审批人员 Officer: {e(who['name'])}</p><ul>{rows or '<li>无待办 nothing waiting</li>'}</ul>")

    def officer() -> dict:
        who = user()
        if who is None or level_of(who["acr"]) < 3 or who["username"] not in officers:
            abort(403)
        return who

    @app.post("/case/<case_id>/approve")
    def approve(case_id):
        who = officer()
        case = cases.get(case_id) or abort(404)
        if case["state"] != "photo":
            abort(409)
        face = {
            "permit_number": "JY1" + "".join(secrets.choice("0123456789") for _ in range(13)),
            "operator": case["enterprise"],
            "credit_code": case["credit_code"],
            "legal_representative": case["claims"]["legal_representative"],
            "premises": case["claims"]["premises"],
            "main_business": "食品销售经营者",
            "business_items": "预包装食品销售（含冷藏冷冻食品）",
        }
        issued = hallmark.call(
            "POST",
            "/api/licences/issue",
            scope="licences:issue",
            resource="/api/licences",
            json={"type": FOOD_PERMIT, "issuer": issuer, "holder": case["credit_code"], "face": face, "request_id": case["id"]},
        )
        if issued.status_code not in (200, 201):
            session["notice"] = "发证失败 issuing failed: " + problem(issued)
            return redirect(url_for("officer_page"))
        case.update(state="approved", licence=issued.json()["licence"]["identifier"], approved_by=who["name"])
        case["log"].append((f"准予许可，已发证 approved, licence {case['licence']}", time.time()))
        return redirect(url_for("officer_page"))

    @app.post("/case/<case_id>/suspend")
    def suspend(case_id):
        officer()
        case = cases.get(case_id) or abort(404)
        answer = hallmark.call(
            "POST",
            f"/api/licences/{case.get('licence', 'none')}/suspend",
            scope="licences:issue",
            resource="/api/licences",
            json={"reason": "现场检查不合格"},
        )
        if answer.status_code == 200:
            case["state"] = "suspended"
            case["log"].append(("许可证已暂扣 licence suspended", time.time()))
        else:
            session["notice"] = "暂扣失败 suspension failed: " + problem(answer)
        return redirect(url_for("officer_page"))

    # -- 7: verifying a licence by comparison, and the status events that follow it -------------------------

    def subscribe() -> None:
        """Subscribe once to the licences this system has looked at (``accessed``): their changes are pushed to /events."""
        if app.extensions["approval"].get("subscribed"):
            return
        answer = hallmark.call(
            "POST",
            "/api/licences/subscriptions",
            scope="licences:read",
            resource="/api/licences",
            json={"endpoint": events_url or base + "/events", "types": [], "accessed": True},
        )
        answer.raise_for_status()
        app.extensions["approval"]["subscribed"] = answer.json()["id"]

    @app.route("/verify", methods=["GET", "POST"])
    def verify():
        result = ""
        if request.method == "POST":
            identifier = request.form.get("identifier", "").strip()
            subscribe()
            answer = hallmark.call(
                "POST",
                "/api/licences/compare",
                scope="licences:read",
                resource="/api/licences",
                json={
                    "identifier": identifier,
                    "claims": {"operator": request.form.get("operator", "").strip()},
                    "purpose": "核验食品经营许可证",
                    "matter": matter,
                },
            )
            if answer.status_code == 200:
                body = answer.json()
                watched[identifier] = {"all_match": body["all_match"], "state": body["status"]["state"]}
                verdict = "一致 matches" if body["all_match"] else "不一致 does not match"
                result = f'<p id="verdict" data-match="{str(body["all_match"]).lower()}">{verdict}; 状态 state: <b>{e(body["status"]["state"])}</b></p>'
            else:
                result = f'<p class="warn" id="verdict">{e(problem(answer))}</p>'
        seen = "".join(
            f'<li class="event" data-event="{e(ev["event"])}">{e(ev["identifier"])}: {e(ev["previous_state"] or "")} → <b>{e(ev["state"])}</b></li>'
            for ev in events
        )
        form = (
            '<form method="post"><label>证照标识 Identifier <input name="identifier" id="identifier" required size="60"></label>'
            '<label>经营者名称 Operator <input name="operator" id="operator" required></label><button id="check">核验 Verify</button></form>'
        )
        return page(
            "证照核验 Verify a licence",
            form + result + f'<h2>状态事件 Status events</h2><ul id="events">{seen or "<li>（暂无 none yet）</li>"}</ul>',
        )

    @app.post("/events")
    def receive_event():
        """RFC 8935 push: verify the SET (RFC 8417) against the licence library's key; 202, or 400 with an error object."""
        try:
            keys = KeySet.import_key_set(requests.get(idp.rstrip("/") + "/api/licences/jwks", timeout=10).json())
            token = jwt.decode(request.get_data(as_text=True), keys, algorithms=["ES256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": hallmark.metadata()["issuer"]},
                aud={"essential": True, "value": client_id},
                jti={"essential": True},
            ).validate(token.claims)
            if token.header.get("typ") != "secevent+jwt" or not isinstance(token.claims.get("events"), dict):
                raise ValueError("not a security event token")
        except (JoseError, ValueError, requests.RequestException) as exc:
            return {"err": "invalid_request", "description": str(exc)[:200]}, 400
        if token.claims["jti"] not in seen_jti:  # at least once: a resend is the same SET
            seen_jti.add(token.claims["jti"])
            for uri, event in token.claims["events"].items():
                events.append({"event": uri.rsplit("/", 1)[-1], **{k: event.get(k) for k in ("identifier", "state", "previous_state")}})
        return "", 202

    # -- pages ----------------------------------------------------------------------------------------------

    @app.get("/")
    def home():
        who, info = user(), matter_info()
        notice = session.pop("notice", None)
        body = f'<p>事项 Matter: <b id="matter">{e(info["name"])}</b> · 需要级别 level <span id="matter-level">L{e(info["level"])}</span>（由统一身份认证平台事项目录决定 set by Hallmark\'s catalogue）</p>'
        if notice:
            body += f'<p class="warn" id="notice">{e(notice)}</p>'
        if who is None:
            body += '<p><a class="btn" id="login" href="/login">统一身份认证登录并授权核验营业执照 Log in and allow the business licence check</a></p>'
        else:
            body += f'<p id="who">已登录 Logged in: <b>{e(who["name"])}</b> {e(who["org_name"] or "")} · <span id="level" data-acr="{e(who["acr"] or "")}">{e(who["acr"] or "")}</span></p>'
            body += '<form method="post" action="/logout"><button>退出 Log out</button></form>'
            mine = "".join(
                f'<li><a href="/case/{e(c["id"])}">{e(c["id"])}</a> {e(c["state"])}</li>'
                for c in cases.values()
                if c["applicant_sub"] == who["sub"]
            )
            body += f"<h2>我的申请 My applications</h2><ul>{mine or '<li>无 none</li>'}</ul>"
            if who["org_id"]:
                body += (
                    '<h2>申请 Apply</h2><form method="post" action="/apply">'
                    f'<label>企业名称 Enterprise name <input name="name" id="name" value="{e(who["org_name"] or "")}" required></label>'
                    '<label>法定代表人 Legal representative <input name="legal_representative" id="legal_representative" required></label>'
                    '<label>经营场所 Premises <input name="premises" id="premises" required></label>'
                    '<button id="apply">提交并核验营业执照 Submit</button></form>'
                )
        body += '<p><a href="/kiosk">自助终端 Kiosk</a> · <a href="/officer">审批 Officers</a> · <a href="/verify">证照核验 Verify a licence</a></p>'
        return page(name, body)

    @app.get("/case/<case_id>")
    def case_page(case_id):
        case = case_of(case_id, need_user())
        notice = session.pop("notice", None)
        steps = "".join(f"<li>{e(text)} <small>{datetime.fromtimestamp(at, UTC):%H:%M:%S} UTC</small></li>" for text, at in case["log"])
        body = f'<p>案件 Case <b id="case" data-state="{e(case["state"])}">{e(case["id"])}</b> · {e(case["enterprise"] or "")}</p><ol>{steps}</ol>'
        if notice:
            body += f'<p class="warn" id="notice">{e(notice)}</p>'
        if case["state"] == "compared":
            body += (
                f'<p><a href="/case/{e(case["id"])}/form.pdf">申请书 Application form (PDF)</a></p>'
                f'<button id="sign" data-case="{e(case["id"])}" data-agent="{e(agent or "")}">用企业USB Key签名 Sign with the enterprise USB key</button>'
                f'<p id="sign-status" role="status"></p><script>{SIGN_JS}</script>'
            )
        if case["state"] == "signed" and payment:
            body += (
                f'<form method="post" action="/case/{e(case["id"])}/pay"><button id="pay">缴纳费用 Pay the fee (CNY {FEE})</button></form>'
            )
        if case.get("fee_notice"):
            body += f'<p><a href="/case/{e(case["id"])}/fee.pdf">缴费通知书（已盖章） Sealed fee notice</a></p>'
        if case["state"] == "paid":
            body += "<p>请到窗口自助终端拍照核验 Next: the counter kiosk takes your photo.</p>"
        if case.get("licence"):
            body += f'<p>许可证 Licence: <code id="licence">{e(case["licence"])}</code></p>'
        return page(f"案件 {case['id']}", body)

    return app


def e(value) -> str:
    return html.escape(str(value))


def page(title: str, body: str) -> str:
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{e(title)}</title>
<style>body{{font:16px/1.6 system-ui,"Noto Sans CJK SC",sans-serif;max-width:46rem;margin:0 auto;padding:1rem;background:#f5f7fa}}
header{{background:#1e5b3a;color:#fff;padding:1rem;border-radius:8px}}main{{background:#fff;border:1px solid #dde;border-radius:8px;padding:1rem;margin:1rem 0}}
label{{display:block;margin:.4rem 0}}.btn,button{{background:#0b4f9c;color:#fff;border:0;border-radius:6px;padding:.45rem .9rem;text-decoration:none;font:inherit;cursor:pointer}}
.warn{{color:#b3261e}}form{{display:inline-block;margin:.2rem}}</style></head>
<body><header><h1>{e(title)}</h1><div>食品经营许可审批系统 · Food business licence approval</div></header><main>{body}</main></body></html>"""


# The browser half of step 3: ask the local hallmark-key agent which certificates it holds, have this system prepare
# the signature for the one it knows, let the holder confirm on the agent's own page, and hand the signature back.
SIGN_JS = """
document.getElementById('sign').addEventListener('click', async (ev) => {
  const b = ev.target, agent = b.dataset.agent, out = document.getElementById('sign-status'), base = '/case/' + b.dataset.case;
  const post = (url, body) => fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const popup = window.open('about:blank', 'hallmark-key', 'width=520,height=640');
  try {
    const status = await (await fetch(agent + '/v1/status')).json();
    const prepared = await post(base + '/sign/prepare', {fingerprints: status.certificates.map(c => c.fingerprint)});
    const p = await prepared.json(); if (!prepared.ok) throw new Error(p.detail);
    const asked = await (await post(agent + '/v1/sign', {purpose: 'document', data: p.to_sign, document: p.document})).json();
    popup.location = asked.confirm_url; out.textContent = '请在 hallmark-key 窗口确认签名 Confirm in the hallmark-key window';
    let answer; do { answer = await fetch(asked.result_url + '?wait=20'); } while (answer.status === 202);
    const signed = await answer.json(); if (!answer.ok) throw new Error(signed.detail || signed.status);
    const done = await post(base + '/sign/finish', {signature: signed.signature});
    const d = await done.json(); if (!done.ok) throw new Error(d.detail);
    location.reload();
  } catch (err) { out.textContent = '签名未完成 Not signed: ' + err.message; if (!popup.closed) popup.close(); }
});
"""

# The kiosk: start the device grant, show the code, wait for the person to approve it on their phone, then take a
# camera photo and send only its SHA-256 (the photo stays at the counter).
KIOSK_HTML = """
<button id="kiosk-start">开始 Start</button><p id="kiosk-code" role="status"></p>
<video id="camera" width="320" height="240" autoplay muted hidden></video><canvas id="frame" width="320" height="240" hidden></canvas>
<p><button id="photo" hidden>拍照并提交 Take the photo</button></p>
<script>
let kiosk, caseId;
document.getElementById('kiosk-start').onclick = async () => {
  const k = await (await fetch('/kiosk/start', {method: 'POST'})).json(); kiosk = k.kiosk;
  document.getElementById('kiosk-code').innerHTML = '请用手机打开 Open on your phone: <a id="verification" href="' + k.verification_uri_complete + '">' +
    k.verification_uri + '</a> 输入 code <b id="user-code">' + k.user_code + '</b>';
  for (;;) {
    await new Promise(r => setTimeout(r, 1000 * (k.interval || 5)));
    const s = await (await fetch('/kiosk/' + kiosk)).json();
    if (s.status === 'logged_in') {
      caseId = s.cases[0];
      document.getElementById('kiosk-code').textContent = '您好 Hello ' + s.name + (caseId ? ' · ' + caseId : ' · 无待拍照案件 no case waiting');
      if (caseId) {
        const video = document.getElementById('camera'); video.hidden = false;
        video.srcObject = await navigator.mediaDevices.getUserMedia({video: true});
        document.getElementById('photo').hidden = false;
      }
      return;
    }
    if (s.status !== 'authorization_pending' && s.status !== 'slow_down') { document.getElementById('kiosk-code').textContent = s.status; return; }
  }
};
document.getElementById('photo').onclick = async () => {
  const canvas = document.getElementById('frame'); canvas.getContext('2d').drawImage(document.getElementById('camera'), 0, 0, 320, 240);
  const blob = await new Promise(r => canvas.toBlob(r, 'image/png'));
  const digest = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', await blob.arrayBuffer())), b => b.toString(16).padStart(2, '0')).join('');
  const r = await fetch('/kiosk/' + kiosk + '/photo', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({case: caseId, sha256: digest})});
  document.getElementById('kiosk-code').textContent = r.ok ? '已记录 Recorded: ' + digest.slice(0, 16) + '…' : '失败 failed';
};
</script>
"""


def main() -> None:
    from werkzeug.serving import make_server

    port = int(os.environ.get("APPROVAL_PORT", "8003"))
    base = os.environ.get("APPROVAL_BASE") or f"http://127.0.0.1:{port}"  # where browsers reach it (the redirect URI's origin)
    app = create_app(
        client_id=os.environ["APPROVAL_CLIENT_ID"],
        client_secret=os.environ["APPROVAL_CLIENT_SECRET"],
        name=os.environ.get("APPROVAL_NAME", "食品经营许可审批系统"),
        base=base,
        idp=os.environ.get("APPROVAL_IDP", "http://127.0.0.1:8000"),
        matter=os.environ.get("APPROVAL_MATTER", "food-business-licence"),
        issuer=os.environ["APPROVAL_ISSUER"],
        officers=tuple(filter(None, os.environ.get("APPROVAL_OFFICERS", "").split(","))),
        payment=os.environ.get("APPROVAL_PAYMENT") or None,
        agent=os.environ.get("APPROVAL_AGENT") or None,
        events_url=os.environ.get("APPROVAL_EVENTS_URL") or None,
    )
    server = make_server(os.environ.get("APPROVAL_HOST", "127.0.0.1"), port, app, threaded=True)
    print(f"approval system {os.environ['APPROVAL_CLIENT_ID']} on {base}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
