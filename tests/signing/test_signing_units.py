"""Signing services in-process: schema, seals, grants, input checks, the hex-string reader, images, placement."""

from __future__ import annotations

import io
import random

import pytest
from sqlalchemy import func, select

from core.problems import Problem
from tests.signing_fixtures import DEPARTMENT, DEPARTMENT_CODE, encrypted_pdf, make_pdf, valid_credit_code


@pytest.fixture
def sctx(ca_context):
    from signing.context import SigningContext

    return SigningContext(ca=ca_context, public_url="https://verify.test")


@pytest.fixture
def seal_name(sctx):
    from signing import seals

    return seals.add(sctx.ca, department=DEPARTMENT, credit_code=DEPARTMENT_CODE, actor="test").name


def _count(sctx, model) -> int:
    with sctx.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_migration_matches_the_models(migrated):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import ca.models  # noqa: F401 - every table the signing tables refer to
    import signing.models  # noqa: F401
    from core.db import Base

    engine, _ = migrated
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)

    def table_of(difference) -> str:
        if isinstance(difference, list):  # modify_* changes come grouped per column
            difference = difference[0]
        for item in difference[1:]:
            name = (
                getattr(item, "name", None)
                if hasattr(item, "columns")
                else (getattr(getattr(item, "table", None), "name", None) or (item if isinstance(item, str) else None))
            )
            if name and name != "None":
                return name
        return ""

    ours = [d for d in differences if table_of(d).startswith("signing_")]
    assert ours == []


def test_fast_hex_reader_matches_pyhankos(monkeypatch):
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.misc import PdfStreamError

    from signing.pdf import fasthex as pdfspeed

    rng = random.Random(7)
    samples = [b"<>", b"<4>", b"<48656C6C6F>", b"< 48 65\n6c\r\n6C\t6F >", b"<00" + b"0" * 20000 + b">", b"<41% comment\n42>"]
    samples += [b"<" + bytes(rng.choice(b"0123456789abcdefABCDEF \n") for _ in range(rng.randint(0, 40000))) + b">" for _ in range(20)]
    for sample in samples:
        data = b"junk " + sample + b" trailer"
        theirs, ours = io.BytesIO(data), io.BytesIO(data)
        theirs.seek(5)
        ours.seek(5)
        expected = pdfspeed._ORIGINAL(theirs)
        got = pdfspeed.read_hex_string_from_stream(ours)
        assert bytes(got.original_bytes) == bytes(expected.original_bytes) and type(got) is type(expected)
        assert ours.tell() == theirs.tell()
    for broken in (b"<48zz>", b"<4865"):
        with pytest.raises(PdfStreamError):
            pdfspeed.read_hex_string_from_stream(io.BytesIO(broken))
    assert generic.read_hex_string_from_stream is pdfspeed.read_hex_string_from_stream


def test_demo_seal_and_image_checks():
    from PIL import Image

    from signing.pdf import sealimage

    png = sealimage.demo_seal(DEPARTMENT)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (sealimage.SIZE, sealimage.SIZE) and image.mode == "RGBA"
        raw = image.tobytes()
        pixels = [raw[i : i + 4] for i in range(0, len(raw), 4)]
        red = sum(1 for r, g, b, a in pixels if a > 200 and r > 150 and g < 80 and b < 80)
        transparent = sum(1 for *_, a in pixels if a == 0)
    assert red > 10_000 and transparent > 100_000  # a red seal on a clear background
    assert sealimage.check_image(png).startswith(b"\x89PNG")
    gif = io.BytesIO()
    Image.new("RGB", (100, 100)).save(gif, "GIF")
    for bad, words in (
        (b"not an image", "cannot be read"),
        (gif.getvalue(), "PNG or JPEG"),
        (b"\x89PNG" + b"0" * (2 * 1024 * 1024), "larger"),
    ):
        with pytest.raises(Problem) as refused:
            sealimage.check_image(bad)
        assert refused.value.status == 422 and words in refused.value.detail


def test_seal_add_is_all_or_nothing(sctx, seal_name):
    from ca.models import Certificate
    from signing import seals
    from signing.models import Seal

    certificates, stored = _count(sctx, Certificate), _count(sctx, Seal)
    with pytest.raises(Problem) as duplicate:
        seals.add(sctx.ca, department=DEPARTMENT, credit_code=DEPARTMENT_CODE, actor="test")
    assert duplicate.value.status == 409
    with pytest.raises(Problem) as bad_code:
        seals.add(sctx.ca, department="某局", credit_code="91350100M000100Y44", name="bad", actor="test")
    assert bad_code.value.status == 422
    with pytest.raises(Problem) as bad_image:
        seals.add(sctx.ca, department="某局", credit_code=valid_credit_code("11350100MB000002"), name="img", image=b"nope", actor="test")
    assert bad_image.value.status == 422
    assert (_count(sctx, Certificate), _count(sctx, Seal)) == (certificates, stored)
    listed = {s.name: s for s in seals.list_seals(sctx.ca)}
    assert listed[seal_name].certificate_status == "valid" and listed[seal_name].credit_code == DEPARTMENT_CODE


