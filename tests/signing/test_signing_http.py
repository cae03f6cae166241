"""Seals, validation and the verification page over real HTTP, judged by pdfsig, qpdf and pyHanko."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
import requests

from tests.signing_fixtures import (
    DEPARTMENT,
    DEPARTMENT_CODE,
    OTHER_DEPARTMENT,
    encrypted_pdf,
    make_pdf,
    pdfsig,
    pyhanko_ades,
    qpdf_clean,
    signing_world,  # noqa: F401 - fixture
    tamper,
    valid_credit_code,
)

pytestmark = pytest.mark.slow


def _seal(world, pdf: bytes, token: str, **params) -> requests.Response:
    return requests.post(
        world.base + "/api/sign/pdf",
        params=params,
        data=pdf,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/pdf"},
        timeout=60,
    )


def _validate(world, pdf: bytes, token: str) -> dict:
    answer = requests.post(
        world.base + "/api/validate", data=pdf, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/pdf"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _documents(world) -> int:
    with sqlite3.connect(world.instance / "hallmark.db") as connection:
        return connection.execute("select count(*) from signing_documents").fetchone()[0]


@pytest.mark.parametrize("level", ["B-B", "B-T", "B-LT", "B-LTA"])
def test_api_seal_is_valid_for_pdfsig_qpdf_pyhanko_and_our_report(signing_world, tmp_path, level):
    world = signing_world
    token = world.token()
    before = _documents(world)
    answer = _seal(world, make_pdf(), token, level=level, reason="出具证明")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/pdf"
    document_id = answer.headers["Hallmark-Document-Id"]
    assert answer.headers["Hallmark-Verify-URL"] == f"{world.base}/verify/{document_id}"
    assert answer.headers["Hallmark-Level"] == level
    assert _documents(world) == before + 1
    path = tmp_path / f"sealed-{level}.pdf"
    path.write_bytes(answer.content)

    judged = pdfsig(path, world.nssdir)
    assert judged, "pdfsig found no signature"
    assert judged[0].signature_valid, judged[0].lines
    assert judged[0].certificate_trusted, judged[0].lines
    assert judged[0].value("Signer Certificate Common Name") == DEPARTMENT
    ok, text = qpdf_clean(path)
    assert ok, text

    report = _validate(world, answer.content, token)
    assert report["signatures_count"] == 1
    entry = report["signatures"][0]
    assert entry["indication"] == "TOTAL_PASSED", entry
    assert entry["sub_indication"] is None
    assert entry["pades_level"] == f"PAdES-BASELINE-{level[2:]}"
    assert entry["signer"]["identifier"] == {
        "kind": "credit_code",
        "value": DEPARTMENT_CODE,
        "masked": entry["signer"]["identifier"]["masked"],
        "source": "subject organizationIdentifier (NTRCN-)",
    }
    assert "*" in entry["signer"]["identifier"]["masked"]
    assert entry["revocation"]["status"] == "good"
    assert entry["modified_after_signing"] is False
    assert (entry["timestamp"] is None) == (level == "B-B")
    if entry["timestamp"]:
        assert "Hallmark Time-Stamping Authority" in entry["timestamp"]["authority"]
    assert entry["hallmark_document"]["id"] == document_id
    if level == "B-LTA":
        assert len(report["document_timestamps"]) == 1 and report["document_timestamps"][0]["intact"]

    theirs = pyhanko_ades(answer.content, world.root_der, world.intermediates_der(), world.crls_der())
    assert theirs == [("PASSED", None)]
    ours = [(e["indication"], e["sub_indication"]) for e in report["signatures"]]
    assert ours == [("TOTAL_PASSED", None)]


def test_sealing_a_signed_pdf_keeps_the_earlier_signature_valid(signing_world, tmp_path):
    world = signing_world
    first = _seal(world, make_pdf(), world.token(), level="B-LT")
    assert first.status_code == 200, first.text
    second = _seal(world, first.content, world.token(scope="sign:seal", other=True), level="B-T", page=1, x=72, y=400)
    assert second.status_code == 200, second.text
    path = tmp_path / "twice.pdf"
    path.write_bytes(second.content)
    judged = pdfsig(path, world.nssdir)
    assert len(judged) == 2
    assert all(s.signature_valid and s.certificate_trusted for s in judged), [s.lines for s in judged]
    assert [s.value("Signer Certificate Common Name") for s in judged] == [DEPARTMENT, OTHER_DEPARTMENT]
    assert qpdf_clean(path)[0]
    report = _validate(world, second.content, world.token())
    assert [e["indication"] for e in report["signatures"]] == ["TOTAL_PASSED", "TOTAL_PASSED"]
    earlier, later = report["signatures"]
    assert earlier["modified_after_signing"] is True and earlier["covers_whole_file"] is False
    assert later["covers_whole_file"] is True and later["modified_after_signing"] is False
    theirs = pyhanko_ades(second.content, world.root_der, world.intermediates_der(), world.crls_der())
    assert theirs == [("PASSED", None), ("PASSED", None)]


def test_tampered_pdf_fails_for_us_and_for_pdfsig(signing_world, tmp_path):
    world = signing_world
    sealed = _seal(world, make_pdf(), world.token(), level="B-T")
    assert sealed.status_code == 200
    changed = tamper(sealed.content)
    path = tmp_path / "tampered.pdf"
    path.write_bytes(changed)
    judged = pdfsig(path, world.nssdir)
    assert judged[0].value("Signature Validation") == "Digest Mismatch.", judged[0].lines
    entry = _validate(world, changed, world.token())["signatures"][0]
    assert (entry["indication"], entry["sub_indication"]) == ("TOTAL_FAILED", "HASH_FAILURE")
    assert any("digest does not match" in e for e in entry["errors"])
    theirs = pyhanko_ades(changed, world.root_der, world.intermediates_der(), world.crls_der())
    assert theirs == [("FAILED", "HASH_FAILURE")]


def test_a_client_may_use_only_its_own_departments_seals(signing_world):
    world = signing_world
    before = _documents(world)
    refused = _seal(world, make_pdf(), world.token(), seal=OTHER_DEPARTMENT)
    assert refused.status_code == 403
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["code"] == "seal_of_another_department"
    unknown = _seal(world, make_pdf(), world.token(), seal="no such seal")
    assert unknown.status_code == 404 and unknown.json()["code"] == "no_such_seal"
    assert _documents(world) == before
    # Without a name, each client gets its own department's seal.
    mine = _seal(world, make_pdf(), world.token(scope="sign:seal", other=True))
    assert mine.status_code == 200
    document = requests.get(world.base + f"/api/sign/documents/{mine.headers['Hallmark-Document-Id']}", timeout=10).json()
    assert document["seal"] == OTHER_DEPARTMENT


@pytest.mark.parametrize(
    "body, content_type, status, code",
    [
        (b"GIF89a not a pdf at all", "application/pdf", 422, "not_a_pdf"),
        (b"", "application/pdf", 422, "not_a_pdf"),
        ("encrypted", "application/pdf", 422, "encrypted"),
        ("corrupt", "application/pdf", 422, "corrupt"),
        ("large", "application/pdf", 413, "too_large"),
        ("plain", "text/plain", 415, "media_type"),
    ],
)
def test_bad_input_is_refused_with_a_problem_and_nothing_stored(signing_world, body, content_type, status, code):
    world = signing_world
    if body == "encrypted":
        body = encrypted_pdf()
    elif body == "corrupt":
        whole = make_pdf()
        body = whole[: len(whole) // 2] + b"garbage" * 20
    elif body == "large":
        body = make_pdf() + b"%" + b"x" * (8 * 1024 * 1024)
    elif body == "plain":
        body = make_pdf()
    before = _documents(world)
    token = world.token()
    for path in ("/api/sign/pdf", "/api/validate"):
        answer = requests.post(
            world.base + path, data=body, headers={"Authorization": f"Bearer {token}", "Content-Type": content_type}, timeout=60
        )
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert answer.json()["code"] == code
    assert _documents(world) == before


def test_options_and_authorisation_are_checked(signing_world):
    world = signing_world
    pdf = make_pdf()
    assert _seal(world, pdf, world.token(), level="B-X").json()["code"] == "bad_level"
    off_page = _seal(world, pdf, world.token(), page=5)
    assert off_page.status_code == 422 and off_page.json()["code"] == "bad_page"
    outside = _seal(world, pdf, world.token(), x=500, y=800)
    assert outside.status_code == 422 and outside.json()["code"] == "bad_position"
    for odd in ({"page": "nan"}, {"page": "inf"}, {"x": "-inf"}, {"width": "1e999"}):
        refused = _seal(world, pdf, world.token(), **odd)
        assert refused.status_code == 400 and refused.json()["code"] == "bad_option", (odd, refused.text)
    no_token = requests.post(world.base + "/api/sign/pdf", data=pdf, headers={"Content-Type": "application/pdf"}, timeout=10)
    assert no_token.status_code == 401
    validate_only = _seal(world, pdf, world.token(scope="sign:validate"))
    assert validate_only.status_code == 403


def test_verification_page_and_upload(signing_world):
    world = signing_world
    sealed = _seal(world, make_pdf(), world.token(), level="B-LT")
    document_id = sealed.headers["Hallmark-Document-Id"]
    page = requests.get(f"{world.base}/verify/{document_id}", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "真实有效" in page.text and DEPARTMENT in page.text and DEPARTMENT_CODE not in page.text
    english = requests.get(f"{world.base}/verify/{document_id}?lang=en", timeout=10)
    assert "Genuine: this document was sealed through Hallmark." in english.text

    def upload(data: bytes):
        return requests.post(
            f"{world.base}/verify/{document_id}?lang=en", files={"file": ("copy.pdf", data, "application/pdf")}, timeout=60
        )

    same = upload(sealed.content)
    assert same.status_code == 200 and 'data-outcome="identical"' in same.text
    changed = upload(tamper(sealed.content))
    assert 'data-outcome="tampered"' in changed.text
    another = _seal(world, make_pdf("Another document"), world.token())
    assert 'data-outcome="not_this_document"' in upload(another.content).text
    not_pdf = upload(b"hello")
    assert not_pdf.status_code == 422 and "This file is not a PDF." in not_pdf.text
    missing = requests.get(f"{world.base}/verify/AAAAAAAAAAAAAAAAAAAAAA", timeout=10)
    assert missing.status_code == 404 and "没有与此验证码对应的文件" in missing.text
    report_page = requests.post(f"{world.base}/validate?lang=en", files={"file": ("x.pdf", sealed.content, "application/pdf")}, timeout=60)
    assert report_page.status_code == 200 and 'data-indication="TOTAL_PASSED"' in report_page.text
    assert DEPARTMENT_CODE not in report_page.text


def test_cli_seals_and_validates(signing_world, tmp_path):
    world = signing_world
    source, target = tmp_path / "in.pdf", tmp_path / "out.pdf"
    source.write_bytes(make_pdf())
    result = world.hallmark("sign", "pdf", str(source), str(target), "--seal", DEPARTMENT, "--level", "B-T")
    assert result.returncode == 0, result.stderr
    assert "/verify/" in result.stdout
    judged = pdfsig(target, world.nssdir)
    assert judged[0].signature_valid and judged[0].certificate_trusted
    checked = world.hallmark("validate", str(target))
    assert checked.returncode == 0 and "TOTAL_PASSED" in checked.stdout and DEPARTMENT_CODE not in checked.stdout
    as_json = json.loads(world.hallmark("validate", "--json", str(target)).stdout)
    assert as_json["signatures"][0]["signer"]["identifier"]["value"] == DEPARTMENT_CODE
    (tmp_path / "bad.pdf").write_bytes(tamper(target.read_bytes()))
    failed = world.hallmark("validate", str(tmp_path / "bad.pdf"))
    assert failed.returncode == 2 and "TOTAL_FAILED/HASH_FAILURE" in failed.stdout
    sample = world.hallmark("sign", "sample-pdf", str(tmp_path / "sample.pdf"))
    assert sample.returncode == 0 and qpdf_clean(tmp_path / "sample.pdf")[0]
    sealed_sample = world.hallmark("sign", "pdf", str(tmp_path / "sample.pdf"), str(tmp_path / "sample-sealed.pdf"), "--seal", DEPARTMENT)
    assert sealed_sample.returncode == 0, sealed_sample.stderr
    assert pdfsig(tmp_path / "sample-sealed.pdf", world.nssdir)[0].certificate_trusted
    not_pdf = tmp_path / "note.txt"
    not_pdf.write_text("hello")
    refused = world.hallmark("sign", "pdf", str(not_pdf), str(tmp_path / "never.pdf"), "--seal", DEPARTMENT)
    assert refused.returncode == 1 and "not a PDF" in refused.stderr and not (tmp_path / "never.pdf").exists()


def test_revoked_seal(signing_world, tmp_path):
    world = signing_world
    name, code = "吊销测试局", valid_credit_code("11350100MB000001")
    assert world.hallmark("sign", "seal", "add", "--department", name, "--credit-code", code).returncode == 0
    serial = next(s["certificate_serial"] for s in json.loads(world.hallmark("sign", "seal", "list", "--json").stdout) if s["name"] == name)
    source = tmp_path / "in.pdf"
    source.write_bytes(make_pdf())
    for level in ("B-B", "B-T"):
        result = world.hallmark("sign", "pdf", str(source), str(tmp_path / f"{level}.pdf"), "--seal", name, "--level", level)
        assert result.returncode == 0, result.stderr
    time.sleep(1.2)  # revocation times have whole seconds: keep them after the timestamps
    revoked = world.hallmark("ca", "revoke", serial, "--reason", "keyCompromise")
    assert revoked.returncode == 0, revoked.stderr

    token = world.token()
    untimed = _validate(world, (tmp_path / "B-B.pdf").read_bytes(), token)["signatures"][0]
    assert (untimed["indication"], untimed["sub_indication"]) == ("INDETERMINATE", "REVOKED_NO_POE"), untimed
    assert untimed["revocation"]["status"] == "revoked"
    timed = _validate(world, (tmp_path / "B-T.pdf").read_bytes(), token)["signatures"][0]
    assert timed["indication"] == "TOTAL_PASSED", timed  # the timestamp proves it was sealed before the revocation
    for level, expected in (("B-B", ("INDETERMINATE", "REVOKED_NO_POE")), ("B-T", ("PASSED", None))):
        theirs = pyhanko_ades((tmp_path / f"{level}.pdf").read_bytes(), world.root_der, world.intermediates_der(), world.crls_der())
        assert theirs == [expected], level
    judged = pdfsig(tmp_path / "B-B.pdf", world.nssdir)
    assert judged[0].signature_valid and judged[0].value("Certificate Validation") == "Certificate has been Revoked.", judged[0].lines

    refused = world.hallmark("sign", "pdf", str(source), str(tmp_path / "after.pdf"), "--seal", name)
    assert refused.returncode == 1 and "revoked" in refused.stderr and not (tmp_path / "after.pdf").exists()
    document_id = _validate(world, (tmp_path / "B-T.pdf").read_bytes(), token)["signatures"][0]["hallmark_document"]["id"]
    page = requests.get(f"{world.base}/verify/{document_id}?lang=en", timeout=10)
    assert "has since been revoked" in page.text
    # The very file we returned, sealed without a timestamp by a key revoked since: ours, but not "the same, all well".
    untimed_id = _validate(world, (tmp_path / "B-B.pdf").read_bytes(), token)["signatures"][0]["hallmark_document"]["id"]
    checked = requests.post(
        f"{world.base}/verify/{untimed_id}?lang=en",
        files={"file": ("B-B.pdf", (tmp_path / "B-B.pdf").read_bytes(), "application/pdf")},
        timeout=60,
    )
    assert 'data-outcome="not_confirmed"' in checked.text and checked.text.count('class="verdict ') == 1
    assert "Genuine" not in checked.text and "Same document" not in checked.text


def test_every_seal_operation_is_audited(signing_world):
    world = signing_world
    sealed = _seal(world, make_pdf(), world.token())
    document_id = sealed.headers["Hallmark-Document-Id"]
    with sqlite3.connect(world.instance / "hallmark.db") as connection:
        actions = {row[0] for row in connection.execute("select action from audit_events")}
        target = connection.execute("select actor, details from audit_events where target = ?", (document_id,)).fetchone()
    assert {"signing.seal.added", "signing.seal.granted", "signing.pdf.sealed"} <= actions
    refused = _seal(world, make_pdf(), world.token(), seal=OTHER_DEPARTMENT)
    assert refused.status_code == 403
    with sqlite3.connect(world.instance / "hallmark.db") as connection:
        last = connection.execute("select action, actor, target from audit_events order by seq desc limit 1").fetchone()
    assert last == ("signing.seal.refused", "client:market-approval", OTHER_DEPARTMENT)
    assert target[0] == "client:market-approval" and json.loads(target[1])["seal"] == DEPARTMENT
    assert world.hallmark("audit", "verify").returncode == 0
