"""The licence file: its face as drawn (poppler reads the text, zxing-cpp reads the QR code) and sealed (pdfsig, pyHanko)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import hallmark_env, pkcs11_module_for
from tests.signing_fixtures import DEPARTMENT, pdfsig, pyhanko_ades, signing_world  # noqa: F401 - fixture

ISSUED = date(2026, 12, 6)
IDENTIFIER = "1.2.156.3005.2.{type}.91350100M000100Y43.00000042.001.{check}"

FACES = {
    "business-licence": {
        "credit_code": "91350100MA2XYZ1234",
        "name": "福州示范科技有限公司",
        "entity_type": "有限责任公司（自然人投资或控股）",
        "legal_representative": "陈志强",
        "registered_capital": "壹仟万元整",
        "established_on": "2018-03-15",
        "domicile": "福建省福州市鼓楼区五四路158号环球广场18层1801室",
        "business_scope": "一般项目：技术服务、技术开发、技术咨询、技术交流、技术转让、技术推广；软件开发；信息系统集成服务；"
        "数据处理和存储支持服务。（除依法须经批准的项目外，凭营业执照依法自主开展经营活动）",
    },
    "driving-licence": {
        "licence_number": "350102********2318",
        "name": "林晓燕",
        "sex": "女",
        "nationality": "中国",
        "address": "福建省福州市****",
        "birth_date": "1990-**-**",
        "first_issued_on": "2012-07-20",
        "vehicle_class": "C1",
    },
    "food-business-permit": {
        "permit_number": "JY13501020012345",
        "operator": "福州闽味餐饮管理有限公司",
        "credit_code": "91350102MA31ABCD5K",
        "legal_representative": "黄建华",
        "premises": "福建省福州市台江区江滨中大道363号1层",
        "main_business": "餐饮服务经营者",
        "business_items": "热食类食品制售；冷食类食品制售（含烧卤熟肉）；自制饮品制售（不含自酿酒）",
        "complaint_phone": "12315",
    },
    "teacher-qualification": {
        "certificate_number": "20193510142000123",
        "name": "王雨桐",
        "sex": "女",
        "resident_id": "350102********0024",
        "qualification": "高级中学教师资格",
        "subject": "数学",
    },
}
ISSUERS = {
    "business-licence": "福州市市场监督管理局",
    "driving-licence": "福建省福州市公安局交通警察支队",
    "food-business-permit": "福州市台江区市场监督管理局",
    "teacher-qualification": "福建省教育厅",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def qr_payload(identifier: str) -> str:
    """Something the size of the signed QR payload (a compact JWS, ES256): about 480 characters."""
    header = _b64(json.dumps({"alg": "ES256", "kid": "licences-2026"}).encode())
    claims = {"id": identifier, "h": "福州示范科技有限公司", "vf": "2026-12-06", "exp": 1827000000, "st": "https://id.test/licences/status"}
    return f"{header}.{_b64(json.dumps(claims, ensure_ascii=False).encode())}.{_b64(os.urandom(64))}"


def definition(stem: str):
    from licenses import catalogue

    return catalogue.read_file(catalogue.DEMO_TYPES / f"{stem}.json")


def render(stem: str, **changes) -> tuple[bytes, dict]:
    from licenses import rendering

    kind = definition(stem)
    face = {**FACES[stem], **changes.pop("face", {})}
    arguments = {
        "identifier": IDENTIFIER.format(type=kind.code, check="K"),
        "face": face,
        "holder_name": face[kind.holder_name_field],
        "issuer_name": ISSUERS[stem],
        "valid_from": ISSUED,
        "valid_until": date(ISSUED.year + kind.validity["years"], 12, 5) if kind.validity else None,
        "issued_on": ISSUED,
        "version": 1,
        "qr_text": qr_payload(IDENTIFIER.format(type=kind.code, check="K")),
        **changes,
    }
    return rendering.render_face(kind, **arguments), arguments


def pdftotext(path: Path, *options: str) -> str:
    return subprocess.run(["pdftotext", *options, str(path), "-"], capture_output=True, text=True, check=True, timeout=60).stdout


def png(path: Path) -> Path:
    subprocess.run(["pdftoppm", "-r", "150", "-png", "-singlefile", str(path), str(path.with_suffix(""))], check=True, timeout=60)
    return path.with_suffix(".png")


def qr_codes(image: Path) -> list[str]:
    import zxingcpp
    from PIL import Image

    with Image.open(image) as picture:
        return [found.text for found in zxingcpp.read_barcodes(picture) if found.format == zxingcpp.BarcodeFormat.QRCode]


def words(path: Path) -> list[tuple[str, float, float, float, float]]:
    """Every word poppler finds with its box (points, from the top left)."""
    html = pdftotext(path, "-bbox")
    return [
        (text, float(x0), float(y0), float(x1), float(y1))
        for x0, y0, x1, y1, text in re.findall(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>', html
        )
    ]


def page_size(pdf: bytes) -> tuple[int, float, float]:
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(pdf))
    pages = reader.root["/Pages"]
    box = [float(v) for v in pages["/Kids"][0]["/MediaBox"]]
    return int(pages["/Count"]), box[2] - box[0], box[3] - box[1]


def assert_laid_out_inside(path: Path, pdf: bytes) -> None:
    """All text inside the inner frame, and none in the area kept for the seal."""
    from licenses import rendering
    from signing.pdf import stamp

    _, width, height = page_size(pdf)
    x0, y0, x1, y1 = stamp.default_box((0, 0, width, height), rendering.SEAL_PLACEMENT.width, rendering.SEAL_PLACEMENT.height)
    found = words(path)
    assert found
    inner = rendering.FRAME_INNER
    for text, left, top, right, bottom in found:
        assert inner < left and right < width - inner and inner < top and bottom < height - inner, (text, left, top, right, bottom)
        overlaps = left < x1 and right > x0 and top < height - y0 and bottom > height - y1
        assert not overlaps, f"{text!r} is in the seal's area"


@pytest.mark.parametrize("stem", sorted(FACES))
def test_each_demo_type_renders_as_one_page_with_real_chinese_text_and_a_readable_qr(stem, tmp_path):
    pdf, arguments = render(stem)
    path = tmp_path / f"{stem}.pdf"
    path.write_bytes(pdf)
    kind = definition(stem)

    count, width, height = page_size(pdf)
    assert (count, width, height) == (1, 842, 595)  # A4 landscape
    text = pdftotext(path)
    assert kind.name in text, text
    assert arguments["holder_name"] in text
    assert ISSUERS[stem] in text
    assert arguments["identifier"] in text
    assert "2026年12月06日" in text
    assert ("长期有效" in text) == (not kind.validity)
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
    embedded = [line for line in fonts.splitlines() if "+Noto" in line]
    assert embedded and all(re.search(r"CID Type 0C\s+Identity-H\s+yes\s+yes\s+yes", line) for line in embedded), fonts

    assert qr_codes(png(path)) == [arguments["qr_text"]]
    assert_laid_out_inside(path, pdf)


def test_values_print_as_given_in_layout_order_with_dates_in_chinese(tmp_path):
    pdf, _ = render("driving-licence")
    path = tmp_path / "driving.pdf"
    path.write_bytes(pdf)
    text = pdftotext(path, "-layout")
    assert "350102********2318" in text  # the masked value as the caller gave it
    assert "2012年07月20日" in text and "2012-07-20" not in text
    assert "2026年12月06日 至 2032年12月05日" in text
    order = [text.index(value) for value in ("350102********2318", "林晓燕", "中国", "C1")]
    assert order == sorted(order)


def test_the_longest_values_the_schema_allows_stay_on_the_page(tmp_path):
    long_face = {
        "name": "福州" + "示范" * 45 + "有限公司",
        "domicile": "福建省福州市鼓楼区" + "五四路158号环球广场" * 18,
        "business_scope": ("一般项目：技术服务、技术开发、技术咨询；" * 30)[:600],
    }
    pdf, arguments = render("business-licence", face=long_face, issuer_name="福建省福州市鼓楼区市场监督管理局自由贸易试验区福州片区分局")
    path = tmp_path / "long.pdf"
    path.write_bytes(pdf)
    assert page_size(pdf)[0] == 1
    text = pdftotext(path)
    assert "营业执照" in text and "一般项目：技术服务" in text
    assert_laid_out_inside(path, pdf)
    assert qr_codes(png(path)) == [arguments["qr_text"]]


def test_a_copy_for_a_stated_use_carries_its_note_and_the_qr_still_reads(tmp_path):
    note = "仅供 示范市住房公积金管理中心 用于 住房公积金提取，有效期至 2027年01月05日"
    pdf, arguments = render("teacher-qualification", copy_note=note)
    path = tmp_path / "copy.pdf"
    path.write_bytes(pdf)
    text = pdftotext(path)
    assert "加注件" in text and note in text
    assert qr_codes(png(path)) == [arguments["qr_text"]]
    plain, _ = render("teacher-qualification")
    (tmp_path / "plain.pdf").write_bytes(plain)
    assert "加注件" not in pdftotext(tmp_path / "plain.pdf")


def test_a_layout_can_ask_for_a_portrait_page(tmp_path):
    import dataclasses

    from licenses import rendering

    kind = definition("teacher-qualification")
    portrait = dataclasses.replace(kind, layout={**kind.layout, "page": "A4-portrait"})
    face = FACES["teacher-qualification"]
    pdf = rendering.render_face(
        portrait,
        identifier=IDENTIFIER.format(type=kind.code, check="K"),
        face=face,
        holder_name=face["name"],
        issuer_name="福建省福州市鼓楼区教育局",
        valid_from=ISSUED,
        valid_until=None,
        issued_on=ISSUED,
        version=2,
        qr_text="https://id.test/licences/verify/x",
    )
    path = tmp_path / "portrait.pdf"
    path.write_bytes(pdf)
    assert page_size(pdf) == (1, 595, 842)
    assert "教师资格证书" in pdftotext(path) and "版本 Version 002" in pdftotext(path)
    assert_laid_out_inside(path, pdf)
    assert qr_codes(png(path)) == ["https://id.test/licences/verify/x"]


@pytest.mark.parametrize("length", [40, 900])
def test_the_qr_code_grows_with_its_payload_and_reads_back(tmp_path, length):
    text = ("https://id.test/licences/verify/" + _b64(os.urandom(length)))[:length]
    pdf, _ = render("food-business-permit", qr_text=text)
    path = tmp_path / "qr.pdf"
    path.write_bytes(pdf)
    assert qr_codes(png(path)) == [text]
    assert_laid_out_inside(path, pdf)


def test_a_long_copy_note_wraps_in_its_band(tmp_path):
    note = (
        "仅供 福建省福州市鼓楼区不动产登记和交易服务中心（示范市自然资源和规划局直属事业单位）用于 办理不动产转移登记、"
        "抵押登记及相关税费核定业务，核验申请人企业主体资格与经营范围，有效期至 2027年01月05日"
    )
    pdf, arguments = render("business-licence", copy_note=note)
    path = tmp_path / "long-copy.pdf"
    path.write_bytes(pdf)
    assert page_size(pdf)[0] == 1
    assert "有效期至 2027年01月05日" in pdftotext(path)
    assert qr_codes(png(path)) == [arguments["qr_text"]]


def test_a_large_qr_code_and_a_copy_band_leave_short_values_at_a_readable_size(tmp_path):
    note = "仅供 示范市市场监管审批系统 办理 食品经营许可证核发 使用 · 用途：核验申请人营业执照 · 有效期至 2026年12月09日"
    qr_text = "https://id.test/licences/q#" + _b64(os.urandom(520))
    pdf, _ = render("business-licence", qr_text=qr_text, copy_note=note)
    path = tmp_path / "crowded.pdf"
    path.write_bytes(pdf)
    heights = {text: bottom - top for text, _, top, _, bottom in words(path)}
    # poppler's box is the font's ascent to descent, 1.45 em: 16 points for 11 pt text, 10 for 7 pt
    assert heights["陈志强"] >= 13, heights["陈志强"]
    assert page_size(pdf)[0] == 1
    assert qr_codes(png(path)) == [qr_text]


def test_lines_break_between_characters_but_not_before_closing_or_after_opening_punctuation():
    from licenses.rendering import _wrap

    assert _wrap(len, "甲乙丙，丁戊", 3) == ["甲乙", "丙，丁", "戊"]
    assert _wrap(len, "甲乙（丙）丁", 3) == ["甲乙", "（丙）", "丁"]
    assert _wrap(len, "ab 1234567 cd", 8) == ["ab", "1234567", "cd"]  # a number stays whole
    assert _wrap(len, "0123456789", 4) == ["0123", "4567", "89"]  # unless it is wider than the line
    assert _wrap(len, "甲\n乙", 9) == ["甲", "乙"]


def test_characters_the_font_lacks_print_as_a_box_instead_of_failing(tmp_path):
    pdf, _ = render("business-licence", face={"name": "福州\U0001f600科技\u200b有限公司\U00020bb7"})
    path = tmp_path / "odd.pdf"
    path.write_bytes(pdf)
    assert "福州□科技有限公司\U00020bb7" in pdftotext(path)  # the emoji boxed, the zero-width space dropped, 𠮷 kept


@pytest.fixture(scope="module")
def world_signing(signing_world):
    """The signing service of the running signing world's instance, in this process."""
    from hallmark import components, wiring

    # a SoftHSM2 of its own for the instance's token folder (this process's SoftHSM2 serves the test token)
    module = pkcs11_module_for(signing_world.instance / "softhsm" / "softhsm2.conf")
    environ = hallmark_env(signing_world.instance, HALLMARK_PUBLIC_URL=signing_world.base, HALLMARK_PKCS11_MODULE=module)
    services = wiring.build(components.load_settings(signing_world.instance, environ=environ))
    yield services["signing"]
    services.close()


