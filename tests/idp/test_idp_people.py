"""Accounts, passwords, real-name verification and the matter catalogue as services, on SQLite and PostgreSQL."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from core import audit, db, ratelimit
from core.models import AuditEvent
from idp import levels
from idp.context import IdPContext
from idp.i18n import Refusal
from idp.models import Account, IdentityProofing, RegistryPerson, SSOSession
from idp.people import accounts, loginguard, passwords, realname, sessions

PEOPLE = realname.demo_people(6)


@pytest.fixture
def ctx(migrated):
    _, factory = migrated
    return IdPContext(
        sessions=factory, keys=None, issuer="https://id.test", lookup_key=b"people-test-lookup-key", secret_key=b"people-test-secret-key"
    )


def add(ctx, identifier, password="Correct horse 42", **kw):
    with db.transaction(ctx.sessions) as s:
        return accounts.register(s, identifier=identifier, password=password, **kw)


def refusal(call, *args, **kwargs) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call(*args, **kwargs)
    return caught.value


def audit_text(ctx) -> str:
    with ctx.sessions() as s:
        rows = s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        assert audit.verify(s).ok
    return "\n".join(f"{r.actor} {r.action} {r.target} {r.details}" for r in rows)


# -- identifiers and the password policy -------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, value",
    [
        ("13800138000", "mobile", "13800138000"),
        ("+86 138 0013 8000", "mobile", "13800138000"),
        ("１３８００１３８０００", "mobile", "13800138000"),  # full-width digits from a phone keyboard
        ("Alice_01", "username", "alice_01"),
        ("li.si-2", "username", "li.si-2"),
    ],
)
def test_identifiers_are_normalised(text, kind, value):
    assert accounts.parse_identifier(text) == accounts.Identifier(kind, value)


@pytest.mark.parametrize(
    "text, code",
    [
        ("12800138000", "bad_mobile"),
        ("1380013800", "bad_mobile"),
        ("ab", "bad_username"),
        ("1abc", "bad_username"),
        ("a" * 33, "bad_username"),
        ("bad name", "bad_username"),
        ("", "identifier_missing"),
    ],
)
def test_malformed_identifiers_are_refused(text, code):
    assert refusal(accounts.parse_identifier, text).code == code


@pytest.mark.parametrize(
    "password, code",
    [
        ("Short1", "password_too_short"),
        ("abcdefghijkl", "password_one_class"),
        ("123456789012", "password_one_class"),
        ("woaini1314", "password_common"),
        ("Password123", "password_common"),
        ("my-wangwu-pass1", "password_contains_name"),
        ("x" * 129 + "1", "password_too_long"),
    ],
)
def test_password_policy_names_the_rule(password, code):
    assert refusal(passwords.check_policy, password, username="wangwu").code == code


def test_password_policy_message_is_clear():
    assert str(refusal(passwords.check_policy, "Short1")) == "The password must be at least 10 characters long."


def test_full_width_password_equals_ascii():
    digest = passwords.hash_password("Ｃｏｒｒｅｃｔ horse 42")
    assert passwords.verify(digest, "Correct horse 42")
    assert digest.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


# -- registration and login ---------------------------------------------------------------------


def test_register_and_login(ctx):
    account = add(ctx, "zhangsan", display_name="张三")
    assert account.display_name == "张三" and account.status == "active"
    mobile = add(ctx, "13912345678")
    assert mobile.username is None and mobile.display_name == "139****5678"
    assert accounts.authenticate(ctx, "ZhangSan", "Correct horse 42", ip="10.0.0.1").id == account.id
    assert accounts.authenticate(ctx, "139 1234 5678", "Correct horse 42", ip="10.0.0.1").id == mobile.id
    assert refusal(add, ctx, "zhangsan").code == "username_taken"
    assert refusal(add, ctx, "+8613912345678").code == "mobile_taken"
    text = audit_text(ctx)
    assert "Correct horse" not in text and "13912345678" not in text


def test_unknown_account_and_wrong_password_look_the_same(ctx):
    add(ctx, "lisi")
    wrong = refusal(accounts.authenticate, ctx, "lisi", "Wrong horse 42", ip="10.0.0.2")
    unknown = refusal(accounts.authenticate, ctx, "nobody", "Wrong horse 42", ip="10.0.0.2")
    assert (wrong.code, str(wrong)) == (unknown.code, str(unknown)) == ("wrong_credentials", "Wrong mobile number/username or password.")
    started = time.perf_counter()
    refusal(accounts.authenticate, ctx, "nobody2", "x", ip="10.0.0.3")
    unknown_time = time.perf_counter() - started
    started = time.perf_counter()
    refusal(accounts.authenticate, ctx, "lisi", "x", ip="10.0.0.3")
    known_time = time.perf_counter() - started
    assert unknown_time > 0.4 * known_time  # the dummy argon2 check runs for unknown accounts


def _solved(ctx, name: str, ip: str) -> str:
    """What the login page's script sends: the challenge this attempt needs, solved (idp.people.loginguard)."""
    maxnumber, _ = accounts.login_needs(ctx, name, ip)
    return loginguard.solve(loginguard.issue(ctx, maxnumber)) if maxnumber else ""


