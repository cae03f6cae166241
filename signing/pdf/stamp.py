"""The visible seal stamp: the seal image, and a QR code that opens the verification page.

Drawn as a pyHanko stamp style so it becomes the signature field's appearance.
What does not change between signatures is prepared once per process: the seal
image is decoded, scaled and Flate-compressed once per seal (pyHanko's
``PdfImage`` would recompress the pixels for every document), and only the two
compressed streams are added to each document. The QR code is drawn as vector
rectangles, one run of dark modules at a time.
"""

from __future__ import annotations

import hashlib
import io
import threading
import zlib
from dataclasses import dataclass

from pyhanko.pdf_utils import generic, layout
from pyhanko.pdf_utils.content import ResourceType
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.stamp.base import BaseStamp, BaseStampStyle

STAMP_PIXELS = 300  # the seal image is embedded at this size (about 2.1 cm at 360 dpi)
DEFAULT_WIDTH = 210.0  # points (1/72 inch)
DEFAULT_HEIGHT = 110.0
MARGIN = 36.0  # default distance from the page edge
CAPTION = b"Scan to verify"
CAPTION_SIZE = 6.0


def seal_size(width: float, height: float) -> float:
    return min(height, width * 0.55)


def qr_size(width: float, height: float) -> float:
    return max(min(width - seal_size(width, height) - 4, height - CAPTION_SIZE - 6), 20)


@dataclass(frozen=True)
class PreparedImage:
    width: int
    height: int
    rgb: bytes  # Flate-compressed 8-bit RGB samples
    alpha: bytes  # Flate-compressed 8-bit alpha samples

    def add_to(self, writer: BasePdfFileWriter) -> generic.IndirectObject:
        common = {
            pdf_name("/Type"): pdf_name("/XObject"),
            pdf_name("/Subtype"): pdf_name("/Image"),
            pdf_name("/Width"): generic.NumberObject(self.width),
            pdf_name("/Height"): generic.NumberObject(self.height),
            pdf_name("/BitsPerComponent"): generic.NumberObject(8),
            pdf_name("/Filter"): pdf_name("/FlateDecode"),
        }
        mask = writer.add_object(
            generic.StreamObject({**common, pdf_name("/ColorSpace"): pdf_name("/DeviceGray")}, encoded_data=self.alpha)
        )
        return writer.add_object(
            generic.StreamObject(
                {**common, pdf_name("/ColorSpace"): pdf_name("/DeviceRGB"), pdf_name("/SMask"): mask}, encoded_data=self.rgb
            )
        )


_prepared: dict[str, PreparedImage] = {}
_prepared_lock = threading.Lock()


def prepare_image(png: bytes) -> PreparedImage:
    """The seal image ready to embed; computed once per distinct image per process."""
    key = hashlib.sha256(png).hexdigest()
    found = _prepared.get(key)
    if found is not None:
        return found
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        rgba = image.convert("RGBA")
    rgba.thumbnail((STAMP_PIXELS, STAMP_PIXELS), Image.LANCZOS)
    red, green, blue, alpha = rgba.split()
    rgb = Image.merge("RGB", (red, green, blue))
    found = PreparedImage(rgba.width, rgba.height, zlib.compress(rgb.tobytes(), 9), zlib.compress(alpha.tobytes(), 9))
    with _prepared_lock:
        _prepared[key] = found
    return found


def qr_matrix(text: str, border: int = 1) -> list[list[bool]]:
    """The modules of the QR code of ``text`` (error correction M, a ``border``-module quiet zone), row by row from the top."""
    import qrcode

    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=border)
    code.add_data(text.encode("utf-8"))
    code.make(fit=True)
    return code.get_matrix()


def qr_runs(matrix: list[list[bool]]):
    """(row, first column, length) of each horizontal run of dark modules: one rectangle each when drawn."""
    for row_index, row in enumerate(matrix):
        column, count = 0, len(row)
        while column < count:
            if not row[column]:
                column += 1
                continue
            start = column
            while column < count and row[column]:
                column += 1
            yield row_index, start, column - start


def qr_commands(url: str | list[list[bool]], size: float) -> bytes:
    """PDF path operators drawing the QR code of ``url`` (or a :func:`qr_matrix`) in a ``size`` square (origin bottom left)."""
    matrix = qr_matrix(url) if isinstance(url, str) else url
    count = len(matrix)
    module = size / count
    parts = [b"1 1 1 rg 0 0 %.3f %.3f re f 0 0 0 rg" % (size, size)]
    for row_index, start, length in qr_runs(matrix):
        parts.append(b"%.3f %.3f %.3f %.3f re" % (start * module, size - (row_index + 1) * module, length * module, module))
    parts.append(b"f")
    return b"\n".join(parts)


@dataclass(frozen=True)
class SealStampStyle(BaseStampStyle):
    """Seal image on the left, QR code and caption on the right."""

    image: PreparedImage | None = None
    border_width: int = 0
    background_opacity: float = 1.0

    def create_stamp(self, writer: BasePdfFileWriter, box: layout.BoxConstraints, text_params: dict) -> SealStamp:
        return SealStamp(writer, self, text_params["url"], box=box)


class SealStamp(BaseStamp):
    def __init__(self, writer, style: SealStampStyle, url: str, box: layout.BoxConstraints | None = None):
        super().__init__(writer, style, box=box or layout.BoxConstraints(DEFAULT_WIDTH, DEFAULT_HEIGHT))
        self.url = url

    def _render_inner_content(self):
        box = self.box
        width = box.width if box.width_defined else DEFAULT_WIDTH
        height = box.height if box.height_defined else DEFAULT_HEIGHT
        if not box.width_defined:
            box.width = width
        if not box.height_defined:
            box.height = height
        commands = []
        seal_side = seal_size(width, height)
        image = self.style.image
        if image is not None:
            self.set_resource(ResourceType.XOBJECT, pdf_name("/Seal"), image.add_to(self.writer))
            scale_x = seal_side * image.width / max(image.width, image.height)
            scale_y = seal_side * image.height / max(image.width, image.height)
            commands.append(b"q %.3f 0 0 %.3f 0 %.3f cm /Seal Do Q" % (scale_x, scale_y, (height - scale_y) / 2))
        qr_side = qr_size(width, height)
        qr_x = width - qr_side
        qr_y = CAPTION_SIZE + 4 + (height - CAPTION_SIZE - 4 - qr_side) / 2
        commands.append(b"q 1 0 0 1 %.3f %.3f cm %s Q" % (qr_x, qr_y, qr_commands(self.url, qr_side)))
        self.set_resource(
            ResourceType.FONT,
            pdf_name("/Hm"),
            generic.DictionaryObject(
                {
                    pdf_name("/Type"): pdf_name("/Font"),
                    pdf_name("/Subtype"): pdf_name("/Type1"),
                    pdf_name("/BaseFont"): pdf_name("/Helvetica"),
                    pdf_name("/Encoding"): pdf_name("/WinAnsiEncoding"),
                }
            ),
        )
        commands.append(b"BT 0 0 0 rg /Hm %.1f Tf %.3f %.3f Td (%s) Tj ET" % (CAPTION_SIZE, qr_x + 2, 3.0, CAPTION))
        return commands


def default_box(page_box: tuple[float, float, float, float], width: float = DEFAULT_WIDTH, height: float = DEFAULT_HEIGHT) -> tuple:
    """Bottom right of the page, where a Chinese official document is sealed over its date."""
    _x0, y0, x1, _ = page_box
    return (x1 - MARGIN - width, y0 + MARGIN, x1 - MARGIN, y0 + MARGIN + height)