@pytest.mark.slow
def test_a_sealed_licence_file_is_valid_for_pdfsig_and_pyhanko(signing_world, world_signing, tmp_path):
    from pyhanko.pdf_utils.reader import PdfFileReader

    from licenses import rendering
    from signing.pdf import stamp

    pdf, arguments = render("business-licence")
    result = rendering.seal_file(world_signing, pdf, seal_name=DEPARTMENT, actor="test:licences", reason="颁发电子证照")
    path = tmp_path / "sealed.pdf"
    path.write_bytes(result.pdf)

    judged = pdfsig(path, signing_world.nssdir)
    assert len(judged) == 1
    assert judged[0].signature_valid and judged[0].certificate_trusted, judged[0].lines
    assert judged[0].value("Signer Certificate Common Name") == DEPARTMENT
    theirs = pyhanko_ades(result.pdf, signing_world.root_der, signing_world.intermediates_der(), signing_world.crls_der())
    assert theirs == [("PASSED", None)]
    signature = PdfFileReader(io.BytesIO(result.pdf)).embedded_signatures[0]
    assert "/DSS" in PdfFileReader(io.BytesIO(result.pdf)).root  # B-LT: validation data embedded
    rect = [float(v) for v in signature.sig_field["/Rect"]]
    assert rect == [float(round(v)) for v in stamp.default_box((0, 0, 842, 595))]  # the area the face kept empty
    assert result.document.level == "B-LT"

    # on the sealed page: the licence's QR code and the seal's (its verification page)
    assert sorted(qr_codes(png(path))) == sorted([arguments["qr_text"], result.verify_url])
