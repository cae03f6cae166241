"""Stamped copies (加注件): sealed (judged by poppler's pdfsig and pyHanko's validator with the Hallmark root), the note printed on them (pdftotext), the QR code
pointing at the copy (read by zxing-cpp), the cap on their validity, and "expired" after their last day."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import timedelta

import pytest
import requests
import zxingcpp
from PIL import Image
from sqlalchemy import func, select, update

from core.problems import Problem
from licenses import copies, demo, lifecycle, qrpayload
from licenses.models import StampedCopy
from tests.signing_fixtures import nss_database, pdfsig, pyhanko_ades

CLIENT = "market-approval"
CLIENT_NAME = "示范市市场监管审批系统"
MATTER = "食品经营许可证核发"
PURPOSE = "核验申请人营业执照"


def _copy(world, identifier, **changes):
    arguments = {
        "client_id": CLIENT,
        "client_name": CLIENT_NAME,
        "purpose": PURPOSE,
        "matter": MATTER,
        "until": lifecycle.today() + timedelta(days=7),
        **changes,
    }
    return copies.make_copy(world.ctx, identifier, **arguments)


def _count(world, identifier) -> int:
    with world.ctx.sessions() as db:
        return db.scalar(select(func.count()).select_from(StampedCopy).where(StampedCopy.identifier == identifier))


def _text(path) -> str:
    result = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True, timeout=60, check=True)
    return re.sub(r"\s+", "", result.stdout)


@pytest.fixture(scope="module")
def licence(licence_world):
    return licence_world.issue(demo.BUSINESS_LICENCE, holder_name="示范复印科技有限公司")


def _der(pem_or_der: bytes) -> bytes:
    if not pem_or_der.startswith(b"-----"):
        return pem_or_der
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem_or_der).public_bytes(Encoding.DER)


def test_a_copy_is_sealed_by_the_issuer_and_carries_its_note(licence_world, licence, tmp_path):
    base = licence_world.serve()  # pdfsig (NSS) asks our OCSP responder; the certificates name this URL
    made = _copy(licence_world, licence.identifier)
    assert made.pdf.startswith(b"%PDF-") and made.pdf != licence.pdf
    path = tmp_path / made.filename
    path.write_bytes(made.pdf)

    root = _der(requests.get(base + "/pki/ca/root.crt", timeout=10).content)
    signatures = pdfsig(path, nss_database(tmp_path / "nss", root))
    assert len(signatures) == 1
    assert signatures[0].signature_valid and signatures[0].certificate_trusted, signatures[0].lines
    assert demo.issuer_for(demo.BUSINESS_LICENCE).name in (signatures[0].value("Signer full Distinguished Name") or "")
    services = _der(requests.get(base + "/pki/ca/services.crt", timeout=10).content)
    crls = [requests.get(f"{base}/pki/crl/{name}.crl", timeout=10).content for name in ("root", "services")]
    assert pyhanko_ades(made.pdf, root, [services], crls) == [("PASSED", None)]

    text = _text(path)
    until = made.until.isoformat()
    assert f"仅供{CLIENT_NAME}办理{MATTER}使用" in text
    assert f"用途：{PURPOSE}" in text and f"有效期至{made.until.year}年{made.until.month:02d}月{made.until.day:02d}日" in text
    assert licence.identifier in text

    with licence_world.ctx.sessions() as db:
        row = db.get(StampedCopy, made.copy_id)
        from signing.models import SignedDocument

        record = db.get(SignedDocument, made.document_id)
    assert (row.identifier, row.client_id, row.client_name, row.matter, row.purpose) == (
        licence.identifier,
        CLIENT,
        CLIENT_NAME,
        MATTER,
        PURPOSE,
    )
    assert row.valid_until == made.until and row.document_id == made.document_id
    assert record.seal_name == demo.issuer_for(demo.BUSINESS_LICENCE).name
    assert record.sha256 == row.pdf_sha256

    from core.models import AuditEvent

    with licence_world.ctx.sessions() as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.action == "licences.copy", AuditEvent.target == licence.identifier)).all()
    details = [json.loads(event.details) for event in events]
    assert any(d["copy"] == made.copy_id and d["client"] == CLIENT and d["until"] == until for d in details)
    assert all(event.actor == f"client:{CLIENT}" for event in events)


def test_the_copys_qr_code_names_the_copy_and_expires_with_it(licence_world, licence, tmp_path):
    made = _copy(licence_world, licence.identifier, until=lifecycle.today() + timedelta(days=3))
    path = tmp_path / "copy.pdf"
    path.write_bytes(made.pdf)
    subprocess.run(["pdftoppm", "-r", "200", "-png", "-f", "1", "-l", "1", str(path), str(tmp_path / "page")], check=True, timeout=60)
    page = next(tmp_path.glob("page*.png"))
    # The seal's stamp carries a QR code of its own (the signing record's page); the face's is the licence's.
    texts = [c.text for c in zxingcpp.read_barcodes(Image.open(page)) if c.format == zxingcpp.BarcodeFormat.QRCode]
    codes = [t for t in texts if t.startswith(licence_world.ctx.url(qrpayload.QR_PATH) + "#")]
    assert len(codes) == 1, texts
    facts = qrpayload.read(licence_world.ctx, codes[0])
    assert facts["identifier"] == licence.identifier
    assert facts["status_url"] == copies.copy_url(licence_world.ctx, licence.identifier, made.copy_id) == made.verify_url
    assert made.verify_url.endswith(f"?copy={made.copy_id}")
    end = copies._end_of(made.until)
    assert abs(facts["expires_at"] - end.timestamp()) < 120


def test_until_is_capped_by_the_librarys_copy_days(licence_world, licence):
    made = _copy(licence_world, licence.identifier, until=lifecycle.today() + timedelta(days=3650))
    cap = lifecycle.today() + timedelta(days=licence_world.ctx.settings.copy_days)
    if licence.valid_until is not None:
        cap = min(cap, licence.valid_until)
    assert made.until == cap


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"purpose": ""}, "bad_purpose"),
        ({"purpose": "用" * 201}, "bad_purpose"),
        ({"matter": "   "}, "bad_matter"),
        ({"matter": "事" * 101}, "bad_matter"),
        ({"client_name": "示范\x00系统"}, "bad_client_name"),
        ({"client_name": None}, "client_name_missing"),
        ({"until": "2030-01-01"}, "bad_until"),
    ],
)
def test_bad_requests_are_refused_before_anything_is_sealed(licence_world, licence, changes, code):
    before = _count(licence_world, licence.identifier)
    with pytest.raises(Problem) as refused:
        _copy(licence_world, licence.identifier, **changes)
    assert refused.value.status == 422 and refused.value.extensions["code"] == code
    assert _count(licence_world, licence.identifier) == before


def test_a_past_until_is_refused(licence_world, licence):
    with pytest.raises(Problem) as refused:
        _copy(licence_world, licence.identifier, until=lifecycle.today() - timedelta(days=1))
    assert (refused.value.status, refused.value.extensions["code"]) == (422, "bad_until")


def test_unknown_and_malformed_licences(licence_world, licence):
    with pytest.raises(Problem) as malformed:
        _copy(licence_world, licence.identifier[:-1] + ("0" if licence.identifier[-1] != "0" else "1"))
    assert (malformed.value.status, malformed.value.extensions["code"]) == (422, "bad_identifier")
    with pytest.raises(Problem) as garbage:
        _copy(licence_world, "not an identifier")
    assert garbage.value.status == 422


@pytest.mark.parametrize("action", ["suspend", "revoke"])
def test_only_a_valid_licence_is_copied(licence_world, action):
    other = licence_world.issue(demo.FOOD_PERMIT)
    with licence_world.ctx.sessions() as db, db.begin():
        lifecycle.change_state(db, other.identifier, action, reason="测试", actor="test")
    with pytest.raises(Problem) as refused:
        _copy(licence_world, other.identifier)
    assert refused.value.status == 409
    assert refused.value.extensions["code"] == "wrong_state"
    assert refused.value.extensions["state"] == lifecycle.ACTIONS[action][1]
    assert _count(licence_world, other.identifier) == 0


def test_copy_status_says_expired_after_the_last_day_and_reports_the_licence(licence_world):
    own = licence_world.issue(demo.BUSINESS_LICENCE)
    made = _copy(licence_world, own.identifier, until=lifecycle.today() + timedelta(days=2))
    ctx = licence_world.ctx

    now = copies.copy_status(ctx, made.copy_id, identifier=own.identifier)
    assert (now["state"], now["expired"], now["usable"]) == ("current", False, True)
    assert now["licence"]["status"]["state"] == "valid" and now["identifier"] == own.identifier
    assert now["matter"] == MATTER and now["client"] == {"id": CLIENT, "name": CLIENT_NAME}
    assert copies.copy_status(ctx, made.copy_id, today=made.until)["state"] == "current"  # through its last day
    later = copies.copy_status(ctx, made.copy_id, today=made.until + timedelta(days=1))
    assert (later["state"], later["expired"], later["usable"]) == ("expired", True, False)

    # The row says so too, once its date has passed (as it will in a month's time).
    with ctx.sessions() as db, db.begin():
        db.execute(update(StampedCopy).where(StampedCopy.id == made.copy_id).values(valid_until=lifecycle.today() - timedelta(days=1)))
    assert copies.copy_status(ctx, made.copy_id)["state"] == "expired"

    with ctx.sessions() as db, db.begin():
        lifecycle.change_state(db, own.identifier, "revoke", reason="吊销测试", actor="test")
    revoked = copies.copy_status(ctx, made.copy_id)
    assert revoked["licence"]["status"]["state"] == "revoked" and revoked["usable"] is False


def test_a_copy_of_a_licence_revoked_later_is_not_usable(licence_world):
    own = licence_world.issue(demo.BUSINESS_LICENCE)
    made = _copy(licence_world, own.identifier)
    with licence_world.ctx.sessions() as db, db.begin():
        lifecycle.change_state(db, own.identifier, "suspend", reason="暂扣测试", actor="test")
    found = copies.copy_status(licence_world.ctx, made.copy_id)
    assert found["state"] == "current" and found["usable"] is False
    assert found["licence"]["status"]["state"] == "suspended"


@pytest.mark.parametrize("copy_id", ["", "nope", "x" * 22, "../../etc/passwd", None, "a" * 200])
def test_unknown_copy_ids_are_404(licence_world, copy_id):
    with pytest.raises(Problem) as missing:
        copies.copy_status(licence_world.ctx, copy_id)
    assert (missing.value.status, missing.value.extensions["code"]) == (404, "unknown_copy")


def test_a_copy_asked_for_under_another_licence_is_404(licence_world, licence):
    other = licence_world.issue(demo.BUSINESS_LICENCE)
    made = _copy(licence_world, licence.identifier)
    with pytest.raises(Problem) as missing:
        copies.copy_status(licence_world.ctx, made.copy_id, identifier=other.identifier)
    assert (missing.value.status, missing.value.extensions["code"]) == (404, "unknown_copy")
