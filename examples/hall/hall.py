"""A minimal online service hall: a relying party of Hallmark written with Authlib's Flask client.

It shows who is logged in and at which level, offers a button per matter of the
IdP's catalogue (a matter above the current level makes the IdP step up), and
takes part in single logout: RP-initiated logout sends the browser to the IdP's
``end_session_endpoint``; the IdP's back-channel logout token (or front-channel
iframe) ends this hall's own session when the person logs out elsewhere.

Configuration comes from the environment (``examples/run.py`` sets it):
HALL_CLIENT_ID, HALL_CLIENT_SECRET, HALL_NAME, HALL_NAME_EN, HALL_PORT, HALL_IDP.

Run: ``python examples/hall/hall.py``. It is an example, so it keeps its sessions
in memory and serves with werkzeug's threaded server on 127.0.0.1.
"""

from __future__ import annotations

import html
import os
import secrets
import threading
import time

import requests
from authlib.integrations.flask_client import OAuth, OAuthError
from flask import Flask, abort, redirect, request, session, url_for
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LEVEL_NAMES = {
    "urn:hallmark:loa:1": ("基础", "basic"),
    "urn:hallmark:loa:2": ("实名", "real-name"),
    "urn:hallmark:loa:3": ("数字证书", "certificate"),
}


