"""core.web in-process: error pages or problem+json by content negotiation, headers, CSRF, languages, the landing page.

Most tests use a small app with only the web layer and two blueprints (one of pages,
one JSON API), so they run in milliseconds; one test builds the real app and follows
every link of the landing page.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from flask import Blueprint, Flask

from core import web
from core.problems import MEDIA_TYPE, Problem
from core.web import errors, i18n
from core.web.i18n import N_, Refusal
from tests.catalogue_checks import bare_percents, catalogue, gaps, msgids

WEB = Path(web.__file__).parent
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "Accept-Language": "zh-CN,zh;q=0.9"}
API = {"Accept": "application/json"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
LIMIT = 2048


def visible(html: str) -> str:
    """The text a person sees (styles and tags dropped, white space folded)."""
    html = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


@pytest.fixture(scope="module")
def app():
    app = Flask("web-test")
    app.config.update(SECRET_KEY="test-secret", MAX_CONTENT_LENGTH=LIMIT)
    pages = Blueprint("test_pages", __name__)
    web.pages(pages, csrf=True)
    api = Blueprint("test_api", __name__, url_prefix="/api/test")

    @pages.route("/form", methods=["GET", "POST"])
    def form():
        return f'<form method="post"><input type="hidden" name="csrf_token" value="{web.csrf_token()}"></form>'

    @pages.get("/refused")
    def refused():
        raise Refusal(N_("Too many requests in a short time. Wait a moment and try again."), code="slow_down", status=429)

    @pages.get("/forbidden")
    def forbidden():
        raise Problem(403, "Forbidden", "no", code="nope")

    @pages.get("/broken")
    def broken():
        raise RuntimeError("secret detail of the failure")

    @pages.get("/bad")
    def bad():
        raise Problem(400, "Bad Request", "the form is missing a field")

    @api.post("/echo")
    def echo():
        return {"ok": True}

    @api.get("/broken")
    def api_broken():
        raise RuntimeError("secret detail of the failure")

    app.register_blueprint(pages)
    app.register_blueprint(api)
    web.landing_link(app, "people", "/form", N_("Home"), N_("Documents"), 1)
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def test_landing_page_is_chinese_with_the_registered_links(client):
    response = client.get("/", headers=BROWSER)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert '<html lang="zh-CN">' in response.text
    assert "网上办事大厅统一身份认证" in visible(response.text)
    assert 'href="/form"' in response.text
    english = client.get("/?lang=en", headers=BROWSER)
    assert '<html lang="en">' in english.text and "Online Service Hall Unified Identity" in english.text
    assert "hallmark_lang=en" in english.headers["Set-Cookie"]


@pytest.mark.parametrize(
    "path, status, heading",
    [
        ("/nowhere", 404, "页面不存在"),
        ("/refused", 429, "请求过于频繁"),
        ("/forbidden", 403, "无权操作"),
        ("/broken", 500, "系统出错"),
        ("/bad", 400, "请求有误"),
    ],
)
def test_a_browser_gets_a_chinese_page_with_a_way_home(client, path, status, heading):
    response = client.get(path, headers=BROWSER)
    assert response.status_code == status
    assert response.mimetype == "text/html"
    text = visible(response.text)
    assert heading in text and "返回首页" in text
    assert re.search(r'<a class="button[^"]*" href="/">', response.text)
    assert "Traceback" not in response.text and "secret detail" not in response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["Vary"] == "Accept"


def test_the_page_speaks_english_when_asked(client):
    response = client.get("/nowhere?lang=en", headers=BROWSER)
    assert response.status_code == 404 and "Page not found" in visible(response.text)
    assert "Back to the home page" in visible(response.text)


@pytest.mark.parametrize("accept", ["application/json", MEDIA_TYPE, "*/*", None])
def test_an_api_client_gets_problem_json(client, accept):
    response = client.get("/nowhere", headers={"Accept": accept} if accept else {})
    assert response.status_code == 404
    assert response.mimetype == MEDIA_TYPE
    body = response.get_json()
    assert body["status"] == 404 and body["title"] == "Not Found" and body["type"] == "about:blank"
    assert response.headers["Vary"] == "Accept"


def test_json_api_paths_answer_problem_json_even_to_a_browser(client):
    for path in ("/api/test/missing", "/api/test/broken"):
        response = client.get(path, headers=BROWSER)
        assert response.mimetype == MEDIA_TYPE, path
        assert "secret detail" not in response.text
    assert client.get("/api/test/broken", headers=BROWSER).status_code == 500


def test_errors_alone_answer_problem_json_without_the_rest_of_the_web_layer():
    app = Flask("errors-only")
    errors.install(app)

    @app.get("/refused")
    def refused():
        raise Refusal(N_("You may not do this."), code="nope", status=403)

    response = app.test_client().get("/refused", headers=BROWSER)
    assert response.status_code == 403 and response.mimetype == MEDIA_TYPE
    assert response.get_json()["detail"] == "You may not do this." and response.get_json()["code"] == "nope"


def test_a_package_may_name_more_json_api_paths():
    app = Flask("json-prefix")
    app.config["SECRET_KEY"] = "k"
    web.init_app(app)
    web.json_api(app, "/rpc/")
    client = app.test_client()
    assert client.get("/rpc/missing", headers=BROWSER).mimetype == MEDIA_TYPE
    assert client.get("/elsewhere", headers=BROWSER).mimetype == "text/html"


def test_page_paths_default_to_pages_and_keep_problem_json_for_json_clients(client):
    assert client.get("/refused").mimetype == "text/html"  # no Accept: a page blueprint answers with a page
    refusal = client.get("/refused", headers=API)
    assert refusal.status_code == 429 and refusal.mimetype == MEDIA_TYPE
    assert refusal.get_json()["code"] == "slow_down"
    assert refusal.get_json()["detail"] == "Too many requests in a short time. Wait a moment and try again."


def test_405_as_a_page_and_as_a_problem_both_say_what_is_allowed(client):
    page = client.delete("/form", headers=BROWSER)
    assert page.status_code == 405 and page.mimetype == "text/html"
    assert "此页面不支持该操作方式" in visible(page.text)
    problem = client.delete("/api/test/echo")
    assert problem.status_code == 405 and problem.mimetype == MEDIA_TYPE
    assert "POST" in page.headers["Allow"] and "POST" in problem.headers["Allow"]


def test_an_oversize_body_is_413_in_the_right_form(client):
    big = {"csrf_token": "x", "text": "a" * (LIMIT + 1)}
    page = client.post("/form", data=big, headers=BROWSER)
    assert page.status_code == 413 and page.mimetype == "text/html"
    assert "提交的内容过大" in visible(page.text)
    problem = client.post("/api/test/echo", data=b"{" + b" " * LIMIT + b"}", headers={**API, "Content-Type": "application/json"})
    assert problem.status_code == 413 and problem.mimetype == MEDIA_TYPE
    assert problem.get_json()["title"] == "Content Too Large"


def test_csrf_a_form_post_needs_the_token_of_its_page(app):
    client = app.test_client()
    refused = client.post("/form", data={"csrf_token": "forged"}, headers=BROWSER)
    assert refused.status_code == 400 and "表单已过期" in visible(refused.text)
    form = client.get("/form", headers=BROWSER)
    cookie = form.headers["Set-Cookie"]
    assert "hallmark_csrf=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    token = CSRF.search(form.text).group(1)
    assert client.post("/form", data={"csrf_token": token}, headers=BROWSER).status_code == 200
    stranger = app.test_client()  # the token without this browser's cookie is worth nothing
    assert stranger.post("/form", data={"csrf_token": token}, headers=BROWSER).status_code == 400


def test_secure_cookies_follow_the_public_url():
    app = Flask("secure")
    app.config["SECRET_KEY"] = "k"
    web.init_app(app, public_url="https://id.example.gov.cn")
    app.add_url_rule("/t", "t", lambda: web.csrf_token())
    assert "Secure" in app.test_client().get("/t").headers["Set-Cookie"]


def test_views_may_widen_the_policy_for_their_response():
    app = Flask("csp")
    app.config["SECRET_KEY"] = "k"
    web.init_app(app)

    @app.get("/agent")
    def agent():
        web.allow(scripts=True, connect=("http://127.0.0.1:9443",))
        return "<p>hi</p>"

    policy = app.test_client().get("/agent").headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert f"script-src 'nonce-{nonce}'" in policy and "connect-src 'self' http://127.0.0.1:9443" in policy
    plain = app.test_client().get("/").headers["Content-Security-Policy"]
    assert "script-src" not in plain and "connect-src" not in plain


def test_a_broken_error_page_falls_back_to_problem_json(app, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("template broke")

    monkeypatch.setattr(errors, "page", explode)
    response = app.test_client().get("/nowhere", headers=BROWSER)
    assert response.status_code == 404 and response.mimetype == MEDIA_TYPE


# --------------------------------------------------------------------------- the real app


def test_every_link_of_the_real_landing_page_leads_to_a_page(tmp_path, migrated):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    app = create_app(app_settings(tmp_path, engine.url.render_as_string(hide_password=False)))
    try:
        client = app.test_client()
        landing = client.get("/", headers=BROWSER)
        assert landing.status_code == 200 and landing.mimetype == "text/html"
        links = set(re.findall(r'<li><a href="([^"]+)"', landing.text))
        assert {"/login", "/register", "/verify", "/validate", "/developers"} <= links
        for link in links:
            page = client.get(link, headers=BROWSER, follow_redirects=True)
            assert page.status_code == 200 and page.mimetype == "text/html", link
            assert '<html lang="zh-CN">' in page.text, link
        guide = visible(client.get("/developers", headers=BROWSER).text)
        assert "/.well-known/openid-configuration" in guide and "urn:hallmark:loa:3" in guide
        assert "authorization_details" in guide and "hallmark_licence" in guide and "/api/licences" in guide  # RFC 9396 types
        looked_up = client.get("/verify?code=abc%2Fdef", headers=BROWSER)
        assert looked_up.status_code == 303 and looked_up.headers["Location"].endswith("/verify/abc%2Fdef")
        missing = client.get("/no/such/page", headers=BROWSER)
        assert missing.status_code == 404 and "返回首页" in visible(missing.text)
        assert client.get("/no/such/page", headers=API).mimetype == MEDIA_TYPE
    finally:
        app.extensions["hallmark.services"].close()


# --------------------------------------------------------------------------- catalogues


def test_every_string_of_the_web_layer_has_a_chinese_translation():
    templates = sorted((WEB / "templates" / "web").glob("*.html"))
    wanted = msgids(sorted(WEB.glob("*.py")), templates)
    assert len(wanted) > 30
    assert gaps(WEB / "translations", wanted) == [], "run pybabel extract/update, see core/web/i18n.py"
    assert bare_percents(templates) == []
    for status in (400, 403, 404, 405, 413, 429, 500):
        assert status in errors.MESSAGES and status in errors.TITLES


def test_the_packages_catalogues_agree_where_they_share_a_msgid():
    # Every package's catalogue is merged into one (gettext domain "messages"): a msgid two
    # packages translate differently would be shown in whichever was merged last.
    root = WEB.parent.parent
    catalogues = [WEB / "translations", *sorted(p.parent.parent.parent for p in root.glob("*/translations/zh/LC_MESSAGES/messages.po"))]
    assert len(catalogues) >= 3
    seen: dict[str, dict[str, str]] = {}
    for folder in catalogues:
        for message in catalogue(folder, "zh"):
            if message.id and message.string:
                key = message.id if isinstance(message.id, str) else message.id[0]
                seen.setdefault(key, {})[folder.parent.name] = str(message.string)
    clashes = {key: where for key, where in seen.items() if len(set(where.values())) > 1}
    assert not clashes, f"translated differently by two catalogues: {clashes}"


def test_catalogues_compile_once_and_again_when_changed(tmp_path):
    source = tmp_path / "translations"
    shutil.copytree(WEB / "translations", source, ignore=shutil.ignore_patterns("*.mo"))
    assert i18n.compile_catalogues(source) == source
    mo = source / "zh" / "LC_MESSAGES" / "messages.mo"
    first = mo.stat().st_mtime_ns
    i18n.compile_catalogues(source)
    assert mo.stat().st_mtime_ns == first
    po = mo.with_suffix(".po")
    os.utime(po, ns=(first + 10**9, first + 10**9))
    i18n.compile_catalogues(source)
    assert mo.stat().st_mtime_ns != first
    assert not list(source.rglob(".messages-*")), "no temporary files are left behind"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_catalogues_compile_elsewhere(tmp_path):
    source = tmp_path / "translations"
    shutil.copytree(WEB / "translations", source, ignore=shutil.ignore_patterns("*.mo"))
    for folder in source.rglob("LC_MESSAGES"):
        folder.chmod(0o555)
    try:
        target = i18n.compile_catalogues(source)
        assert target != source and (target / "zh" / "LC_MESSAGES" / "messages.mo").exists()
    finally:
        for folder in source.rglob("LC_MESSAGES"):
            folder.chmod(0o755)


def test_read_only_catalogues_compile_elsewhere_as_root(tmp_path, monkeypatch):
    source = tmp_path / "idp" / "translations"
    shutil.copytree(WEB / "translations", source, ignore=shutil.ignore_patterns("*.mo"))
    real = i18n._compile_into

    def refuse_source(src, target):
        if target == source:
            raise PermissionError("read-only")
        real(src, target)

    monkeypatch.setattr(i18n, "_compile_into", refuse_source)
    target = i18n.compile_catalogues(source)
    assert target != source and target.name == "idp", "each package's catalogue gets a folder of its own"
    assert (target / "zh" / "LC_MESSAGES" / "messages.mo").exists()


@pytest.mark.parametrize(
    "query, cookie, accept, expected",
    [
        ("", None, None, "zh"),
        ("lang=en", None, None, "en"),
        ("lang=fr", None, "en", "en"),
        ("", "en", "zh-CN", "en"),
        ("lang=zh", "en", None, "zh"),
        ("", None, "en-GB,en;q=0.8", "en"),
        ("", None, "de-DE", "zh"),
        ("", "xx", "zh-TW", "zh"),
    ],
)
def test_locale_selection(query, cookie, accept, expected):
    app = Flask("t")
    i18n.init_app(app)
    headers = {}
    if cookie:
        headers["Cookie"] = f"{i18n.COOKIE}={cookie}"
    if accept:
        headers["Accept-Language"] = accept
    with app.test_request_context("/?" + query, headers=headers):
        assert i18n.select_locale() == expected
        assert i18n.current() == expected
