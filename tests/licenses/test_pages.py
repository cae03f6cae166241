"""The licence library's pages through the real app (Flask test client) on the licence world's instance.

Who may see what: not signed in goes to the login page and back; a person who is
not real-name verified is told so; another holder's licence (or a wrong
identifier) is a 404 like a licence that does not exist; the file is downloaded
by its holder only, and the download is audited. The public pages: the
verification page says revoked in plain words with a 200, a wrong check
character is a readable 422 page; scanned QR payloads, receipts and grants.
"""

from __future__ import annotations

import os
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from core import db as core_db
from core.identifiers import lookup_hash, mask_resident_id
from core.models import AuditEvent
from licenses import accesslog, demo, grants, identifiers, lifecycle, qrpayload, receipts
from tests.conftest import pkcs11_module_for
from tests.licenses.conftest import ACTOR, person_code

FULL_ID = re.compile(r"(?<![0-9A-Za-z.])\d{17}[\dX](?![0-9A-Za-z])")


def text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))


def add_person(world, *, name: str, resident_id: str | None, username: str, password: str = "Correct horse 42") -> str:
    """An account (real-name verified when ``resident_id`` is given) in the identity provider; its id."""
    from idp.models import IdentityProofing
    from idp.people import accounts

    idp = world.services["idp"]
    with core_db.transaction(idp.sessions) as db:
        account = accounts.register(db, identifier=username, password=password, display_name=name)
        if resident_id is not None:
            db.add(
                IdentityProofing(
                    account_id=account.id,
                    resident_id_hash=lookup_hash(idp.lookup_key, "resident_id", resident_id),
                    resident_id_masked=mask_resident_id(resident_id),
                    legal_name=name,
                    method="registry",
                    source="test",
                    verified_at=datetime.now(UTC),
                )
            )
        return account.id


def sign_in(world, client, account_id: str) -> None:
    """Put an SSO session of ``account_id`` (password) into the test client's cookies."""
    from idp.models import Account
    from idp.people import sessions

    idp = world.services["idp"]
    with core_db.transaction(idp.sessions) as db:
        row = sessions.start(db, db.get(Account, account_id), {"pwd"})
        cookie = sessions.cookie_value(idp.secret_key, row.sid, row.secret)
    client.set_cookie(sessions.COOKIE, cookie, domain="localhost")


@pytest.fixture(scope="module")
def app(licence_world):
    from hallmark import components
    from hallmark.app import create_app

    module = pkcs11_module_for(licence_world.instance / "softhsm" / "softhsm2.conf")  # the instance's token, as the world reads it
    environ = {**os.environ, "HALLMARK_PUBLIC_URL": licence_world.base, "HALLMARK_PKCS11_MODULE": module, "HALLMARK_CA_UPKEEP_SECONDS": "0"}
    settings = components.load_settings(licence_world.instance, environ=environ)
    built = create_app(settings)
    yield built
    built.extensions["hallmark.services"].close()


@pytest.fixture(scope="module")
def holder(licence_world):
    """A real-name verified person with a driving licence, and another person with one of their own."""
    n = uuid.uuid4().hex[:8]
    mine = person_code(900 + int(n[:4], 16) % 5000)
    other = person_code(9000 + int(n[4:], 16) % 5000)
    account = add_person(licence_world, name="林晓红", resident_id=mine, username=f"holder{n}")
    licence = licence_world.issue(demo.DRIVING_LICENCE, holder_code=mine, holder_name="林晓红")
    others = licence_world.issue(demo.DRIVING_LICENCE, holder_code=other, holder_name="陈大文")
    return {"account": account, "code": mine, "licence": licence.identifier, "other": others.identifier}


def test_not_signed_in_goes_to_the_login_page_and_back(app):
    client = app.test_client()
    for path in ("/licences", "/licences/access", "/licences/show/1.2.156.3005.2.x"):
        response = client.get(path)
        assert response.status_code == 302, path
        where = urlsplit(response.location)
        assert where.path == "/login" and parse_qs(where.query)["next"] == [path]


