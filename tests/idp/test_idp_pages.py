"""The IdP's pages over real HTTP against ``hallmark serve``: forms with CSRF tokens, cookies, languages."""

from __future__ import annotations

import csv
import re
from urllib.parse import urlsplit

import pytest
import requests

from idp.settings import IdPSettings
from tests.conftest import initialised_copy, run_hallmark, start_server, stop_server
from tests.idp import sms_inbox

PRIVACY = IdPSettings().privacy_version  # the privacy notice in force, accepted at registration

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FULL_ID = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dX](?![0-9A-Za-z])")


def prepare(instance, **env):
    if env:  # settings init must see (another database)
        assert run_hallmark(instance, "init", **env).returncode == 0
    else:
        initialised_copy(instance)
    out = instance / "people.csv"
    demo = run_hallmark(instance, "idp", "registry", "demo", "--count", "20", "--out", str(out), **env)
    assert demo.returncode == 0, demo.stderr
    with out.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    instance = tmp_path_factory.mktemp("pages")
    people = prepare(instance)
    process, base = start_server(instance)
    yield base, people
    stop_server(process)


class Browser:
    """A requests.Session that fills in the CSRF token the way a page's form would."""

    def __init__(self, base, lang=None):
        self.base = base
        self.http = requests.Session()
        self.http.headers["User-Agent"] = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36"
        if lang:
            self.http.headers["Accept-Language"] = lang
        self.token = None
        self.pages = []

    def get(self, path, **kw):
        response = self.http.get(self.base + path, allow_redirects=kw.pop("allow_redirects", True), timeout=15, **kw)
        found = CSRF.search(response.text)
        if found:
            self.token = found.group(1)
        self.pages.append(response.text)
        return response

    def post(self, path, data, *, token=True, follow=False):
        if token and self.token is None:
            self.get("/login")
        body = {**data, **({"csrf_token": self.token} if token else {})}
        response = self.http.post(self.base + path, data=body, allow_redirects=follow, timeout=15)
        self.pages.append(response.text)
        return response

    def register(self, identifier, password="Correct horse 42", **extra):
        if identifier.isdigit() and "code" not in extra:  # a mobile number: confirmed by the code texted to it
            inbox = lambda: self.http.get(self.base + "/dev/sms", timeout=15).text  # noqa: E731
            before = len(sms_inbox.codes(inbox(), identifier))
            assert self.post("/register/code", {"identifier": identifier}).status_code == 200
            extra["code"] = sms_inbox.new_code(inbox, identifier, before)
        return self.post("/register", {"identifier": identifier, "password": password, "password2": password, "privacy": PRIVACY, **extra})

    def login(self, identifier, password="Correct horse 42", next_url=None, solve=True):
        """A password sign-in, with the proof-of-work challenge solved when one is asked, as the page's script does."""
        proof = ""
        if solve:
            from idp.people import loginguard

            if self.token is None:
                self.get("/login")
            asked = self.http.post(self.base + "/login/challenge", data={"identifier": identifier, "csrf_token": self.token}, timeout=15)
            challenge = asked.json()
            if challenge["maxnumber"]:
                import time

                time.sleep(challenge["delay"])
                proof = loginguard.solve(challenge)
        form = {"identifier": identifier, "password": password, "altcha": proof, **({"next": next_url} if next_url else {})}
        return self.post("/login", form)

    def no_full_ids(self):
        for page in self.pages:
            assert not FULL_ID.search(page), "a full resident ID was sent to the browser"


def text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text))