class Logins:
    """This hall's own sessions, kept server-side so a logout notice from the IdP can end them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_id: dict[str, dict] = {}
        self._seen_jti: dict[str, float] = {}

    def start(self, user: dict) -> str:
        handle = secrets.token_urlsafe(24)
        with self._lock:
            self._by_id[handle] = user
        return handle

    def get(self, handle: str | None) -> dict | None:
        with self._lock:
            return self._by_id.get(handle) if handle else None

    def end(self, handle: str | None) -> None:
        with self._lock:
            self._by_id.pop(handle or "", None)

    def end_idp_session(self, sid: str | None, sub: str | None) -> int:
        """End every local login that came from the IdP session ``sid`` (or, without sid, of ``sub``)."""
        with self._lock:
            doomed = [h for h, u in self._by_id.items() if (sid and u.get("sid") == sid) or (not sid and sub and u.get("sub") == sub)]
            for handle in doomed:
                del self._by_id[handle]
            return len(doomed)

    def first_use_of(self, jti: str, exp: float) -> bool:
        with self._lock:
            now = time.time()
            for old in [j for j, e in self._seen_jti.items() if e < now]:
                del self._seen_jti[old]
            if jti in self._seen_jti:
                return False
            self._seen_jti[jti] = exp
            return True


SSO_CHECK_SECONDS = 300  # how often a hall asks the IdP, silently, whether a visitor is logged in there
# What a prompt=none request gets when the IdP would have to show something (OIDC Core 3.1.2.6).
SILENT_ANSWERS = ("login_required", "consent_required", "interaction_required", "account_selection_required")


def create_app(*, client_id: str, client_secret: str, name: str, name_en: str, base: str, idp: str) -> Flask:
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)
    app.config.update(SESSION_COOKIE_NAME=f"hall_{client_id}", SESSION_COOKIE_SAMESITE="Lax")
    logins = Logins()
    app.extensions["hall.logins"] = logins
    oauth = OAuth(app)
    oauth.register(
        "hallmark",
        client_id=client_id,
        client_secret=client_secret,
        server_metadata_url=idp.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile hallmark:realname", "code_challenge_method": "S256"},
    )
    idp_client = oauth.hallmark

    def current_user() -> dict | None:
        return logins.get(session.get("login"))

    def matter_catalogue() -> list[dict]:
        try:
            return requests.get(idp.rstrip("/") + "/api/idp/matters", timeout=5).json().get("matters", [])
        except (requests.RequestException, ValueError):
            return []

    @app.get("/")
    def home():
        user = current_user()
        checked = request.args.get("sso") == "checked"  # back from a silent check: never ask again at once
        if user is None and not checked and time.time() - session.get("sso_checked", 0) > SSO_CHECK_SECONDS:
            # Ask the IdP without showing it (prompt=none), at most every few minutes: a person already logged
            # in at another hall comes back logged in here; anyone else comes back with login_required.
            session["sso_checked"] = time.time()
            return idp_client.authorize_redirect(base + "/callback", prompt="none")
        notice = session.pop("notice", None)
        return page(name, name_en, user, matter_catalogue(), notice, session.pop("doing", None))

    @app.get("/login")
    def login():
        return idp_client.authorize_redirect(base + "/callback")

    @app.get("/matter/<code>")
    def matter(code):
        # The IdP raises the level to what the matter needs and asks only for what is missing.
        session["pending_matter"] = code
        return idp_client.authorize_redirect(base + "/callback", matter=code)

    @app.get("/callback")
    def callback():
        if request.args.get("error") in SILENT_ANSWERS:
            # A silent check's answer: not logged in at the IdP (or it would have to ask). Nothing to tell; the
            # marker stops a client that keeps no cookies from being sent round again.
            return redirect(url_for("home", sso="checked"))
        if request.args.get("error"):
            session["notice"] = f"{request.args.get('error')}: {request.args.get('error_description', '')}"
            session.pop("pending_matter", None)
            return redirect(url_for("home"))
        try:
            token = idp_client.authorize_access_token()
        except OAuthError as exc:
            session["notice"] = f"{exc.error}: {exc.description or ''}"
            return redirect(url_for("home"))
        claims = token["userinfo"]  # the ID token, checked by Authlib against the IdP's keys, nonce included
        user = {
            "sub": claims["sub"],
            "sid": claims.get("sid"),
            "acr": claims.get("acr"),
            "amr": claims.get("amr", []),
            "name": claims.get("name") or claims.get("preferred_username") or claims["sub"][:8],
            "id_token": token.get("id_token"),
        }
        try:
            info = idp_client.userinfo(token=token)
            user["name"] = info.get("name") or info.get("preferred_username") or user["name"]
            user["resident_id_masked"] = info.get("resident_id_masked")
            user["real_name_verified"] = info.get("real_name_verified")
        except (OAuthError, requests.RequestException, ValueError):
            pass
        logins.end(session.get("login"))
        session["login"] = logins.start(user)
        matter_code = session.pop("pending_matter", None)
        if matter_code:
            session["doing"] = matter_code
        return redirect(url_for("home"))

    @app.post("/logout")
    def logout():
        user = current_user()
        logins.end(session.pop("login", None))
        if user is None:
            return redirect(url_for("home"))
        # RP-initiated logout: the IdP ends the SSO session and tells the other halls.
        return idp_client.logout_redirect(
            post_logout_redirect_uri=base + "/", id_token_hint=user["id_token"], state=secrets.token_urlsafe(12)
        )

    @app.post("/backchannel-logout")
    def backchannel_logout():
        claims = verify_logout_token(request.form.get("logout_token", ""))
        if claims is None:
            return {"error": "invalid_request", "error_description": "not a valid logout token"}, 400, {"Cache-Control": "no-store"}
        ended = logins.end_idp_session(claims.get("sid"), claims.get("sub"))
        app.logger.info("back-channel logout for IdP session %s…: %d local login(s) ended", str(claims.get("sid"))[:6], ended)
        return "", 200, {"Cache-Control": "no-store"}

    @app.get("/frontchannel-logout")
    def frontchannel_logout():
        if request.args.get("iss") != idp_client.load_server_metadata().get("issuer"):
            abort(400)
        logins.end_idp_session(request.args.get("sid"), None)
        return "", 200, {"Cache-Control": "no-store"}

    def verify_logout_token(token: str) -> dict | None:
        """OIDC Back-Channel Logout 1.0, section 2.6, with the IdP's published keys."""
        if not token or len(token) > 8000:
            return None
        metadata = idp_client.load_server_metadata()
        algorithms = metadata.get("id_token_signing_alg_values_supported", ["ES256"])
        try:
            try:
                decoded = jwt.decode(token, KeySet.import_key_set(idp_client.fetch_jwk_set()), algorithms=algorithms)
            except JoseError:
                # Perhaps signed with a key published after we cached the set (hallmark idp rotate-keys): fetch it again.
                decoded = jwt.decode(token, KeySet.import_key_set(idp_client.fetch_jwk_set(force=True)), algorithms=algorithms)
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": metadata["issuer"]},
                aud={"essential": True, "value": client_id},
                iat={"essential": True},
                exp={"essential": True},
                jti={"essential": True},
                leeway=60,
            ).validate(decoded.claims)
        except (JoseError, ValueError, KeyError, TypeError):
            return None
        claims = decoded.claims
        if decoded.header.get("typ") != "logout+jwt" or "nonce" in claims:
            return None
        if not isinstance(claims.get("events"), dict) or BACKCHANNEL_EVENT not in claims["events"]:
            return None
        if not (claims.get("sid") or claims.get("sub")) or not logins.first_use_of(claims["jti"], claims["exp"]):
            return None
        return claims

    return app


