"""One verdict per check: a changed sealed PDF is only ever called changed, on /verify, /validate and in ``hallmark validate``.

Two ways a sealed file goes wrong: its signed bytes are edited in place (the digest
no longer matches), or a revision is appended after sealing that changes the page
(an incremental update no seal allows). Neither page may show a "genuine" or
"valid" verdict next to the failure, nor "changed after signing: no".
"""

from __future__ import annotations

import hashlib
import io
import re

import pytest
import requests

from tests.signing_fixtures import (
    DEPARTMENT,
    make_pdf,
    signing_world,  # noqa: F401 - fixture
    tamper,
)

pytestmark = pytest.mark.slow


def _seal(world, pdf: bytes, level: str = "B-T") -> requests.Response:
    answer = requests.post(
        world.base + "/api/sign/pdf",
        params={"level": level},
        data=pdf,
        headers={"Authorization": f"Bearer {world.token()}", "Content-Type": "application/pdf"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer


def changed_page_after_sealing(sealed: bytes) -> bytes:
    """An incremental update that replaces the first page's text: not something a seal permits."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    writer = IncrementalPdfFileWriter(io.BytesIO(sealed))
    page = writer.root["/Pages"]["/Kids"][0]
    content = writer.add_object(generic.StreamObject(stream_data=b"BT /F1 14 Tf 72 760 Td (Hallmark FORGED document - page 1) Tj ET"))
    page[generic.NameObject("/Contents")] = content
    writer.update_container(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def text_of(html: str) -> str:
    """The page's visible text, tags dropped, whitespace folded."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture(scope="module")
def sealed(signing_world):
    answer = _seal(signing_world, make_pdf())
    return answer.content, answer.headers["Hallmark-Document-Id"]


@pytest.fixture(scope="module", params=["edited in place", "page replaced by a later revision"])
def spoiled(request, sealed):
    data, _ = sealed
    return tamper(data) if request.param == "edited in place" else changed_page_after_sealing(data)


def test_verify_page_gives_only_the_failing_verdict(signing_world, sealed, spoiled):
    world = signing_world
    _, document_id = sealed
    for lang, failing, passing in (
        ("en", "Not genuine", ("Genuine", "Same document", "Changed after signing no")),
        ("zh", "不是真实文件", ("真实有效", "同一文件", "签署后是否改动 否")),
    ):
        page = requests.post(
            f"{world.base}/verify/{document_id}?lang={lang}", files={"file": ("copy.pdf", spoiled, "application/pdf")}, timeout=60
        )
        assert page.status_code == 200
        shown = text_of(page.text)
        assert failing in shown, shown
        for word in passing:
            assert word not in shown, (lang, word, shown)
        assert 'data-indication="TOTAL_PASSED"' not in page.text
        assert len(re.findall(r'class="verdict [a-z]+"', page.text)) == 1, page.text


def test_validate_page_gives_only_the_failing_verdict(signing_world, spoiled):
    world = signing_world
    page = requests.post(f"{world.base}/validate?lang=en", files={"file": ("x.pdf", spoiled, "application/pdf")}, timeout=60)
    assert page.status_code == 200
    shown = text_of(page.text)
    assert 'data-indication="TOTAL_FAILED"' in page.text and "Not valid" in shown, shown
    assert 'data-indication="TOTAL_PASSED"' not in page.text
    for word in ("Genuine", "Changed after signing no"):
        assert word not in shown, (word, shown)
    assert len(re.findall(r'class="verdict [a-z]+"', page.text)) == 1, page.text


def test_cli_gives_only_the_failing_verdict(signing_world, spoiled, tmp_path):
    world = signing_world
    path = tmp_path / "spoiled.pdf"
    path.write_bytes(spoiled)
    result = world.hallmark("validate", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TOTAL_FAILED" in result.stdout, result.stdout
    assert "modified after signing: no" not in result.stdout and "TOTAL_PASSED" not in result.stdout, result.stdout
    assert "verdict: not valid" in result.stdout, result.stdout


def test_the_report_says_what_changed(signing_world, spoiled):
    world = signing_world
    answer = requests.post(
        world.base + "/api/validate",
        data=spoiled,
        headers={"Authorization": f"Bearer {world.token()}", "Content-Type": "application/pdf"},
        timeout=60,
    )
    found = answer.json()
    entry = found["signatures"][0]
    assert entry["indication"] == "TOTAL_FAILED", entry
    assert entry["modified_after_signing"] is True, entry
    assert found["indication"] == "TOTAL_FAILED"


def test_an_intact_seal_is_still_genuine(signing_world, sealed):
    world = signing_world
    data, document_id = sealed
    page = requests.post(f"{world.base}/verify/{document_id}?lang=en", files={"file": ("copy.pdf", data, "application/pdf")}, timeout=60)
    shown = text_of(page.text)
    assert "Same document" in shown and "Not genuine" not in shown and "Changed after signing no" in shown
    assert DEPARTMENT in shown
    assert len(re.findall(r'class="verdict [a-z]+"', page.text)) == 1


# -- what the verification page says was sealed ---------------------------------------------------

TITLE = "示范市企业设立登记申请书"


def titled_pdf(pages: int = 3) -> bytes:
    """A PDF of ``pages`` pages whose document information names its title."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    writer = IncrementalPdfFileWriter(io.BytesIO(make_pdf("Hallmark test document", pages=pages)))
    writer.set_info(generic.DictionaryObject({generic.NameObject("/Title"): generic.TextStringObject(TITLE)}))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_verify_page_identifies_the_sealed_document(signing_world):
    """Title, page count, a first-page picture and the digest: a QR code copied onto another paper vouches for none of it."""
    import base64

    from PIL import Image

    world = signing_world
    pdf = titled_pdf(pages=3)
    sealed = _seal(world, pdf)
    document_id = sealed.headers["Hallmark-Document-Id"]
    for lang, pages_label in (("zh", "页数"), ("en", "Pages")):
        page = requests.get(f"{world.base}/verify/{document_id}?lang={lang}", timeout=10)
        assert page.status_code == 200
        shown = text_of(page.text)
        assert TITLE in shown and f"{pages_label} 3" in shown, shown
        assert hashlib.sha256(sealed.content).hexdigest() in shown
        # The reader is offered to check the file in their hands.
        assert f'action="/verify/{document_id}"' in page.text and 'type="file"' in page.text
    picture = re.search(r'<img class="thumbnail" id="thumbnail" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page.text)
    assert picture, page.text
    image = Image.open(io.BytesIO(base64.b64decode(picture.group(1))))
    assert image.format == "PNG" and image.width <= 240 and image.height > image.width  # an A4 page, upright
    darkest = image.convert("L").getextrema()[0]
    assert darkest < 128  # something is drawn on it (the text, the seal), not a blank page
    as_json = requests.get(f"{world.base}/api/sign/documents/{document_id}", timeout=10).json()
    assert as_json["title"] == TITLE and as_json["pages"] == 3 and as_json["thumbnail"] is True
