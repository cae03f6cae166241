"""Whether an account exists does not show through the login guard, nor through registration beyond its design.

Through the real app (Flask test client) on SQLite and PostgreSQL. The design
(docs/idp.md, "Who has an account"): wrong passwords are counted and challenged the
same way for a name that has no account as for one that has, so the login form
answers an unknown and a known name byte for byte alike (the CSRF token and the
CSP nonce, new on every page, and the name typed, echoed into the form, aside).
Registration says that a name is taken, the one thing a person choosing a name
must learn, and nothing more: only once the password passed the policy (before,
a taken and a free name get the same page), and with the status of any other
refusal of the form.
"""

from __future__ import annotations

import re

from idp.people import accounts
from idp.settings import IdPSettings
from tests.idp.test_idp_oidc_protocol import oidc  # noqa: F401

PRIVACY = IdPSettings().privacy_version  # the privacy notice in force, accepted at registration

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
DATA_CSRF = re.compile(r'data-csrf="[^"]+"')
NONCE = re.compile(r"nonce-[A-Za-z0-9+/=_-]+|nonce=\"[^\"]+\"")
PASSWORD = "Correct horse 42"
KNOWN, UNKNOWN = "knownuser1", "ghostuser1"  # the same length: the echoed name is replaced by one placeholder


def csrf(client, path="/login") -> str:
    found = CSRF.search(client.get(path).get_data(as_text=True))
    assert found
    return found.group(1)


def normalised(response, typed: str) -> tuple[int, str, str]:
    body = response.get_data(as_text=True)
    body = CSRF.sub('name="csrf_token" value="TOKEN"', body)
    body = DATA_CSRF.sub('data-csrf="TOKEN"', NONCE.sub("NONCE", body))
    return response.status_code, response.headers.get("Content-Type", ""), body.replace(typed, "NAME")


def login(world, client, identifier, password="Wrong horse 99"):
    return client.post("/login", data={"identifier": identifier, "password": password, "csrf_token": csrf(client)})


def test_an_unknown_name_is_challenged_like_a_known_one_byte_for_byte(oidc):
    with oidc.tx() as db:
        accounts.register(db, identifier=KNOWN, password=PASSWORD)
    known, unknown = oidc.app.test_client(), oidc.app.test_client()
    free = oidc.ctx.settings.login_free_failures
    for attempt in range(free + 2):
        known.environ_base["REMOTE_ADDR"], unknown.environ_base["REMOTE_ADDR"] = f"10.1.{attempt}.1", f"10.1.{attempt}.2"
        a, b = login(oidc, known, KNOWN), login(oidc, unknown, UNKNOWN)
        assert normalised(a, KNOWN) == normalised(b, UNKNOWN), f"attempt {attempt + 1}: {a.status_code} vs {b.status_code}"
        assert a.status_code == 401, (attempt, a.status_code)
    # Past the free failures both names (and this address) need a solved challenge: the same page for the right password
    a, b = login(oidc, known, KNOWN, PASSWORD), login(oidc, unknown, UNKNOWN, PASSWORD)
    assert a.status_code == 401 and normalised(a, KNOWN) == normalised(b, UNKNOWN)
    assert accounts.login_needs(oidc.ctx, KNOWN, "10.1.1.1") == accounts.login_needs(oidc.ctx, UNKNOWN, "10.1.1.1")


def test_failures_of_an_unknown_name_are_counted_in_the_database_and_audited(oidc):
    free = oidc.ctx.settings.login_free_failures
    for n in range(free):
        try:
            accounts.authenticate(oidc.ctx, "Nobody.Here", "Wrong horse 99", ip=f"10.9.9.{n}")
        except accounts.LoginRefused as exc:
            assert exc.code == "wrong_credentials"
    # another worker (a new refusal from the same database) asks a challenge for the name however it is typed
    try:
        accounts.authenticate(oidc.ctx, "  nobody.here ", "Wrong horse 99", ip="10.9.8.8")
    except accounts.LoginRefused as exc:
        assert (exc.status, exc.code) == (401, "challenge_required")
    else:
        raise AssertionError("a challenged name was let through without a challenge")
    from core.models import AuditEvent

    with oidc.ctx.sessions() as db:
        failed = [e for e in db.query(AuditEvent).order_by(AuditEvent.seq) if e.action == "idp.login.failed"]
    assert [e.target for e in failed] == ["unknown account"] * free


def register(client, identifier, password):
    data = {
        "identifier": identifier,
        "password": password,
        "password2": password,
        "privacy": PRIVACY,
        "csrf_token": csrf(client, "/register"),
    }
    return client.post("/register", data=data)


def test_registration_says_taken_only_after_the_password_passed_and_with_the_status_of_any_refusal(oidc):
    with oidc.tx() as db:
        accounts.register(db, identifier=KNOWN, password=PASSWORD)
    first, second = oidc.app.test_client(), oidc.app.test_client()

    # A password the policy refuses: a taken and a free name get the same page.
    weak_taken, weak_free = register(first, KNOWN, "short"), register(second, UNKNOWN, "short")
    assert weak_taken.status_code == 400
    assert normalised(weak_taken, KNOWN) == normalised(weak_free, UNKNOWN)

    # A good password: the taken name is told so, with the status of every other refusal of the form.
    taken = register(first, KNOWN, PASSWORD)
    assert taken.status_code == weak_taken.status_code == 400
    assert "该用户名已被使用" in taken.get_data(as_text=True)
    free = register(second, UNKNOWN, PASSWORD)
    assert free.status_code == 303
