"""Verifying an uploaded file against the library: genuine and current, genuine but revoked (or suspended,
superseded), an expired copy, a changed file, someone else's sealed PDF, and what is no PDF at all."""

from __future__ import annotations

import io
import random
from datetime import timedelta

import pytest
from sqlalchemy import update

from core.problems import Problem
from licenses import copies, demo, issuance, lifecycle, verification
from licenses.models import StampedCopy
from tests.signing_fixtures import make_pdf


@pytest.fixture(scope="module")
def licence(licence_world):
    return licence_world.issue(demo.FOOD_PERMIT, holder_name="示范核验餐饮店")


def _copy(world, identifier, days: int = 5):
    return copies.make_copy(
        world.ctx,
        identifier,
        client_id="market-approval",
        client_name="示范市市场监管审批系统",
        purpose="核验食品经营许可证",
        matter="食品经营许可变更",
        until=lifecycle.today() + timedelta(days=days),
    )


def _stream_byte(pdf: bytes) -> int:
    """The offset of a byte inside the first stream's data: changing it leaves the file readable."""
    start = pdf.index(b"stream", pdf.index(b"obj")) + len(b"stream")
    start += 2 if pdf[start : start + 2] == b"\r\n" else 1
    return start + 10


def test_the_issued_file_is_genuine_and_current(licence_world, licence):
    found = verification.verify_file(licence_world.ctx, licence.pdf)
    assert found["verdict"] == "genuine_current" and found["usable"] is True
    assert found["kind"] == "licence" and found["copy"] is None
    assert found["licence"]["identifier"] == licence.identifier
    assert found["licence"]["status"]["state"] == "valid"
    assert found["file"]["identical_to_issued"] is True
    assert found["seal"]["document_id"] == licence.document_id
    assert found["seal"]["seal"] == demo.issuer_for(demo.FOOD_PERMIT).name
    assert found["seal"]["indication"] == "TOTAL_PASSED"


def test_after_revocation_the_same_file_is_genuine_but_revoked(licence_world):
    own = licence_world.issue(demo.FOOD_PERMIT)
    with licence_world.ctx.sessions() as db, db.begin():
        lifecycle.change_state(db, own.identifier, "revoke", reason="吊销测试", actor="test")
    found = verification.verify_file(licence_world.ctx, own.pdf)
    assert found["verdict"] == "genuine_but_revoked" and found["usable"] is False
    assert found["licence"]["status"]["state"] == "revoked"
    assert found["file"]["identical_to_issued"] is True


def test_suspended_and_superseded(licence_world):
    suspended = licence_world.issue(demo.BUSINESS_LICENCE)
    with licence_world.ctx.sessions() as db, db.begin():
        lifecycle.change_state(db, suspended.identifier, "suspend", reason="暂扣测试", actor="test")
    assert verification.verify_file(licence_world.ctx, suspended.pdf)["verdict"] == "genuine_but_suspended"

    old = licence_world.issue(demo.BUSINESS_LICENCE)
    new = issuance.next_version(
        licence_world.ctx,
        old.identifier,
        action="change",
        actor="test",
        reason="变更住所",
        face_changes={"domicile": "示范市鼓楼区东街1号"},
    )
    found = verification.verify_file(licence_world.ctx, old.pdf)
    assert found["verdict"] == "genuine_but_superseded"
    assert found["licence"]["successor"] == new.identifier
    assert verification.verify_file(licence_world.ctx, new.pdf)["verdict"] == "genuine_current"


def test_expiry_of_the_licence_is_its_own_verdict(licence_world, licence):
    if licence.valid_until is None:
        pytest.skip("this type has no end date")
    found = verification.verify_file(licence_world.ctx, licence.pdf, today=licence.valid_until + timedelta(days=1))
    assert found["verdict"] == "genuine_but_expired"


def test_a_copy_is_recognised_and_expires(licence_world, licence):
    made = _copy(licence_world, licence.identifier)
    found = verification.verify_file(licence_world.ctx, made.pdf)
    assert found["verdict"] == "genuine_current" and found["kind"] == "copy"
    assert found["copy"]["copy_id"] == made.copy_id and found["copy"]["state"] == "current"
    assert found["licence"]["identifier"] == licence.identifier
    assert found["file"]["identical_to_issued"] is True

    assert verification.verify_file(licence_world.ctx, made.pdf, today=made.until + timedelta(days=1))["verdict"] == "copy_expired"
    with licence_world.ctx.sessions() as db, db.begin():
        db.execute(update(StampedCopy).where(StampedCopy.id == made.copy_id).values(valid_until=lifecycle.today() - timedelta(days=1)))
    expired = verification.verify_file(licence_world.ctx, made.pdf)
    assert expired["verdict"] == "copy_expired" and expired["usable"] is False


