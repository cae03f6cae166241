"""Clients and matters over HTTP, signed in through the real IdP: a system administrator registers a hall with a redirect
URI and a standing licence grant, rotates its secret (shown once; the old one stops working), edits and removes it, and
changes a matter's level; bad input is refused with nothing written; other roles are refused the pages (403).
"""

from __future__ import annotations

import re
import uuid

import pytest
import requests
from sqlalchemy import func, select

from admin import roles
from idp import levels
from idp.models import Client
from licenses import demo
from licenses.models import Grant
from tests.admin.conftest import DEPT_A
from tests.admin.test_licences_console import enter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def catalogue(console):
    demo.prepare_catalogue(console.services["licenses"], actor="test:clients-console")


def _clients(console) -> int:
    with console.services.sessions() as db:
        return db.scalar(select(func.count()).select_from(Client))


def _token(console, client_id: str, secret: str) -> int:
    """The token endpoint's answer to a client-credentials request with this secret (200 or 401)."""
    answer = requests.post(console.base + "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret), timeout=30)
    return answer.status_code


def test_a_system_administrator_registers_a_client_with_a_grant_rotates_its_secret_and_sets_a_matters_level(console, catalogue):
    admin = console.browser(console.person((roles.SYSTEM_ADMIN, None), usb=False, name="系统甲"))
    enter(admin)
    assert 'href="/admin/clients"' in admin.get("/admin").text
    name = f"测试办事大厅-{uuid.uuid4().hex[:6]}"
    before = _clients(console)

    # Bad input: a plain-http redirect URI elsewhere, and no name; refused, nothing written.
    bad = admin.post(
        "/admin/clients", {"name": name, "kind": "hall", "redirect_uris": "http://hall.example.cn/cb"}, csrf_from="/admin/clients"
    )
    assert bad.status_code == 422 and "URI 不可接受：必须是完整的 https:// 地址" in bad.text and "plain http" in bad.text
    assert 'value="' + name + '"' in bad.text  # the form keeps what was typed
    nameless = admin.post("/admin/clients", {"name": "", "redirect_uris": "https://hall.example.cn/cb"}, csrf_from="/admin/clients")
    assert nameless.status_code == 422
    forged = admin.http.post(
        admin.url("/admin/clients"), data={"name": name, "redirect_uris": "https://hall.example.cn/cb", "csrf_token": "x"}
    )
    assert forged.status_code in (400, 403)
    assert _clients(console) == before

    # Registered: the secret is on this answer only.
    made = admin.post(
        "/admin/clients",
        {"name": name, "kind": "hall", "redirect_uris": "https://hall.example.cn/callback", "scopes": "openid profile",
         "backchannel_logout_uri": "https://hall.example.cn/logout"},
        csrf_from="/admin/clients",
    )  # fmt: skip
    assert made.status_code == 200, made.text[-2000:]
    client_id = re.search(r'id="client-id">([^<]+)<', made.text).group(1)
    first_secret = re.search(r'id="secret">([^<]+)<', made.text).group(1)
    assert made.headers["Cache-Control"] == "no-store"
    with console.services.sessions() as db:
        row = db.get(Client, client_id)
        assert row.name == name and "https://hall.example.cn/callback" in row.redirect_uris
        assert row.backchannel_logout_uri == "https://hall.example.cn/logout" and row.secret_hash and first_secret not in row.secret_hash
    assert first_secret not in admin.get(f"/admin/clients/{client_id}").text  # shown once
    assert console.audit("idp.client.added", client_id)

    # A standing grant: an unknown type is refused, a known one added (and listed), then ended.
    unknown = admin.post(f"/admin/clients/{client_id}/grants", {"type": "11100000000013952E999", "mode": "compare"},
                         csrf_from=f"/admin/clients/{client_id}")  # fmt: skip
    assert unknown.status_code == 404 and "没有这种证照类型" in unknown.text
    added = admin.post(
        f"/admin/clients/{client_id}/grants",
        {"type": demo.DRIVING_LICENCE, "mode": "compare", "matters": "机动车驾驶证补领"},
        csrf_from=f"/admin/clients/{client_id}",
    )
    assert added.status_code == 303
    with console.services.sessions() as db:
        grants = list(db.scalars(select(Grant).where(Grant.client_id == client_id)))
        assert [(g.type_code, g.mode, g.revoked_at) for g in grants] == [(demo.DRIVING_LICENCE, "compare", None)]
    assert f'data-grant="{grants[0].id}"' in admin.get(f"/admin/clients/{client_id}").text

    # Editing: a bad redirect URI is refused and changes nothing; a good edit is saved.
    wrong = admin.post(f"/admin/clients/{client_id}", {"name": name, "redirect_uris": "https://hall.example.cn/cb#frag", "scopes": "openid"},
                       csrf_from=f"/admin/clients/{client_id}")  # fmt: skip
    assert wrong.status_code == 422 and "不得含片段" in wrong.text and "fragment" in wrong.text
    edited = admin.post(
        f"/admin/clients/{client_id}",
        {"name": name + "（新）", "redirect_uris": "https://hall.example.cn/callback\nhttps://hall.example.cn/cb2", "scopes": "openid profile",
         "first_party": "1"},
        csrf_from=f"/admin/clients/{client_id}",
    )  # fmt: skip
    assert edited.status_code == 303
    with console.services.sessions() as db:
        row = db.get(Client, client_id)
        assert row.name == name + "（新）" and "cb2" in row.redirect_uris and row.first_party and row.backchannel_logout_uri is None
    assert console.audit("idp.client.changed", client_id)

    # The secret rotated: shown once, the old one stops working at the token endpoint (the client has no
    # client_credentials grant, so the token endpoint's answer tells a known secret (400) from a wrong one (401)).
    rotated = admin.post(f"/admin/clients/{client_id}/secret", {}, csrf_from=f"/admin/clients/{client_id}")
    new_secret = re.search(r'id="secret">([^<]+)<', rotated.text).group(1)
    assert new_secret != first_secret
    with console.services.sessions() as db:
        from idp.oidc import clients as oidc_clients

        stored = db.get(Client, client_id).secret_hash
        assert stored == oidc_clients.secret_hash(console.services["idp"].secret_key, client_id, new_secret)
    assert _token(console, client_id, new_secret) == 400  # known client, a grant it does not have
    assert _token(console, client_id, first_secret) == 401
    assert console.audit("idp.client.secret_replaced", client_id)

    ended = admin.post(f"/admin/clients/{client_id}/grants/remove", {"grant": str(grants[0].id)}, csrf_from=f"/admin/clients/{client_id}")
    assert ended.status_code == 303
    with console.services.sessions() as db:
        assert db.get(Grant, grants[0].id).revoked_at is not None

    # A matter's level: a bad level is refused, a good one saved (and audited by idp.levels).
    code = f"test-matter-{uuid.uuid4().hex[:6]}"
    with console.services.sessions() as db, db.begin():
        levels.set_matter(db, code, level=1, name="测试事项", department="测试局", actor="test")
    assert f'data-matter="{code}"' in admin.get("/admin/matters").text
    bad_level = admin.post("/admin/matters", {"code": code, "level": "7"}, csrf_from="/admin/matters")
    assert bad_level.status_code == 400
    saved = admin.post("/admin/matters", {"code": code, "level": "3"}, csrf_from="/admin/matters")
    assert saved.status_code == 303
    with console.services.sessions() as db:
        assert levels.matter(db, code).level == 3
    assert console.audit("idp.matter.set", code)

    removed = admin.post(f"/admin/clients/{client_id}/remove", {}, csrf_from=f"/admin/clients/{client_id}")
    assert removed.status_code == 303
    with console.services.sessions() as db:
        assert db.get(Client, client_id) is None


def test_a_department_administrator_sets_only_their_departments_matters_and_others_are_refused_clients(console, catalogue):
    from signing.models import Seal

    with console.services.sessions() as db:
        department_name = db.scalars(select(Seal.department).where(Seal.credit_code == DEPT_A)).first()
    own, other = f"own-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    with console.services.sessions() as db, db.begin():
        levels.set_matter(db, own, level=1, name="本部门事项", department=department_name, actor="test")
        levels.set_matter(db, other, level=1, name="他部门事项", department="别的局", actor="test")
    head = console.browser(console.person((roles.DEPARTMENT_ADMIN, DEPT_A), usb=False, name="部门甲"))
    enter(head)
    page = head.get("/admin/matters")
    assert page.status_code == 200 and f'data-matter="{own}"' in page.text and f'data-matter="{other}"' not in page.text
    assert head.post("/admin/matters", {"code": own, "level": "2"}, csrf_from="/admin/matters").status_code == 303
    assert head.post("/admin/matters", {"code": other, "level": "3"}, csrf_from="/admin/matters").status_code == 403
    with console.services.sessions() as db:
        assert (levels.matter(db, own).level, levels.matter(db, other).level) == (2, 1)
    # Clients are the system administrator's alone; a licence officer or clerk is refused both sections.
    assert head.get("/admin/clients").status_code == 403
    assert head.post("/admin/clients", {"name": "越权", "redirect_uris": "https://x.example.cn/cb"}).status_code == 403
    clerk = console.browser(console.person((roles.COUNTER_CLERK, DEPT_A), usb=False, name="窗口丙"))
    enter(clerk)
    for path in ("/admin/clients", "/admin/matters"):
        assert clerk.get(path).status_code == 403, path