def test_a_person_not_verified_is_told_to_verify(app, licence_world):
    client = app.test_client()
    sign_in(licence_world, client, add_person(licence_world, name="王五", resident_id=None, username=f"plain{uuid.uuid4().hex[:8]}"))
    page = client.get("/licences")
    assert page.status_code == 200
    assert "您尚未完成实名认证" in text(page) and 'href="/account/verify"' in page.get_data(as_text=True)


def test_the_holder_sees_their_licences_and_nobody_elses(app, licence_world, holder):
    client = app.test_client()
    sign_in(licence_world, client, holder["account"])
    page = client.get("/licences")
    body = text(page)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert "我的证照" in body and "机动车驾驶证" in body and "有效" in body and "林晓红" in body
    assert mask_resident_id(holder["code"]) in body
    assert holder["licence"] in body and holder["other"] not in body
    assert not FULL_ID.search(page.get_data(as_text=True)), "a full resident ID was sent to the browser"

    for path in (f"/licences/show/{holder['other']}", f"/licences/file/{holder['other']}", "/licences/show/not-an-id"):
        refused = client.get(path)
        assert refused.status_code == 404 and "您名下没有此标识的证照" in text(refused), path
    public = text(app.test_client().get(f"/licences/verify/{holder['licence']}"))
    assert "**红" in public and "林晓红" not in public, "a person's name is masked on the public page"
    broken = holder["licence"][:-1] + ("0" if holder["licence"][-1] != "0" else "1")
    assert client.get(f"/licences/show/{broken}").status_code == 404


def test_the_holder_downloads_the_file_and_it_is_audited(app, licence_world, holder):
    client = app.test_client()
    sign_in(licence_world, client, holder["account"])
    response = client.get(f"/licences/file/{holder['licence']}")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF") and "attachment" in response.headers["Content-Disposition"]
    with licence_world.ctx.sessions() as db:
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.action == "licences.file.downloaded", AuditEvent.target == holder["licence"])
        ).all()
    assert events and events[-1].actor == f"account:{holder['account']}"