def test_a_changed_file_is_modified(licence_world, licence):
    data = bytearray(licence.pdf)
    offset = _stream_byte(licence.pdf)
    data[offset] ^= 0x01
    found = verification.verify_file(licence_world.ctx, bytes(data))
    assert found["verdict"] == "modified" and found["usable"] is False
    assert found["licence"]["identifier"] == licence.identifier  # whose seal it is, so the reader can ask the issuer
    assert found["file"]["identical_to_issued"] is False


def test_content_added_after_sealing_is_modified(licence_world, licence):
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    writer = IncrementalPdfFileWriter(io.BytesIO(licence.pdf))
    page_ref, _ = writer.find_page_for_modification(0)
    extra = writer.add_object(generic.StreamObject(stream_data=b"BT /F1 40 Tf 100 400 Td (VOID) Tj ET"))
    page = page_ref.get_object()
    contents = page["/Contents"]
    page["/Contents"] = generic.ArrayObject(
        [*(contents if isinstance(contents, generic.ArrayObject) else [page.raw_get("/Contents")]), extra]
    )
    writer.update_container(page)
    out = io.BytesIO()
    writer.write(out)
    found = verification.verify_file(licence_world.ctx, out.getvalue())
    assert found["verdict"] == "modified"
    assert found["seal"]["modified_after_signing"] is True


def test_another_sealed_pdf_is_not_a_licence(licence_world):
    from signing.pdf import pades

    sealed = pades.seal_pdf(
        licence_world.ctx.signing, make_pdf("an approval notice"), seal_name=demo.issuer_for(demo.FOOD_PERMIT).name, actor="test"
    )
    found = verification.verify_file(licence_world.ctx, sealed.pdf)
    assert found["verdict"] == "not_a_licence" and found["usable"] is False
    assert found["licence"] is None and found["kind"] is None
    assert found["file"]["sealed_by_this_service"] is True and found["file"]["valid_signatures"] == 1

    plain = verification.verify_file(licence_world.ctx, make_pdf("a scanned paper licence"))
    assert plain["verdict"] == "not_a_licence" and plain["file"]["signatures"] == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is not a PDF",
        bytes(random.Random(7).randrange(256) for _ in range(4096)),
        b"%PDF-1.7\n" + bytes(random.Random(8).randrange(256) for _ in range(4096)),
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF",
        "not bytes",
        None,
    ],
)
def test_what_is_no_pdf_is_422(licence_world, data):
    with pytest.raises(Problem) as refused:
        verification.verify_file(licence_world.ctx, data)
    assert refused.value.status == 422
    assert refused.value.extensions["code"] == "not_a_pdf" and refused.value.extensions["verdict"] == "not_a_pdf"


def test_a_truncated_licence_file_is_refused_or_not_a_licence(licence_world, licence):
    for cut in (len(licence.pdf) // 3, len(licence.pdf) // 2, len(licence.pdf) - 200):
        try:
            found = verification.verify_file(licence_world.ctx, licence.pdf[:cut])
        except Problem as refused:
            assert refused.status == 422
        else:
            assert found["verdict"] in ("modified", "not_a_licence")


def test_a_damaged_compressed_cross_reference_stream_is_422(licence_world, licence):
    """zlib refuses the stream with zlib.error, which is no ValueError: it used to escape as a 500."""
    data = bytearray(licence.pdf)
    xref = licence.pdf.rindex(b"/XRef")
    start = licence.pdf.index(b"stream", xref) + len(b"stream")
    start += 2 if licence.pdf[start : start + 2] == b"\r\n" else 1
    for offset in range(start + 4, start + 12):
        data[offset] ^= 0x5A
    with pytest.raises(Problem) as refused:
        verification.verify_file(licence_world.ctx, bytes(data))
    assert (refused.value.status, refused.value.extensions["code"], refused.value.extensions["reason"]) == (422, "not_a_pdf", "corrupt")


def test_too_large_is_413(licence_world):
    limit = licence_world.ctx.signing.max_pdf_bytes
    with pytest.raises(Problem) as refused:
        verification.verify_file(licence_world.ctx, b"%PDF-1.7\n" + b"0" * limit)
    assert (refused.value.status, refused.value.extensions["code"]) == (413, "too_large")


def test_damaged_licence_files_never_fail_with_500(licence_world, licence):
    """Bytes changed at random places: each answer is a verdict or a 4xx problem, never another exception.

    (A change in what the seal does not cover, such as the validation data added after it, may rightly leave
    the file genuine.)"""
    rng = random.Random(2026)
    verdicts = set()
    for _ in range(25):
        data = bytearray(licence.pdf)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            found = verification.verify_file(licence_world.ctx, bytes(data))
        except Problem as refused:
            assert 400 <= refused.status < 500
            verdicts.add(refused.extensions["code"])
        else:
            assert found["verdict"] in verification.verdicts()
            verdicts.add(found["verdict"])
    assert verdicts  # something was said each time