def page(name: str, name_en: str, user: dict | None, catalogue: list[dict], notice: str | None, doing: str | None) -> str:
    e = html.escape
    rows = []
    for m in sorted(catalogue, key=lambda m: (m["level"], m["code"])):
        rows.append(
            f'<li><span class="lv l{m["level"]}">L{m["level"]}</span> <strong>{e(m["name"])}</strong>'
            f" <small>{e(m.get('department') or '')}</small>"
            f'<a class="btn" href="/matter/{e(m["code"])}" data-matter="{e(m["code"])}">办理 Start</a></li>'
        )
    if user:
        zh, en = LEVEL_NAMES.get(user["acr"], (user["acr"], user["acr"]))
        who = (
            f'<p id="who">已登录 Logged in: <strong>{e(user["name"])}</strong></p>'
            f'<p>认证级别 Level: <span class="badge" id="level" data-acr="{e(user["acr"] or "")}">{e(zh)} · {e(en)}</span>'
            f" <small>amr: {e(' '.join(user['amr']))}</small></p>"
            + (f"<p>实名 Verified name: 身份证 {e(user['resident_id_masked'])}</p>" if user.get("resident_id_masked") else "")
            + '<form method="post" action="/logout"><button id="logout">退出登录 Log out</button></form>'
        )
    else:
        who = '<p id="who">未登录 Not logged in</p><p><a class="btn" id="login" href="/login">统一身份认证登录 Log in</a></p>'
    done = ""
    if doing and user:
        chosen = next((m for m in catalogue if m["code"] == doing), None)
        if chosen:
            done = f'<p class="ok" id="doing">可以办理 Ready: {e(chosen["name"])}（需要级别 L{chosen["level"]}，当前已满足）</p>'
    warn = f'<p class="warn" id="notice">{e(notice)}</p>' if notice else ""
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{e(name)}</title>
<style>body{{font:16px/1.6 system-ui,"Noto Sans CJK SC","PingFang SC",sans-serif;max-width:42rem;margin:0 auto;padding:1rem;background:#f5f7fa}}
header{{background:#8c1c13;color:#fff;padding:1rem;border-radius:8px}}section{{background:#fff;border:1px solid #dde;border-radius:8px;padding:1rem;margin:1rem 0}}
.btn,button{{display:inline-block;background:#0b4f9c;color:#fff;border:0;border-radius:6px;padding:.45rem .9rem;text-decoration:none;font:inherit;cursor:pointer}}
li{{list-style:none;margin:.5rem 0;display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}}li .btn{{margin-left:auto}}ul{{padding:0}}
.lv{{font-weight:700;border-radius:4px;padding:0 .4rem;color:#fff}}.l1{{background:#5b6573}}.l2{{background:#1e6b3a}}.l3{{background:#8c1c13}}
.badge{{background:#e7f4ec;color:#1e6b3a;border-radius:999px;padding:0 .6rem;font-weight:600}}.warn{{color:#b3261e}}.ok{{color:#1e6b3a}}</style></head>
<body><header><h1>{e(name)}</h1><div>{e(name_en)}</div></header>
<section>{who}{warn}{done}</section>
<section><h2>办事事项 Matters</h2><ul id="matters">{"".join(rows) or "<li>（事项目录暂不可用 catalogue unavailable）</li>"}</ul></section>
</body></html>"""


def main() -> None:
    from werkzeug.serving import make_server

    port = int(os.environ.get("HALL_PORT", "8001"))
    base = f"http://127.0.0.1:{port}"
    app = create_app(
        client_id=os.environ["HALL_CLIENT_ID"],
        client_secret=os.environ["HALL_CLIENT_SECRET"],
        name=os.environ.get("HALL_NAME", "网上办事大厅"),
        name_en=os.environ.get("HALL_NAME_EN", "Online service hall"),
        base=base,
        idp=os.environ.get("HALL_IDP", "http://127.0.0.1:8000"),
    )
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"{app.name}: {os.environ.get('HALL_NAME', '')} on {base}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