def test_grants_decide_which_seals_a_client_uses(sctx, seal_name):
    from signing import seals

    with pytest.raises(Problem) as none:
        seals.choose_for_client(sctx.ca, "hall", None)
    assert none.value.status == 403
    seals.grant(sctx.ca, "hall", DEPARTMENT, actor="test")  # by the department's name
    assert seals.choose_for_client(sctx.ca, "hall", None) == seal_name
    other = seals.add(sctx.ca, department="示范市税务局", credit_code=valid_credit_code("11350100MB000003"), actor="test")
    with pytest.raises(Problem) as foreign:
        seals.choose_for_client(sctx.ca, "hall", other.name)
    assert foreign.value.status == 403 and foreign.value.extensions["code"] == "seal_of_another_department"
    assert seals.revoke_grant(sctx.ca, "hall", DEPARTMENT_CODE, actor="test")
    with pytest.raises(Problem):
        seals.choose_for_client(sctx.ca, "hall", seal_name)
    seals.retire(sctx.ca, seal_name, actor="test")
    with pytest.raises(Problem) as retired:
        seals.load(sctx.ca, seal_name)
    assert retired.value.status == 409


@pytest.mark.parametrize(
    "data, status, code",
    [
        (b"hello", 422, "not_a_pdf"),
        (b"%PDF-1.7\n garbage without structure", 422, "corrupt"),
        ("encrypted", 422, "encrypted"),
        ("large", 413, "too_large"),
    ],
)
def test_pdf_input_refusals(data, status, code):
    from signing.pdf import reading as pdfinput

    if data == "encrypted":
        data = encrypted_pdf()
    elif data == "large":
        data = make_pdf() + b" " * pdfinput.MAX_PDF_BYTES
    with pytest.raises(Problem) as refused:
        pdfinput.read(data)
    assert refused.value.status == status and refused.value.extensions["code"] == code


def test_seal_placement_and_report(sctx, seal_name):
    from pyhanko.pdf_utils.reader import PdfFileReader

    from signing import report
    from signing.models import SignedDocument
    from signing.pdf import pades

    three_pages = make_pdf(pages=3)
    result = pades.seal_pdf(
        sctx, three_pages, seal_name=seal_name, level="B-T", placement=pades.Placement(page=2, x=100, y=100), actor="test"
    )
    signature = PdfFileReader(io.BytesIO(result.pdf)).embedded_signatures[0]
    widget = signature.sig_field
    rect = [float(v) for v in widget["/Rect"]]
    assert rect == [100.0, 100.0, 100.0 + pades.stamp.DEFAULT_WIDTH, 100.0 + pades.stamp.DEFAULT_HEIGHT]
    pages = PdfFileReader(io.BytesIO(result.pdf)).root["/Pages"]["/Kids"]
    assert widget.get("/P") is not None and widget.raw_get("/P").reference == pages.raw_get(1).reference
    assert result.verify_url == f"https://verify.test/verify/{result.document.id}"
    found = report.validate(sctx.ca, result.pdf, with_records=True)
    entry = found["signatures"][0]
    assert entry["indication"] == "TOTAL_PASSED" and entry["hallmark_document_id"] == result.document.id
    invisible = pades.seal_pdf(sctx, three_pages, seal_name=seal_name, level="B-B", placement=pades.Placement(visible=False), actor="test")
    hidden = PdfFileReader(io.BytesIO(invisible.pdf)).embedded_signatures[0].sig_field
    assert [float(v) for v in hidden.get("/Rect", [0, 0, 0, 0])] == [0.0, 0.0, 0.0, 0.0]
    before = _count(sctx, SignedDocument)
    for placement in (pades.Placement(page=4), pades.Placement(page=1, x=560, y=10), pades.Placement(width=5)):
        with pytest.raises(Problem) as refused:
            pades.seal_pdf(sctx, three_pages, seal_name=seal_name, placement=placement, actor="test")
        assert refused.value.status == 422
    with pytest.raises(Problem):
        pades.seal_pdf(sctx, three_pages, seal_name=seal_name, level="C-X", actor="test")
    assert _count(sctx, SignedDocument) == before