def test_register_login_account_page_and_sign_out_one_session(site):
    base, _ = site
    phone = Browser(base)
    registered = phone.register("13512345678", display_name="王小明")
    assert registered.status_code == 303 and registered.headers["Location"] == "/account?notice=welcome"
    cookie = registered.headers["Set-Cookie"]
    assert "hallmark_sso=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # the issuer is http://127.0.0.1 in this test

    laptop = Browser(base)
    laptop.http.headers["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/128.0"
    logged_in = laptop.login("135 1234 5678", next_url="/account?from=test")
    assert logged_in.status_code == 303 and logged_in.headers["Location"] == "/account?from=test"

    page = phone.get("/account?notice=welcome")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    body = text(page)
    assert "王小明" in body and "135****5678" in body and "账号注册成功" in body
    assert "我的登录设备" in body and "当前浏览器" in body and "基础" in body
    assert "Android 上的 Chrome" in body and "Windows 上的 Firefox" in body
    handles = re.findall(r'name="session" value="([0-9a-f]+)"', page.text)
    assert len(handles) == 1  # only the other device has a button; this one has "sign out of this browser"
    sid = phone.http.cookies["hallmark_sso"]
    assert sid not in page.text, "a session id is a secret and must never be put into a page"

    # the laptop's entry is the one that is not "this browser" (listed first)
    ended = phone.post("/account/sessions/end", {"session": handles[0]})
    assert ended.status_code == 303 and ended.headers["Location"] == "/account?notice=session-ended#sessions"
    assert laptop.get("/account", allow_redirects=False).headers["Location"] == "/login?next=%2Faccount"
    assert phone.get("/account").status_code == 200

    signed_out = phone.post("/account/sign-out", {})
    assert signed_out.headers["Location"].startswith("/logout/done?ticket=")
    assert "您已退出登录" in text(phone.get(signed_out.headers["Location"]))
    assert phone.get("/account", allow_redirects=False).status_code == 302


def test_another_accounts_session_is_ended_at_login(site):
    base, _ = site
    shared = Browser(base)
    shared.register("kiosk-a")
    first_sid = shared.http.cookies["hallmark_sso"]
    Browser(base).register("kiosk-b")
    assert shared.login("kiosk-b").status_code == 303
    assert shared.http.cookies["hallmark_sso"] != first_sid
    body = text(shared.get("/account"))
    assert "kiosk-b" in body and "kiosk-a" not in body
    # the first account's session is over, not just forgotten by this browser
    probe = Browser(base)
    probe.http.cookies.set("hallmark_sso", first_sid)
    assert probe.get("/account", allow_redirects=False).status_code == 302


def test_password_policy_messages_and_nothing_half_written(site):
    base, _ = site
    b = Browser(base)
    short = b.register("policy1", password="Short1")
    assert short.status_code == 400 and "密码至少需要 10 个字符" in text(short)
    assert 'aria-invalid="true"' in short.text and 'value="policy1"' in short.text
    assert "Short1" not in short.text
    assert "该密码过于常见" in text(b.register("policy1", password="Password123"))
    assert "不能包含您的用户名" in text(b.register("policy1", password="my-policy1-pass"))
    mismatch = b.post("/register", {"identifier": "policy1", "password": "Correct horse 42", "password2": "Correct horse 43"})
    assert mismatch.status_code == 400 and "两次输入的密码不一致" in text(mismatch)
    assert b.login("policy1").status_code == 401  # no account was created by any of the refusals
    english = b.post("/register?lang=en", {"identifier": "policy1", "password": "abcdefghijkl", "password2": "abcdefghijkl"})
    assert "Mix at least two kinds of characters" in text(english)
    assert b.register("policy1").status_code == 303
    taken = Browser(base).register("policy1")
    assert taken.status_code == 400 and "该用户名已被使用" in text(taken)  # the status of any refusal of the form


def test_no_lockout_wrong_passwords_ask_for_a_security_check_and_the_owner_gets_in(site):
    base, _ = site
    Browser(base).register("lockme")
    b = Browser(base)
    wrong = 0
    while wrong <= 20:  # the suite's login_free_failures (tests.conftest.TEST_LIMITS), fewer by others' from this address
        answer = b.login("lockme", password="Wrong horse 42", solve=False)
        if "需要完成一项安全验证" in text(answer):
            break
        assert answer.status_code == 401 and "手机号码/用户名或密码错误" in text(answer)
        wrong += 1
    assert 15 <= wrong <= 20 and answer.status_code == 401  # then the page asks for the check, not a lock
    asked = b.login("lockme", solve=False)  # the right password, without the check the page's script does
    assert asked.status_code == 401 and "需要完成一项安全验证" in text(asked) and "hallmark_sso" not in b.http.cookies
    assert "security check" in text(b.post("/login?lang=en", {"identifier": "lockme", "password": "x"}))
    assert b.login("lockme").status_code == 303  # with it: in, never locked


def test_real_name_step_up_and_verification(site):
    base, people = site
    alice, mallory = people[0], people[1]
    b = Browser(base)
    b.register("realname1")
    step = b.get("/login/step-up?next=/account&level=2")
    assert step.status_code == 200
    body = text(step)
    assert "此事项所需等级：实名" in body and "无需再次输入密码" in body
    assert 'name="password"' not in step.text and 'name="resident_id"' in step.text

    form = {"next": "/account", "level": "2"}
    wrong_name = b.post("/login/step-up", {**form, "name": "冒名顶替", "resident_id": alice["resident_id"]})
    assert wrong_name.status_code == 422 and "人口信息库未能核实" in text(wrong_name)
    assert alice["resident_id"] not in wrong_name.text  # not echoed back
    bad = alice["resident_id"][:-1] + ("1" if alice["resident_id"][-1] != "1" else "2")
    checksum = b.post("/login/step-up", {**form, "name": alice["name"], "resident_id": bad})
    assert checksum.status_code == 400 and "校验码" in text(checksum)

    done = b.post("/login/step-up", {**form, "name": alice["name"], "resident_id": alice["resident_id"]})
    assert done.status_code == 303 and done.headers["Location"].startswith("/login/step-up?")
    assert b.get(done.headers["Location"], allow_redirects=False).headers["Location"] == "/account"
    account = text(b.get("/account"))
    masked = alice["resident_id"][:3] + "*" * 11 + alice["resident_id"][-4:]
    assert "已认证" in account and masked in account and "实名" in account and "第 2 级" in account
    assert "*" * (len(alice["name"]) - 1) + alice["name"][-1] in account

    certificate = b.get("/login/step-up?next=/account&level=3")
    assert certificate.status_code == 200 and "USB Key 登录" in text(certificate)
    assert 'href="/account"' in certificate.text

    other = Browser(base)
    other.register("realname2")
    taken = other.post("/account/verify", {"name": alice["name"], "resident_id": alice["resident_id"]})
    assert taken.status_code == 409 and "该身份证号码已绑定其他账号" in text(taken)
    assert (
        other.post("/account/verify", {"name": mallory["name"], "resident_id": mallory["resident_id"]}).headers["Location"]
        == "/account?notice=verified"
    )
    assert "实名认证成功" in text(other.get("/account?notice=verified"))
    b.no_full_ids()
    other.no_full_ids()


def test_step_up_without_a_session_goes_to_login(site):
    base, _ = site
    b = Browser(base)
    response = b.get("/login/step-up?next=/account&level=2", allow_redirects=False)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login" and "step-up" in location.query
    assert b.get("/login/step-up?next=/account&level=9").status_code == 400


def test_languages(site):
    base, _ = site
    zh = Browser(base)
    page = zh.get("/login")
    assert '<html lang="zh-CN">' in page.text and "网上办事大厅统一身份认证" in page.text and "手机号码或用户名" in page.text
    en = zh.get("/login?lang=en")
    assert '<html lang="en">' in en.text and "Online Service Hall Unified Identity" in en.text and "Mobile number or username" in en.text
    assert zh.http.cookies.get("hallmark_lang") == "en"
    assert "No account yet?" in zh.get("/register").text or "Already registered?" in zh.get("/register").text
    assert "Create an account" in zh.get("/register").text  # the cookie keeps English
    assert "登录" in zh.get("/login?lang=zh").text
    assert "Sign in" in Browser(base, lang="en-US,en;q=0.9").get("/login").text
    assert "登录" in Browser(base, lang="fr-FR,fr;q=0.9").get("/login").text
    assert "登录" in Browser(base, lang="zh-TW").get("/login").text


def test_csrf_is_enforced(site):
    base, _ = site
    Browser(base).register("csrfuser")
    b = Browser(base)
    missing = b.post("/login", {"identifier": "csrfuser", "password": "Correct horse 42"}, token=False)
    assert missing.status_code == 400 and missing.headers["Content-Type"].startswith("text/html")
    assert "表单已过期或并非从本网站提交" in text(missing) and "hallmark_sso" not in b.http.cookies
    attacker = Browser(base)
    attacker.get("/login")
    b.get("/login")
    forged = b.http.post(
        base + "/login",
        data={"identifier": "csrfuser", "password": "Correct horse 42", "csrf_token": attacker.token},
        allow_redirects=False,
    )
    assert forged.status_code == 400 and "hallmark_sso" not in b.http.cookies
    tampered = b.http.post(
        base + "/login", data={"identifier": "csrfuser", "password": "Correct horse 42", "csrf_token": b.token + "x"}, allow_redirects=False
    )
    assert tampered.status_code == 400
    assert b.login("csrfuser").status_code == 303


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "http:/evil.example",
        "javascript:alert(1)",
        "/account\r\nLocation: https://evil.example",
        "account",
    ],
)
def test_next_must_stay_on_this_site(site, target):
    base, _ = site
    b = Browser(base)
    shown = b.http.get(base + "/login", params={"next": target}, timeout=15)
    assert shown.status_code == 400 and "登录后要返回的地址不属于本网站" in text(shown)
    b.get("/login")
    posted = b.login("nobody-here", next_url=target)
    assert posted.status_code == 400 and "Location" not in posted.headers