def test_no_lockout_a_challenge_after_failures(ctx):
    """Wrong passwords no longer lock an account (anyone could lock anyone out): they make the next attempt need a
    solved proof-of-work challenge, and the right password with one always gets in."""
    account = add(ctx, "wangwu")
    free = ctx.settings.login_free_failures
    for n in range(free + 3):
        wrong = refusal(accounts.authenticate, ctx, "wangwu", "nope", ip=f"10.0.1.{n}", proof=_solved(ctx, "wangwu", f"10.0.1.{n}"))
        assert wrong.code == "wrong_credentials"
    asked = refusal(accounts.authenticate, ctx, "wangwu", "Correct horse 42", ip="10.0.1.99")
    assert asked.code == "challenge_required" and asked.status == 401
    assert (
        accounts.authenticate(ctx, "wangwu", "Correct horse 42", ip="10.0.1.99", proof=_solved(ctx, "wangwu", "10.0.1.99")).id == account.id
    )
    with ctx.sessions() as s:
        assert s.get(Account, account.id).locked_until is None
    assert "idp.account.locked" not in audit_text(ctx)


def test_failures_from_one_address_challenge_it_for_every_name(ctx):
    add(ctx, "zhaoliu")
    for n in range(ctx.settings.login_free_failures):
        assert refusal(accounts.authenticate, ctx, f"a-{n}", "x", ip="10.0.2.1").code == "wrong_credentials"
    assert refusal(accounts.authenticate, ctx, "zhaoliu", "Correct horse 42", ip="10.0.2.1").code == "challenge_required"
    assert accounts.authenticate(ctx, "zhaoliu", "Correct horse 42", ip="10.0.2.2")  # another address is unaffected


def test_the_login_counts_are_shared_by_every_worker(ctx):
    """Two workers (each its own IdPContext cache, one database) count one set of failures per address."""
    from dataclasses import replace

    add(ctx, "qianba")
    other_worker = replace(ctx, cache={})
    for n in range(ctx.settings.login_free_failures):
        worker = ctx if n % 2 else other_worker
        assert refusal(accounts.authenticate, worker, f"nobody-{n}", "x", ip="10.0.3.1").code == "wrong_credentials"
    for worker in (ctx, other_worker):
        assert refusal(accounts.authenticate, worker, "qianba", "Correct horse 42", ip="10.0.3.1").code == "challenge_required"


def test_hash_is_upgraded_when_parameters_change(ctx):
    account = add(ctx, "sunqi")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("Correct horse 42")
    with db.transaction(ctx.sessions) as s:
        s.get(Account, account.id).password_hash = weak
    accounts.authenticate(ctx, "sunqi", "Correct horse 42", ip="10.0.3.1")
    with ctx.sessions() as s:
        assert s.get(Account, account.id).password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "idp.account.password_rehashed" in audit_text(ctx)


def test_password_change_ends_other_sessions(ctx):
    account = add(ctx, "zhouba")
    with db.transaction(ctx.sessions) as s:
        here = sessions.start(s, s.get(Account, account.id), {"pwd"}, ip="10.0.4.1").sid
        there = sessions.start(s, s.get(Account, account.id), {"pwd"}, ip="10.0.4.2").sid
    with db.transaction(ctx.sessions) as s:
        assert (
            refusal(accounts.change_password, s, account.id, "Wrong horse 1", "New horse 4242", keep_sid=here).code
            == "wrong_current_password"
        )
    with db.transaction(ctx.sessions) as s:
        assert refusal(accounts.change_password, s, account.id, "Correct horse 42", "short", keep_sid=here).code == "password_too_short"
    with db.transaction(ctx.sessions) as s:
        assert accounts.change_password(s, account.id, "Correct horse 42", "New horse 4242", keep_sid=here) == 1
    with ctx.sessions() as s:
        assert sessions.current(s, here) is not None and sessions.current(s, there) is None
    assert refusal(accounts.authenticate, ctx, "zhouba", "Correct horse 42", ip="10.0.4.1").code == "wrong_credentials"
    assert accounts.authenticate(ctx, "zhouba", "New horse 4242", ip="10.0.4.1")
    assert "New horse" not in audit_text(ctx)


