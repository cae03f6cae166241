"""Limits on validation and verification uploads (issue 18 item 5), through the real app on SQLite and PostgreSQL.

* per client address, shared by ``POST /api/validate``, ``/validate`` and ``/verify/<id>``
  and by every worker (two apps built from the same settings on one database);
* what a file may hold (pages, revisions, signatures), read before any signature is
  checked: 413 with a clear message.

The API answers problem+json, the pages a readable page in the person's language;
a limit's 429 carries ``Retry-After``.
"""

from __future__ import annotations

import io

import pytest

from idp.oidc import clients
from signing.pdf import reading as pdfinput
from tests.signing_fixtures import make_pdf

PUBLIC_URL = "https://id.test"
PROBLEM = "application/problem+json"
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


@pytest.fixture
def workers(tmp_path, migrated, key_manager):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    settings = app_settings(
        tmp_path,
        engine.url.render_as_string(hide_password=False),
        HALLMARK_PUBLIC_URL=PUBLIC_URL,
        HALLMARK_VALIDATE_BURST="3",
        HALLMARK_VALIDATE_PER_MINUTE="0.01",  # no refill while the test runs
        HALLMARK_VALIDATE_MAX_PAGES="3",
        HALLMARK_VALIDATE_MAX_REVISIONS="2",
    )
    apps = [create_app(settings) for _ in range(2)]
    yield apps
    for app in apps:
        app.extensions["hallmark.services"].close()


def client(app, address: str):
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    return browser


def bearer(app) -> dict:
    ctx = app.extensions["hallmark.services"].idp
    from core import db as core_db

    with core_db.transaction(ctx.sessions) as db:
        secret = clients.add(
            ctx, db, client_id="checker", name="checker", client_type="confidential", grant_types=["client_credentials"],
            scopes=["sign:validate"], actor="test",
        ).client_secret  # fmt: skip
    answer = app.test_client().post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "sign:validate", "resource": PUBLIC_URL + "/api/sign"},
        auth=("checker", secret),
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return {"Authorization": "Bearer " + answer.get_json()["access_token"]}


def upload(browser, path: str, pdf: bytes):
    return browser.post(path, data={"file": (io.BytesIO(pdf), "file.pdf")}, headers=ZH, content_type="multipart/form-data")


def api_validate(browser, token: dict, pdf: bytes):
    return browser.post("/api/validate", data=pdf, headers={**token, "Content-Type": "application/pdf"})


def revised(pdf: bytes, updates: int) -> bytes:
    """``pdf`` with ``updates`` incremental updates appended (each a new cross-reference section)."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    for number in range(updates):
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
        writer.root[generic.NameObject("/HallmarkUpdate")] = generic.NumberObject(number)
        writer.update_root()
        out = io.BytesIO()
        writer.write(out)
        pdf = out.getvalue()
    return pdf


def test_validations_are_limited_per_address_across_workers_and_forms(workers):
    a, b = workers
    token = bearer(a)
    pdf = make_pdf()
    # One allowance for the three ways in and both workers.
    assert upload(client(a, "203.0.113.20"), "/validate", pdf).status_code == 200
    assert api_validate(client(b, "203.0.113.20"), token, pdf).status_code == 200
    assert upload(client(b, "203.0.113.20"), "/validate", pdf).status_code == 200
    page = upload(client(a, "203.0.113.20"), "/validate", pdf)
    assert page.status_code == 429 and page.mimetype == "text/html"
    assert int(page.headers["Retry-After"]) >= 1
    assert "检查文件的次数过多" in page.get_data(as_text=True)
    api = api_validate(client(b, "203.0.113.20"), token, pdf)
    assert api.status_code == 429 and api.mimetype == PROBLEM
    assert api.get_json()["code"] == "rate_limited" and int(api.headers["Retry-After"]) >= 1
    verify = upload(client(a, "203.0.113.20"), "/verify/no-such-document", pdf)
    assert verify.status_code == 404  # an unknown code is answered before anything is counted or read
    # Another address is not affected.
    assert api_validate(client(a, "203.0.113.21"), token, pdf).status_code == 200


def test_pages_and_revisions_past_the_caps_are_refused_before_validation(workers):
    a, _ = workers
    token = bearer(a)
    for number, (pdf, code) in enumerate(((make_pdf(pages=4), "too_many_pages"), (revised(make_pdf(), 2), "too_many_revisions"))):
        api = api_validate(client(a, f"198.51.100.{number}"), token, pdf)
        assert api.status_code == 413 and api.mimetype == PROBLEM, api.get_data(as_text=True)
        assert api.get_json()["code"] == code
        page = upload(client(a, f"198.51.100.{number}"), "/validate", pdf)
        assert page.status_code == 413 and page.mimetype == "text/html"
        assert ("页数过多" if code == "too_many_pages" else "修订次数过多") in page.get_data(as_text=True)
    # At the caps, a file is validated.
    assert api_validate(client(a, "198.51.100.9"), token, make_pdf(pages=3)).status_code == 200
    assert api_validate(client(a, "198.51.100.9"), token, revised(make_pdf(), 1)).status_code == 200


def test_the_caps_count_what_the_file_holds():
    reader = pdfinput.read(revised(make_pdf(pages=2), 1))
    pdfinput.check_caps(reader, pdfinput.Caps(pages=2, revisions=2, signatures=1), 1)
    for caps, signatures, code in (
        (pdfinput.Caps(pages=1, revisions=2, signatures=1), 0, "too_many_pages"),
        (pdfinput.Caps(pages=2, revisions=1, signatures=1), 0, "too_many_revisions"),
        (pdfinput.Caps(pages=2, revisions=2, signatures=1), 2, "too_many_signatures"),
    ):
        with pytest.raises(pdfinput.Problem) as refused:
            pdfinput.check_caps(reader, caps, signatures)
        assert refused.value.status == 413 and refused.value.extensions["code"] == code