def test_password_change_on_the_account_page(site):
    base, _ = site
    here, there = Browser(base), Browser(base)
    here.register("changer")
    there.login("changer")
    wrong = here.post(
        "/account/password", {"current_password": "Nope horse 42", "new_password": "Newer horse 42", "new_password2": "Newer horse 42"}
    )
    assert wrong.status_code == 403 and "当前密码不正确" in text(wrong) and "<details open>" in wrong.text
    weak = here.post("/account/password", {"current_password": "Correct horse 42", "new_password": "short", "new_password2": "short"})
    assert weak.status_code == 400 and "密码至少需要 10 个字符" in text(weak)
    changed = here.post(
        "/account/password", {"current_password": "Correct horse 42", "new_password": "Newer horse 42", "new_password2": "Newer horse 42"}
    )
    assert changed.status_code == 303
    assert "密码已修改，其他设备均已退出登录" in text(here.get("/account?notice=password-changed"))
    assert there.get("/account", allow_redirects=False).status_code == 302
    assert Browser(base).login("changer", password="Newer horse 42").status_code == 303


def test_bad_input_gets_a_readable_page(site):
    base, _ = site
    b = Browser(base)
    b.register("badinput")
    gone = b.post("/account/sessions/end", {"session": "0" * 20})
    assert gone.status_code == 404 and "该登录已结束" in text(gone)
    level = b.get("/login/step-up?next=/account&level=x")
    assert level.status_code == 400 and "所需等级必须为" in text(level)
    long_name = b.post("/account/verify", {"name": "名" * 500, "resident_id": "1" * 5000})
    assert long_name.status_code == 400 and long_name.headers["Content-Type"].startswith("text/html")


