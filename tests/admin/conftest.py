"""The staff console's test world: an initialised instance served by ``hallmark serve``, staff who log in through its IdP.

``console`` is built once per session: an instance copy, its services in this
process (to set up people, seals and certificates, and to check the database
independently), and a real server on it. Staff are real-name verified accounts;
each may also have a USB key: a key generated in the test session's USB token
with a person-auth certificate from the instance's own CA, so that a certificate
login (level 3) at the server's login page works as it does for a person.

:class:`Browser` is a staff member's browser played with ``requests``: it follows
the console's redirects to the identity provider's pages, fills in the password
form, answers the USB-key challenge the way the login page's script does, and
comes back through ``/admin/callback``.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from core import db as core_db
from core.identifiers import generate_credit_code, organisation_code_check_char
from tests.certlogin_fixtures import DATA_CSRF, add_person, issue, signed_fields, usb_key  # noqa: F401 - usb_key is a fixture
from tests.conftest import free_port, initialised_copy, pkcs11_module_for, start_server, stop_server

PASSWORD = "Camphor-tree 2026"  # tests.certlogin_fixtures.add_person's
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def department_code(n: int) -> str:
    organisation = f"D{n:07d}"
    return generate_credit_code("11350100" + organisation + organisation_code_check_char(organisation))


DEPT_A, DEPT_B = department_code(1), department_code(2)


@dataclass
class Person:
    account_id: str
    username: str
    resident_id: str
    name: str
    signer: object = None  # the USB key's private key (in the USB token)
    certificate: object = None


@dataclass
class Console:
    instance: Path
    services: object
    base: str
    usb: object
    server: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def admin(self):
        return self.services["admin"]

    def person(self, *roles_: tuple[str, str | None], usb: bool = True, name: str = "测试员") -> Person:
        """A real-name verified account holding ``roles_`` (role, department); with ``usb``, a USB key and certificate too."""
        from admin import roles
        from idp.people import privacy

        found = add_person(self.services.sessions, self.services["idp"].lookup_key, name=name)
        person = Person(found.account_id, found.username, found.resident_id, name)
        with core_db.transaction(self.services.sessions) as db:
            # As at registration: the privacy notice in force is accepted, so the IdP's login goes straight on.
            privacy.accept(db, self.services["idp"], person.account_id, privacy.current_version(self.services["idp"]))
            for role, department in roles_:
                roles.grant(db, person.account_id, role, department, actor="test")
        if usb:
            person.signer = self.usb.new_key()
            _, person.certificate = issue(self.services["ca"], "person-auth", person.signer, person.resident_id, name=name)
        return person

    def browser(self, person: Person) -> Browser:
        return Browser(self, person)

    def audit(self, action: str, target: str | None = None) -> list:
        from sqlalchemy import select

        from core.models import AuditEvent

        with self.services.sessions() as db:
            query = select(AuditEvent).where(AuditEvent.action == action)
            if target is not None:
                query = query.where(AuditEvent.target == target)
            return list(db.scalars(query))


class Browser:
    """A staff member's browser (``requests``), signing in through the identity provider's own pages."""

    def __init__(self, console: Console, person: Person):
        self.console, self.person, self.base = console, person, console.base
        self.http = requests.Session()

    def url(self, location: str) -> str:
        return urljoin(self.base + "/", location)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.url(path), allow_redirects=False, timeout=30, **kwargs)

    def post(self, path: str, data: dict, *, csrf_from: str | None = None) -> requests.Response:
        """A form POST with the CSRF token of the page ``csrf_from`` (default: ``/admin``)."""
        page = self.get(csrf_from or "/admin")
        token = CSRF.search(page.text)
        return self.http.post(
            self.url(path), data={**({"csrf_token": token.group(1)} if token else {}), **data}, allow_redirects=False, timeout=60
        )

    def follow(self, response: requests.Response, *, usb: bool = False) -> requests.Response:
        """Follow redirects, signing in at the IdP's login page (password, or the USB key with ``usb``) when it asks."""
        for _ in range(15):
            if response.status_code not in (301, 302, 303, 307):
                return response
            location = self.url(response.headers["Location"])
            if location.startswith(self.base + "/login?"):
                response = self._usb_login(location) if usb else self._password_login(location)
                continue
            if location.startswith(self.base + "/login/step-up?"):
                # The IdP asks only for the missing factor (max_age=0 in the second of the last login lands here).
                assert usb, "the IdP asked for a USB key where a password login was expected"
                response = self._usb_login(location, purpose="step-up")
                continue
            response = self.http.get(location, allow_redirects=False, timeout=30)
        raise AssertionError("too many redirects")

    def _password_login(self, location: str) -> requests.Response:
        page = self.http.get(location, timeout=30)
        assert page.status_code == 200, page.text[:300]
        next_url = re.search(r'name="next" value="([^"]*)"', page.text).group(1).replace("&amp;", "&")
        return self.http.post(
            self.base + "/login",
            data={
                "csrf_token": CSRF.search(page.text).group(1),
                "next": next_url,
                "identifier": self.person.username,
                "password": PASSWORD,
            },
            allow_redirects=False,
            timeout=30,
        )

    def _usb_login(self, location: str, purpose: str = "login") -> requests.Response:
        """What the login page's script does with the local agent: a challenge, the key's signature, the post."""
        page = self.http.get(location, timeout=30)
        assert page.status_code == 200 and "data-cert-login" in page.text, page.text[:300]
        csrf = DATA_CSRF.search(page.text).group(1)
        next_url = re.search(r'data-next="([^"]*)"', page.text).group(1).replace("&amp;", "&")
        asked = self.http.post(
            self.base + "/login/cert/challenge",
            data={"csrf_token": csrf, "purpose": purpose},
            headers={"Accept": "application/json"},
            timeout=30,
        )
        assert asked.status_code == 200, asked.text
        fields = signed_fields(asked.json()["challenge"], self.person.signer, self.person.certificate)
        done = self.http.post(
            self.base + "/login/cert",
            data={"csrf_token": csrf, "next": next_url, **fields},
            headers={"Accept": "application/json"},
            timeout=30,
        )
        assert done.status_code == 200, done.text
        response = requests.Response()
        response.status_code, response.headers["Location"] = 303, done.json()["redirect"]
        return response

    def sign_in(self) -> requests.Response:
        """Open the console and sign in with the password (level 2); the console's home page."""
        return self.follow(self.get("/admin"))

    def confirm_with_usb_key(self, next_path: str) -> requests.Response:
        """The re-authentication before a critical action (acr 3, max_age=0)."""
        return self.follow(self.get("/admin/reauth?next=" + requests.utils.quote(next_path, safe="")), usb=True)


@pytest.fixture(scope="session")
def console(tmp_path_factory, usb_key):
    from hallmark import components, wiring
    from signing import seals

    instance = initialised_copy(tmp_path_factory.mktemp("admin") / "instance")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    module = pkcs11_module_for(instance / "softhsm" / "softhsm2.conf")
    environ = {**os.environ, "HALLMARK_PUBLIC_URL": base, "HALLMARK_PKCS11_MODULE": module}
    services = wiring.build(components.load_settings(instance, environ=environ))
    for code, department in ((DEPT_A, "测试市市场监督管理局"), (DEPT_B, "测试市公安局")):
        seals.add(services["ca"], department=department, credit_code=code, name=f"{department}印章-{uuid.uuid4().hex[:4]}", actor="test")
    world = Console(instance, services, base, usb_key)
    world.server = start_server(instance, workers=2, port=port, log=instance / "server.log")
    yield world
    stop_server(world.server[0])
    services.close()