def test_show_gives_a_signed_short_lived_qr_code(app, licence_world, holder):
    client = app.test_client()
    sign_in(licence_world, client, holder["account"])
    page = client.get(f"/licences/show/{holder['licence']}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<svg" in html and 'data-seconds="180"' in html
    assert "script-src 'nonce-" in page.headers["Content-Security-Policy"] and "/licences-static/show.js" in html
    with client.get("/licences-static/show.js") as script:
        assert script.status_code == 200 and b"qr-expired" in script.data


def test_the_verification_page_says_revoked_in_plain_words(app, licence_world):
    licence = licence_world.issue(demo.DRIVING_LICENCE)
    client = app.test_client()
    page = client.get(f"/licences/verify/{licence.identifier}")
    assert page.status_code == 200 and 'data-state="valid"' in page.get_data(as_text=True) and "此证照有效" in text(page)
    with core_db.transaction(licence_world.ctx.sessions) as db:
        lifecycle.change_state(db, licence.identifier, "revoke", reason="违法驾驶", actor=ACTOR)
    page = client.get(f"/licences/verify/{licence.identifier}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'class="verdict bad" id="verdict" data-state="revoked"' in html
    assert "已吊销" in text(page) and "发证机关已依法吊销此证照" in text(page)


def test_a_wrong_identifier_is_a_readable_4xx_page(app, licence_world):
    licence = licence_world.issue(demo.DRIVING_LICENCE)
    last = licence.identifier[-1]
    wrong = licence.identifier[:-1] + ("A" if last != "A" else "B")
    client = app.test_client()
    page = client.get(f"/licences/verify/{wrong}", headers={"Accept": "text/html"})
    assert page.status_code == 422 and page.mimetype == "text/html"
    assert "这不是有效的证照标识" in text(page) and "check character" in text(page)
    malformed = client.get("/licences/verify/1.2.156.3005.2." + "X" * 20)
    assert malformed.status_code == 422 and "这不是有效的证照标识" in text(malformed)
    nobody = identifiers.make(licence.type_code, licence.issuer_code, "2026NOSUCHONE")
    unknown = client.get(f"/licences/verify/{nobody}")
    assert unknown.status_code == 404 and "证照库中没有此标识的证照" in text(unknown)
    assert client.get("/licences/verify?id=" + licence.identifier).status_code == 303


def test_a_scanned_qr_payload_is_checked_with_the_live_status(app, licence_world):
    ctx = licence_world.ctx
    licence = licence_world.issue(demo.DRIVING_LICENCE)
    facts = {
        "identifier": licence.identifier,
        "type_code": licence.type_code,
        "issuer_code": licence.issuer_code,
        "holder_masked": licence.holder_masked,
        "holder_name": licence.holder_name,
        "valid_from": licence.valid_from,
        "valid_until": licence.valid_until,
    }
    client = app.test_client()
    landing = client.get("/licences/v")
    assert landing.status_code == 200 and "/licences-static/offline.js" in landing.get_data(as_text=True)

    shown = qrpayload.payload(ctx, **facts, kind="show", lifetime=timedelta(minutes=3))
    page = client.post("/licences/v", data={"code": shown})
    assert page.status_code == 200 and 'data-kind="show"' in page.get_data(as_text=True)
    assert "二维码真实" in text(page) and 'data-state="valid"' in page.get_data(as_text=True)

    # A file's code for a licence revoked since: the code is genuine, the library says revoked.
    printed = qrpayload.payload(ctx, **facts, kind="file", lifetime=timedelta(days=3650))
    with core_db.transaction(ctx.sessions) as db:
        lifecycle.change_state(db, licence.identifier, "revoke", reason="吊销", actor=ACTOR)
    revoked = client.post("/licences/v", data={"code": printed})
    html = revoked.get_data(as_text=True)
    assert revoked.status_code == 200 and 'data-kind="file"' in html and "印在证照文件上" in text(revoked)
    assert 'class="verdict bad" id="verdict" data-state="revoked"' in html and "已吊销" in text(revoked)
    assert licence.holder_name not in text(revoked) and "*" * (len(licence.holder_name) - 1) + licence.holder_name[-1] in text(revoked)

    old = qrpayload.payload(ctx, **facts, kind="show", lifetime=timedelta(minutes=3), now=datetime.now(UTC) - timedelta(hours=1))
    expired = client.post("/licences/v", data={"code": old})
    assert expired.status_code == 422 and "此二维码已过期" in text(expired)
    token = qrpayload.token_of(shown)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    refused = client.post("/licences/v", data={"code": forged})
    assert refused.status_code == 422 and "不是电子证照库签发的" in text(refused)


def test_who_looked_and_the_receipt_check(app, licence_world, holder):
    ctx = licence_world.ctx
    hashed = lookup_hash(ctx.lookup_key, "resident_id", holder["code"])
    purpose = f"核验驾驶资格 {secrets.token_hex(3)}"
    with core_db.transaction(ctx.sessions) as db:
        entry = accesslog.append(
            db,
            client_id="county-hall",
            holder_hash=hashed,
            identifier=holder["licence"],
            type_code=demo.DRIVING_LICENCE,
            route="grant",
            mode="compare",
            purpose=purpose,
            matter="MATTER-001",
            fields=["vehicle_class"],
            result="match",
        )
    receipt = receipts.issue(ctx, entry)
    client = app.test_client()
    sign_in(licence_world, client, holder["account"])
    page = client.get("/licences/access")
    body = text(page)
    assert page.status_code == 200 and "谁查看了我的证照" in body
    assert purpose in body and "county-hall" in body and "比对信息" in body and "依据常设授权" in body and entry.hash in body
    assert f"/licences/receipts/check?entry={entry.hash}" in page.get_data(as_text=True)

    stranger = app.test_client()
    sign_in(
        licence_world, stranger, add_person(licence_world, name="赵六", resident_id=person_code(77777), username=f"s{uuid.uuid4().hex[:8]}")
    )
    assert purpose not in text(stranger.get("/licences/access"))

    checked = client.post(f"/licences/receipts/check?entry={entry.hash}", data={"receipt": receipt})
    assert checked.status_code == 200 and 'data-outcome="ok"' in checked.get_data(as_text=True) and "真实有效" in text(checked)
    forged = client.post("/licences/receipts/check", data={"receipt": receipt[:-3] + "abc"})
    assert forged.status_code == 422 and "不是电子证照库签发的" in text(forged)
    junk = client.post("/licences/receipts/check", data={"receipt": "not a receipt"})
    assert junk.status_code == 422 and "这不是使用回执" in text(junk)


def test_the_public_list_of_standing_grants(app, licence_world):
    client_id = f"grants-page-{secrets.token_hex(3)}"
    with core_db.transaction(licence_world.ctx.sessions) as db:
        grants.add(db, client_id=client_id, type_code=demo.BUSINESS_LICENCE, mode="compare", matters=["MATTER-9"], actor=ACTOR)
    page = app.test_client().get("/licences/grants")
    body = text(page)
    assert page.status_code == 200 and client_id in body and "营业执照" in body and "仅比对信息" in body and "MATTER-9" in body


def test_every_string_of_the_pages_has_a_chinese_translation():
    from pathlib import Path

    from tests.catalogue_checks import bare_percents, gaps, msgids

    package = Path(__file__).resolve().parents[2] / "licenses"
    templates = sorted((package / "templates" / "licenses").glob("*.html"))
    wanted = msgids([package / "pages.py"], templates)
    assert len(wanted) > 100
    assert gaps(package / "translations", wanted) == [], "run pybabel extract/update, see core/web/i18n.py"
    assert bare_percents(templates) == []


def test_a_representative_sees_the_enterprises_licences_in_their_own_section(app, licence_world, holder):
    from idp.people import enterprises
    from tests.licenses.conftest import enterprise_code

    credit_code = enterprise_code(600000 + secrets.randbelow(300000))
    with core_db.transaction(licence_world.services["idp"].sessions) as db:
        enterprises.add(db, credit_code=credit_code, name="示范茶业有限公司", representative=holder["account"], actor=ACTOR)
    business = licence_world.issue(demo.BUSINESS_LICENCE, holder_code=credit_code, holder_name="示范茶业有限公司")
    client = app.test_client()
    sign_in(licence_world, client, holder["account"])
    page = client.get("/licences")
    html = page.get_data(as_text=True)
    sections = re.findall(r'<section class="card holder" id="(holder-\d)"', html)
    assert sections == ["holder-1", "holder-2"] and 'href="#holder-2"' in html
    enterprise = html[html.index('id="holder-2"') :]
    assert "示范茶业有限公司" in enterprise and business.identifier in enterprise and "营业执照" in enterprise
    assert credit_code not in html and business.holder_masked in enterprise
    assert client.get(f"/licences/show/{business.identifier}").status_code == 200
    # The enterprise's name is public on its verification page; a person's is not.
    assert "示范茶业有限公司" in text(client.get(f"/licences/verify/{business.identifier}"))


def test_a_stamped_copy_on_the_verification_page(app, licence_world):
    from datetime import date

    from licenses import copies

    licence = licence_world.issue(demo.FOOD_PERMIT, holder_name="示范餐饮有限公司")
    made = copies.make_copy(
        licence_world.ctx,
        licence.identifier,
        client_id="county-hall",
        client_name="示范县政务服务中心",
        purpose="核验经营资质",
        matter="食品经营许可延续",
        until=date.today() + timedelta(days=5),
    )
    client = app.test_client()
    page = client.get(made.verify_url.removeprefix(licence_world.base))
    assert page.status_code == 200 and 'data-copy="usable"' in page.get_data(as_text=True)
    assert "此加注件可以使用" in text(page) and "示范县政务服务中心" in text(page) and "食品经营许可延续" in text(page)
    unknown = client.get(f"/licences/verify/{licence.identifier}?copy=nosuchcopy0000000000")
    assert unknown.status_code == 200 and 'data-copy="unknown"' in unknown.get_data(as_text=True)
    other = licence_world.issue(demo.FOOD_PERMIT)
    assert 'data-copy="unknown"' in client.get(f"/licences/verify/{other.identifier}?copy={made.copy_id}").get_data(as_text=True)


def test_the_pages_in_english(app, licence_world):
    licence = licence_world.issue(demo.DRIVING_LICENCE)
    page = app.test_client().get(f"/licences/verify/{licence.identifier}?lang=en")
    body = text(page)
    assert page.status_code == 200 and "Verify a licence" in body and "This licence is valid." in body and "Electronic Licences" in body


def test_an_old_version_points_to_the_newest(app, licence_world):
    from licenses import issuance

    first = licence_world.issue(demo.DRIVING_LICENCE)
    second = issuance.next_version(
        licence_world.ctx, first.identifier, action="change", actor=ACTOR, reason="换证", face_changes={"vehicle_class": "B2"}
    )
    third = issuance.next_version(
        licence_world.ctx, second.identifier, action="change", actor=ACTOR, reason="增驾", face_changes={"vehicle_class": "A1"}
    )
    client = app.test_client()
    old = client.get(f"/licences/verify/{first.identifier}")
    html = old.get_data(as_text=True)
    assert old.status_code == 200 and 'data-state="superseded"' in html and "已被新版本替换" in text(old)
    assert 'id="newer">' in html and f'href="/licences/verify/{third.identifier}"' in html, "the link goes to the newest, not the next"
    newest = client.get(f"/licences/verify/{third.identifier}").get_data(as_text=True)
    assert 'data-state="valid"' in newest and 'id="newer"' not in newest and f'href="/licences/verify/{second.identifier}"' in newest


def test_an_imported_licence_shows_at_once_and_its_file_once_sealed(app, licence_world, tmp_path):
    """A licence from a bulk import is queryable before its file is sealed: the holder sees it with a note that the
    file is being sealed instead of a download button, and the button once seal-pending has run."""
    from licenses import imports
    from tests.licenses.test_imports import ISSUER, TYPE, legacy_rows, write_csv

    n = uuid.uuid4().hex[:8]
    rows = legacy_rows("PG" + n.upper(), 1, 3_000_000 + int(n[:5], 16) % 500_000)  # a holder of its own
    source = tmp_path / "one.csv"
    write_csv(source, rows, "utf-8")
    result = imports.import_file(licence_world.ctx, source, type_code=TYPE, issuer_code=ISSUER, actor=ACTOR)
    assert result.rows_added == 1
    with licence_world.ctx.sessions() as db:
        from licenses.models import Licence

        identifier = db.scalar(select(Licence.identifier).where(Licence.import_id == result.run_id))
    client = app.test_client()
    sign_in(licence_world, client, add_person(licence_world, name="林志明", resident_id=rows[0]["持证主体代码"], username=f"imp{n}"))

    before = client.get("/licences")
    assert before.status_code == 200 and identifier in text(before)
    assert "文件正在加盖电子印章" in text(before) and f'href="/licences/file/{identifier}"' not in before.get_data(as_text=True)
    assert client.get(f"/licences/file/{identifier}").status_code == 404

    assert imports.seal_pending(licence_world.ctx, run=result.run_id).sealed == 1  # this run's only: the world is shared
    after = client.get("/licences")
    assert f'href="/licences/file/{identifier}"' in after.get_data(as_text=True) and "文件正在加盖电子印章" not in text(after)
    assert client.get(f"/licences/file/{identifier}").data.startswith(b"%PDF")