def test_failures_from_one_address_ask_it_for_a_security_check(tmp_path):
    """No 429 for failed sign-ins any more: past the free failures of an address (20 in the suite), any name tried from
    it needs a solved challenge (idp.people.loginguard); with one, the attempt is checked as before."""
    instance = tmp_path / "limited"
    initialised_copy(instance)
    process, base = start_server(instance, workers=1)
    try:
        b = Browser(base)
        for i in range(20):
            assert b.login(f"guess{i:02d}", password="Wrong horse 42", solve=False).status_code == 401
        asked = b.login("guess99", password="Wrong horse 42", solve=False)
        assert asked.status_code == 401 and "需要完成一项安全验证" in text(asked)
        checked = b.login("guess99", password="Wrong horse 42")
        assert checked.status_code == 401 and "手机号码/用户名或密码错误" in text(checked)
    finally:
        stop_server(process)


def test_the_flow_on_postgresql(tmp_path, postgres):
    url = postgres.create_database("pages_flow")
    instance = tmp_path / "pg"
    people = prepare(instance, HALLMARK_DATABASE_URL=url)
    process, base = start_server(instance, HALLMARK_DATABASE_URL=url)
    try:
        b = Browser(base)
        assert b.register("pguser").status_code == 303
        assert Browser(base).login("pguser").status_code == 303
        assert len(re.findall(r'name="session"', b.get("/account").text)) == 1
        person = people[3]
        assert b.post("/account/verify", {"name": person["name"], "resident_id": person["resident_id"]}).status_code == 303
        assert "已认证" in text(b.get("/account"))
    finally:
        stop_server(process)