def test_disabled_account_is_refused_and_signed_out(ctx):
    account = add(ctx, "wujiu")
    with db.transaction(ctx.sessions) as s:
        sid = sessions.start(s, s.get(Account, account.id), {"pwd"}).sid
    with db.transaction(ctx.sessions) as s:
        accounts.set_status(s, s.get(Account, account.id), "disabled", actor="test")
    disabled = refusal(accounts.authenticate, ctx, "wujiu", "Correct horse 42", ip="10.0.5.1")
    assert disabled.code == "disabled" and disabled.status == 403
    with ctx.sessions() as s:
        assert sessions.current(s, sid) is None


# -- real-name verification online -------------------------------------------------------------


@pytest.fixture
def registry(ctx):
    report = realname.import_people(ctx, PEOPLE, actor="test", source="demo")
    assert report.added == len(PEOPLE)
    return realname.EmbeddedRegistry(ctx.sessions, ctx.lookup_key)


def test_online_verification_binds_and_raises_the_level(ctx, registry):
    account = add(ctx, "chenyi")
    with db.transaction(ctx.sessions) as s:
        sid = sessions.start(s, s.get(Account, account.id), {"pwd"}).sid
    person = PEOPLE[0]
    row = realname.verify_online(ctx, account.id, f" {person.name} ", person.resident_id.lower(), ip="10.1.0.1")
    assert row.method == "registry" and row.source == "embedded"
    assert row.resident_id_masked == person.resident_id[:3] + "*" * 11 + person.resident_id[-4:]
    with ctx.sessions() as s:
        assert s.get(SSOSession, sid).acr == 2
        proofing = s.get(IdentityProofing, account.id)
        assert person.resident_id not in (proofing.resident_id_hash, proofing.resident_id_masked)
    assert refusal(realname.verify_online, ctx, account.id, person.name, person.resident_id).code == "already_verified"
    text = audit_text(ctx)
    assert "idp.proofing.verified" in text and person.resident_id not in text


def test_middle_dot_variants_match(ctx, registry):
    account = add(ctx, "ayguli")
    person = PEOPLE[3]
    assert "·" in person.name
    realname.verify_online(ctx, account.id, person.name.replace("·", "•"), person.resident_id)


def test_wrong_name_is_not_verified(ctx, registry):
    account = add(ctx, "chener")
    person = PEOPLE[1]
    refused = refusal(realname.verify_online, ctx, account.id, "张冒名", person.resident_id)
    assert refused.code == "not_confirmed" and "does not confirm this name and ID number" in str(refused)
    with ctx.sessions() as s:
        assert s.get(IdentityProofing, account.id) is None
    assert "idp.proofing.failed" in audit_text(ctx)


def test_bad_checksum_gives_the_reason(ctx, registry):
    account = add(ctx, "chensan")
    good = PEOPLE[1].resident_id
    bad = good[:-1] + ("1" if good[-1] != "1" else "2")
    refused = refusal(realname.verify_online, ctx, account.id, PEOPLE[1].name, bad)
    assert refused.code == "resident_id_checksum" and "check digit" in str(refused)
    assert refusal(realname.verify_online, ctx, account.id, "某人", "11010119900307").code == "resident_id_length"
    assert refusal(realname.verify_online, ctx, account.id, "某人", "110101199013070012").code == "resident_id_birth_date"
    assert refusal(realname.verify_online, ctx, account.id, "", good).code == "name_missing"


def test_one_resident_id_binds_one_account(ctx, registry):
    first, second = add(ctx, "first1"), add(ctx, "second2")
    person = PEOPLE[2]
    realname.verify_online(ctx, first.id, person.name, person.resident_id)
    refused = refusal(realname.verify_online, ctx, second.id, person.name, person.resident_id)
    assert refused.code == "already_bound" and refused.status == 409
    assert str(refused).startswith("This resident ID is already bound to another account.")
    with ctx.sessions() as s:
        assert s.get(IdentityProofing, second.id) is None
    text = audit_text(ctx)
    assert "idp.proofing.refused" in text and first.id in text and person.resident_id not in text


def test_deceased_or_unknown_people_are_not_confirmed(ctx, registry):
    account = add(ctx, "chensi")
    person = PEOPLE[4]
    realname.import_registry(ctx, io.StringIO(f"{person.name},{person.resident_id},deceased\n"), actor="test")
    assert refusal(realname.verify_online, ctx, account.id, person.name, person.resident_id).code == "not_confirmed"
    stranger = realname.demo_people(40)[-1]
    assert refusal(realname.verify_online, ctx, account.id, stranger.name, stranger.resident_id).code == "not_confirmed"


def test_failed_checks_are_rate_limited_per_account(ctx, registry):
    account = add(ctx, "chenwu")
    ctx.cache["idp.realname.check.limiter"] = ratelimit.SharedBucket(ctx.sessions, "test.realname", 2, 0.0001)
    for _ in range(2):
        refusal(realname.verify_online, ctx, account.id, "冒名", PEOPLE[5].resident_id)
    limited = refusal(realname.verify_online, ctx, account.id, PEOPLE[5].name, PEOPLE[5].resident_id)
    assert limited.code == "rate_limited" and limited.status == 429


class _Registry(http.server.BaseHTTPRequestHandler):
    mode = "match"
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        if self.mode == "slow":
            time.sleep(1.5)
        if self.mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        answer = b"not json" if self.mode == "garbage" else json.dumps({"match": self.mode == "match", "status": "normal"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_registry():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/verify"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["error", "garbage", "slow", "down"])
def test_http_registry_failures_are_not_verified(ctx, http_registry, mode):
    _Registry.mode = mode
    url = "http://127.0.0.1:1/verify" if mode == "down" else http_registry
    account = add(ctx, f"http-{mode}")
    person = PEOPLE[0]
    refused = refusal(
        realname.verify_online, ctx, account.id, person.name, person.resident_id, registry=realname.HttpRegistry(url, timeout=0.5)
    )
    assert refused.code == "registry_unavailable" and refused.status == 503
    assert "try again" in str(refused)
    with ctx.sessions() as s:
        assert s.get(IdentityProofing, account.id) is None


def test_http_registry_match_and_mismatch(ctx, http_registry):
    ctx.registry_url = http_registry
    assert isinstance(realname.registry_for(ctx), realname.HttpRegistry)
    person = PEOPLE[1]
    _Registry.mode, _Registry.seen = "mismatch", []
    account = add(ctx, "httpuser")
    assert refusal(realname.verify_online, ctx, account.id, person.name, person.resident_id).code == "not_confirmed"
    _Registry.mode = "match"
    row = realname.verify_online(ctx, account.id, person.name, person.resident_id)
    assert row.source == "http"
    assert _Registry.seen[-1] == {"name": person.name, "resident_id": person.resident_id}


# -- at the counter -------------------------------------------------------------------------------


def test_counter_verification(ctx):
    clerk = add(ctx, "clerk01", roles=("clerk",))
    add(ctx, "notclerk")
    resident = add(ctx, "13700001111")
    with db.transaction(ctx.sessions) as s:
        sid = sessions.start(s, s.get(Account, resident.id), {"pwd"}).sid
    person = PEOPLE[5]
    kwargs = {
        "account": "13700001111",
        "resident_id": person.resident_id,
        "name": person.name,
        "location": "市民中心 3号窗口",
        "document": "resident-card",
    }
    assert refusal(realname.verify_at_counter, ctx, clerk="notclerk", **kwargs).code == "not_a_clerk"
    assert refusal(realname.verify_at_counter, ctx, clerk="nobody", **kwargs).status == 403
    assert refusal(realname.verify_at_counter, ctx, clerk="clerk01", **{**kwargs, "account": "clerk01"}).code == "own_account"
    assert refusal(realname.verify_at_counter, ctx, clerk="clerk01", **{**kwargs, "document": "library-card"}).code == "bad_document"
    assert refusal(realname.verify_at_counter, ctx, clerk="clerk01", **{**kwargs, "location": " "}).code == "location_missing"
    assert refusal(realname.verify_at_counter, ctx, clerk="clerk01", **{**kwargs, "account": "ghost"}).status == 404
    target, row = realname.verify_at_counter(ctx, clerk="clerk01", **kwargs)
    assert target.id == resident.id
    assert (row.method, row.source, row.location, row.document) == ("counter", clerk.id, "市民中心 3号窗口", "resident-card")
    with ctx.sessions() as s:
        assert s.get(SSOSession, sid).acr == 2
    other = add(ctx, "latecomer")
    assert refusal(realname.verify_at_counter, ctx, clerk="clerk01", **{**kwargs, "account": "latecomer"}).code == "already_bound"
    with ctx.sessions() as s:
        assert s.get(IdentityProofing, other.id) is None
    text = audit_text(ctx)
    assert "not an active clerk" in text and '"method":"counter"' in text and person.resident_id not in text


# -- the embedded registry's import ----------------------------------------------------------------


def test_registry_import_reports_bad_rows_by_line(ctx):
    p = PEOPLE
    bad_check = p[1].resident_id[:-1] + ("1" if p[1].resident_id[-1] != "1" else "2")
    text = (
        "\n".join(
            [
                "name,resident_id,status",
                f"{p[0].name},{p[0].resident_id}",
                f"{p[1].name},{bad_check}",
                "",
                f"{p[2].name},{p[2].resident_id},gone",
                f",{p[3].resident_id}",
                f"{p[4].name},{p[4].resident_id},normal,extra",
                f"{p[5].name},{p[0].resident_id}",
                f"{p[5].name},{p[5].resident_id},deceased",
            ]
        )
        + "\n"
    )
    report = realname.import_registry(ctx, io.StringIO(text), actor="test")
    assert (report.rows, report.added) == (7, 2)
    reasons = {bad.line: bad.reason for bad in report.bad}
    assert sorted(reasons) == [3, 5, 6, 7, 8]
    assert "check character" in reasons[3] and p[1].resident_id[:3] + "*" in reasons[3]
    assert "status must be one of" in reasons[5]
    assert "name is empty" in reasons[6]
    assert "expected 2 or 3 columns" in reasons[7]
    assert "same ID as line 2" in reasons[8]
    for person in p:
        assert person.resident_id not in " ".join(reasons.values())
    again = realname.import_registry(ctx, io.StringIO(text), actor="test")
    assert (again.added, again.updated, again.unchanged) == (0, 0, 2)
    renamed = realname.import_registry(ctx, io.StringIO(f"{p[0].name}改,{p[0].resident_id}\n"), actor="test")
    assert renamed.updated == 1
    with ctx.sessions() as s:
        assert s.scalar(select(RegistryPerson).where(RegistryPerson.status == "deceased")) is not None


def test_registry_import_rejects_a_wrong_header(ctx):
    report = realname.import_registry(ctx, io.StringIO("name,id\n张三,1\n"), actor="test")
    assert report.bad[0].line == 1 and "header" in report.bad[0].reason and report.added == 0


def test_demo_people_are_valid_and_stable():
    from core.identifiers import validate_resident_id

    first = realname.demo_people(30)
    assert first[:6] == PEOPLE
    assert len({p.resident_id for p in first}) == 30
    for person in first:
        rid = validate_resident_id(person.resident_id)
        assert rid.sex == ("male" if int(person.resident_id[16]) % 2 else "female")
    assert "*" in repr(first[0])


# -- the matter catalogue --------------------------------------------------------------------------


def test_matter_catalogue(ctx):
    with db.transaction(ctx.sessions) as s:
        row = levels.set_matter(s, "marriage-registration", level=3, name="婚姻登记", department="民政局", actor="test")
        assert levels.matter_json(row)["acr"] == "urn:hallmark:loa:3"
    with db.transaction(ctx.sessions) as s:
        levels.set_matter(s, "marriage-registration", level=2, actor="test")  # name kept
        assert refusal(levels.set_matter, s, "new-one", level=2, actor="test").code == "name_missing"
        assert refusal(levels.set_matter, s, "x", level=4, name="n", actor="test").code == "bad_level"
        assert refusal(levels.set_matter, s, "x", level=0, name="n", actor="test").code == "bad_level"
        assert refusal(levels.set_matter, s, "bad code!", level=1, name="n", actor="test").code == "bad_code"
    with ctx.sessions() as s:
        row = levels.matter(s, "marriage-registration")
        assert (row.name, row.level, row.department) == ("婚姻登记", 2, "民政局")
        assert levels.matter(s, "../etc") is None
    text = audit_text(ctx)
    assert text.count("idp.matter.set") == 2 and '"before":{"department":"民政局","level":3' in text
