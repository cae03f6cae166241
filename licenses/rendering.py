"""The licence file: its face drawn as a one-page PDF, then sealed PAdES B-LT by the issuing department.

The page is written directly with pyHanko's writer: a double frame in the
type's accent colour, the title with its English name, the face fields in a
ruled table in the layout's order, the validity, the issuer and date of issue,
the identifier in small print, the licence QR code (vector rectangles) and an
empty area at the bottom right where :func:`seal_file` puts the department's
seal. A copy for a stated use (加注件) also carries its note as a band and as a
faint diagonal watermark. A type's ``layout`` gives the field order (``fields``),
the accent colour (``accent``) and the page (``page``: ``A4-landscape``, the
default, or ``A4-portrait``); long values are set smaller or wrapped so that the
face always stays one page.

Chinese text is real text: shaped by HarfBuzz and embedded as a subset of a
Noto CJK font through pyHanko's OpenType support, so it can be searched and
extracted. Debian ships Noto CJK as collections (``.ttc``) of CFF-outline fonts;
fontTools cannot open a collection without being told which face, so the
Simplified Chinese face is copied out once per process into memory (its tables
as they are, without the vertical and layout tables nothing here uses) and each
document builds its glyph subset from those bytes. pyHanko's
``GlyphAccumulatorFactory`` only takes a file path (and leaves the file open), so
:class:`~pyhanko.pdf_utils.font.opentype.GlyphAccumulator` is given the bytes
directly, and no font file is written anywhere.

A page embeds one weight (bold is drawn by also stroking the outlines, as word
processors embolden 宋体) because most of a page's time is building the subset
from a 65,000-glyph font, about 0.15 s to read its CFF, charset and metrics and
0.15 s to subset it; a second weight would double that. The face extraction and
character widths, which do not depend on the document, are done once per process.
"""

from __future__ import annotations

import io
import math
import re
import threading
import unicodedata
from dataclasses import dataclass
from datetime import date

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.opentype import GlyphAccumulator
from pyhanko.pdf_utils.writer import PdfFileWriter

from licenses.catalogue import TypeView
from signing.context import SigningContext
from signing.pdf import pades, stamp
from signing.pdf.sealimage import cjk_font_path

PAGE_SIZES = {"A4-landscape": (842.0, 595.0), "A4-portrait": (595.0, 842.0)}
DEFAULT_PAGE = "A4-landscape"
DEFAULT_ACCENT = "#b0102a"

# The seal goes where pades puts it by default: the bottom right corner of the (only) page, whatever its size.
SEAL_PLACEMENT = pades.Placement(page=1)

QR_MODULE = 1.25  # points a QR module: 2.6 pixels at 150 dpi, 0.44 mm on paper
QR_SIZES = (100.0, 150.0)  # the QR code's smallest and largest side in points (3.5 to 5.3 cm)
MARGIN = 46.0  # from the page edge to the text (the seal stamp keeps 36)
FRAME_OUTER = 16.0
FRAME_INNER = 21.5

MISSING = "\u25a1"  # □, what official documents print for a character the type cannot set
_name = generic.NameObject


# -- fonts --------------------------------------------------------------------------------------

# Tables the page never uses: pyHanko drops the layout tables from every subset anyway, but fontTools
# would still decompile them for each document; vertical metrics are for vertical writing.
_UNUSED_TABLES = ("GSUB", "GPOS", "GDEF", "BASE", "JSTF", "MATH", "VORG", "vhea", "vmtx", "DSIG")


@dataclass
class _Font:
    data: bytes  # one standalone OpenType font
    hb_font: object  # uharfbuzz.Font over the same bytes, for measuring text before it is drawn
    units_per_em: int
    widths: dict  # character -> advance in em (filled as characters are met)
    drawn: dict  # character -> what is drawn for it: itself, MISSING, or nothing (format characters)

    def drawable(self, text: str) -> str:
        """``text`` with the characters the font has no glyph for shown as MISSING (a CID font cannot show .notdef)."""
        return "".join(self._drawn(char) for char in text)

    def _drawn(self, char: str) -> str:
        found = self.drawn.get(char)
        if found is None:
            if unicodedata.category(char) in ("Cc", "Cf"):  # controls and invisible formatting (zero-width space, ...)
                found = ""
            else:
                found = char if self.hb_font.get_nominal_glyph(ord(char)) else MISSING
            self.drawn[char] = found
        return found

    def advance(self, char: str) -> float:
        width = self.widths.get(char)
        if width is None:
            glyph = self.hb_font.get_nominal_glyph(ord(char)) or 0
            width = self.widths[char] = self.hb_font.get_glyph_h_advance(glyph) / self.units_per_em
        return width

    def measure(self, text: str) -> float:
        """The width of ``text`` as drawn (see :meth:`drawable`), in em."""
        return sum(self.advance(char) for char in self.drawable(text))


_fonts: dict[str, _Font] = {}
_fonts_lock = threading.Lock()


class FontMissing(RuntimeError):
    """No CJK font is installed (Debian: fonts-noto-cjk), so a licence face cannot be drawn."""


def _font(weight: str) -> _Font:
    found = _fonts.get(weight)
    if found is not None:
        return found
    with _fonts_lock:
        found = _fonts.get(weight)
        if found is None:
            import uharfbuzz

            path = cjk_font_path(weight)
            if path is None:
                raise FontMissing("no CJK font found under /usr/share/fonts: install fonts-noto-cjk")
            data = _standalone_face(path)
            hb_font = uharfbuzz.Font(uharfbuzz.Face(data))
            found = _fonts[weight] = _Font(data, hb_font, hb_font.face.upem, {}, {})
    return found


def _standalone_face(path: str) -> bytes:
    """The Simplified Chinese face of a font collection (or the font itself) as one OpenType font."""
    from fontTools import ttLib

    with open(path, "rb") as handle:
        collection = handle.read(4) == b"ttcf"
    index = -1
    if collection:
        with ttLib.TTCollection(path, lazy=True) as faces:
            index = next((i for i, face in enumerate(faces) if _is_simplified_chinese(face)), 0)
    with ttLib.TTFont(path, fontNumber=index, lazy=True) as font:
        for tag in _UNUSED_TABLES:
            if tag in font:
                del font[tag]
        out = io.BytesIO()
        font.save(out)  # tables not decompiled are copied as they are, so this is quick
    return out.getvalue()


def _is_simplified_chinese(face) -> bool:
    family = face["name"].getDebugName(1) or ""
    postscript = face["name"].getDebugName(6) or ""
    return family.endswith(" SC") or "sc-" in postscript.lower()


# -- drawing ------------------------------------------------------------------------------------


def _colour(text: str | None) -> tuple[float, float, float]:
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})", (text or "").strip())
    value = match.group(1) if match else DEFAULT_ACCENT[1:]
    return tuple(int(value[i : i + 2], 16) / 255 for i in (0, 2, 4))


def _mix(colour, other, share: float) -> tuple[float, float, float]:
    """``share`` of ``colour`` over ``other``: a tint (over white) or a shade (over black)."""
    return tuple(a * share + b * (1 - share) for a, b in zip(colour, other, strict=True))


WHITE = (1.0, 1.0, 1.0)
BLACK = (0.0, 0.0, 0.0)
INK = (0.11, 0.11, 0.12)
BOLD_STROKE = 0.028  # of the font size: the outline stroked around bold text
GREY = (0.40, 0.40, 0.42)


def _rgb(colour, stroke: bool = False) -> bytes:
    return b"%.3f %.3f %.3f %s" % (*colour, b"RG" if stroke else b"rg")


class _Accumulator(GlyphAccumulator):
    """pyHanko's glyph accumulator, subsetting only what goes into the PDF.

    For a CFF font pyHanko embeds the CFF table alone, yet its subsetting also rewrites the
    65,000-entry cmap and hmtx tables of a CJK font, and writing the subset draws every glyph
    again to recompute the font's bounding box (the font descriptor's comes from the head table):
    together about half the time a page took.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tt.recalcBBoxes = False

    def _extract_subset(self, options=None):
        if self.use_raw_gids:  # a TrueType or name-keyed font: pyHanko's own way (it keeps the glyph ids)
            return super()._extract_subset(options)
        from fontTools import subset

        options = subset.Options(layout_closure=False)
        # only the CFF table is embedded; the font descriptor has already read OS/2 (whose pruning would read the cmap)
        options.drop_tables += ["GPOS", "GDEF", "GSUB", "cmap", "hmtx", "OS/2"]
        subsetter = subset.Subsetter(options=options)
        subsetter.populate(gids=list(self._glyphs))
        subsetter.subset(self.tt)


class _Page:
    """A content stream being written, and the document's font subset.

    One weight is embedded: bold is drawn by stroking the outlines as well as filling them (the
    way a word processor emboldens 宋体), since a second weight would double the time a page takes.
    """

    def __init__(self, writer: PdfFileWriter, width: float, height: float):
        self.width, self.height = width, height
        self.ops: list[bytes] = []
        self.font = _font("Regular")
        obj_stream = writer.prepare_object_stream() if writer.stream_xrefs else None
        self.engine = _Accumulator(writer, io.BytesIO(self.font.data), 10, obj_stream=obj_stream)

    def measure(self, text: str, size: float, *, spacing: float = 0.0) -> float:
        text = self.font.drawable(text)
        return self.font.measure(text) * size + spacing * max(len(text) - 1, 0)

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        size: float,
        bold: bool = False,
        colour=INK,
        spacing: float = 0.0,
        align: str = "left",
    ) -> float:
        """Draw one line with its baseline at ``y``; ``x`` is its left, centre or right. Returns its width."""
        text = self.font.drawable(text)
        if not text:
            return 0.0
        shaped = self.engine.shape(text)
        width = shaped.x_advance * size + spacing * max(len(text) - 1, 0)
        if align == "center":
            x -= width / 2
        elif align == "right":
            x -= width
        weight = b"2 Tr %s %.3f w" % (_rgb(colour, stroke=True), size * BOLD_STROKE) if bold else b"0 Tr"
        self.ops.append(
            b"BT /F %.2f Tf %s %s %.2f Tc %.3f %.3f Td %s ET" % (size, _rgb(colour), weight, spacing, x, y, shaped.graphics_ops)
        )
        return width

    def rect(self, x, y, width, height, *, fill=None, stroke=None, line: float = 1.0) -> None:
        parts = [b"q"]
        if fill is not None:
            parts.append(_rgb(fill))
        if stroke is not None:
            parts.append(_rgb(stroke, stroke=True) + b" %.2f w" % line)
        parts.append(b"%.3f %.3f %.3f %.3f re" % (x, y, width, height))
        parts.append(b"B" if fill is not None and stroke is not None else b"f" if fill is not None else b"S")
        parts.append(b"Q")
        self.ops.append(b" ".join(parts))

    def line(self, x0, y0, x1, y1, *, colour, width: float = 0.5) -> None:
        self.ops.append(b"q %s %.2f w %.3f %.3f m %.3f %.3f l S Q" % (_rgb(colour, stroke=True), width, x0, y0, x1, y1))

    def stream(self) -> bytes:
        return b"\n".join(self.ops)


# -- line breaking ------------------------------------------------------------------------------

# A Latin word or number stays whole; every other character may be broken before, except that
# closing punctuation never starts a line and opening punctuation never ends one (禁则).
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.,:;/@&+_\-%]*|\s+|.", re.DOTALL)
_NO_LINE_START = set("，。、；：？！）》」』”’％,.;:?!)]}…—·")
_NO_LINE_END = set("（《「『“‘([{")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    carry = ""
    for token in _TOKEN.findall(text):
        if token in _NO_LINE_END:
            carry += token
            continue
        token, carry = carry + token, ""
        if tokens and token[0] in _NO_LINE_START and not tokens[-1].isspace():
            tokens[-1] += token
        else:
            tokens.append(token)
    if carry:
        tokens.append(carry)
    return tokens


def _wrap(measure, text: str, width: float) -> list[str]:
    """``text`` broken into lines no wider than ``width`` (``measure`` gives a string's width); newlines kept."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line, line_width = "", 0.0
        for token in _tokens(paragraph):
            token_width = measure(token)
            if line and line_width + token_width > width:
                lines.append(line.rstrip())
                line, line_width = "", 0.0
                if token.isspace():
                    continue
            if token_width > width:  # a word longer than the line: break it anywhere
                for char in token:
                    char_width = measure(char)
                    if line and line_width + char_width > width:
                        lines.append(line)
                        line, line_width = "", 0.0
                    line += char
                    line_width += char_width
                continue
            line += token
            line_width += token_width
        lines.append(line.rstrip())
    return lines


# -- the face -----------------------------------------------------------------------------------


def chinese_date(day: date) -> str:
    """A date as Chinese documents print it: 2026年12月06日."""
    return f"{day.year}年{day.month:02d}月{day.day:02d}日"


def _printable(value) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    text = str(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return chinese_date(date.fromisoformat(text))
        except ValueError:
            pass
    # control characters would come out as empty boxes; line breaks the writer typed are kept
    return "".join(char for char in text.replace("\r\n", "\n") if char == "\n" or char >= " ").strip()


def _rows(definition: TypeView, face: dict, holder_name: str, valid_from: date, valid_until: date | None) -> list[tuple[str, str]]:
    """(label, value) in the layout's order, then the validity; fields without a value are left out."""
    order = [name for name in definition.layout.get("fields") or [] if definition.field(name)] or [f.name for f in definition.fields]
    rows = []
    for name in order:
        value = face.get(name)
        if value is None or value == "":
            continue
        rows.append((definition.field(name).title, _printable(value)))
    if definition.holder_name_field not in order and holder_name:
        rows.insert(0, ("持证主体", holder_name))
    until = chinese_date(valid_until) if valid_until else "长期"
    rows.append(("有效期限", f"{chinese_date(valid_from)} 至 {until}" if valid_until else f"{chinese_date(valid_from)} 起 长期有效"))
    return rows


LABEL_SIZE = 11.0
LABEL_EMS = 4  # labels of two or three characters are spread to four, as printed forms do (名　　称)
VALUE_SIZE = 11.5
SMALLEST = 7.0
CELL_PAD_X = 9.0
CELL_PAD_Y = 5.5
MIN_ROW = 24.0
MAX_ROW = 38.0  # rows are made taller, up to this, when the page has room
LONG_SHARE = 0.7  # a long value may get this much smaller than the short ones before they shrink too


@dataclass
class _Row:
    label: list[str]
    value: list[str]
    size: float  # of the value
    label_size: float = LABEL_SIZE
    scale: float = 1.0  # of the padding and the smallest height
    minimum: float = MIN_ROW

    @property
    def leading(self) -> float:
        return self.size * 1.45

    @property
    def label_leading(self) -> float:
        return self.label_size * 1.35

    @property
    def height(self) -> float:
        pad = 2 * CELL_PAD_Y * self.scale
        return max(self.minimum, len(self.value) * self.leading + pad, len(self.label) * self.label_leading + pad)


def _fit_table(page: _Page, rows, label_width: float, value_width: float, available: float) -> list[_Row]:
    """Rows that fit into ``available`` points.

    Values that take several lines get smaller first (to 70% of the others); then everything gets
    smaller together, down to 7 pt; only then is the longest value cut short, marked with an ellipsis.
    Rows that fit easily are made taller, so a short type fills the page as a printed form does.
    """

    def lay_out(text: str, size: float, width: float) -> list[str]:
        return _wrap(lambda t: page.measure(t, size), text, width - 2 * CELL_PAD_X)

    at_base = [lay_out(value, VALUE_SIZE, value_width) for _, value in rows]
    long = [len(lines) > 1 for lines in at_base]
    fitted: list[_Row] = []
    scale = 1.0
    while not fitted:
        short_size = max(VALUE_SIZE * scale, SMALLEST)
        label_size = LABEL_SIZE * max(scale, 0.75)
        labels = [lay_out(label, label_size, label_width) for label, _ in rows]
        long_size = short_size
        while True:
            candidate = [
                _Row(
                    label,
                    lay_out(value, long_size, value_width) if is_long else lay_out(value, short_size, value_width),
                    long_size if is_long else short_size,
                    label_size,
                    scale,
                    MIN_ROW * scale,
                )
                for label, (_, value), is_long in zip(labels, rows, long, strict=True)
            ]
            if sum(row.height for row in candidate) <= available:
                fitted = candidate
                break
            if long_size - 0.5 < max(short_size * LONG_SHARE, SMALLEST) or not any(long):
                break
            long_size -= 0.5
        if not fitted and short_size <= SMALLEST:
            fitted = candidate  # the smallest there is; cut below
        scale -= 0.05
    while sum(row.height for row in fitted) > available:  # still too much: cut the longest value short, marked …
        longest = max(fitted, key=lambda row: len(row.value))
        if len(longest.value) <= 1:
            break
        longest.value = [*longest.value[:-2], longest.value[-2][:-1] + "…"]
    spare = available - sum(row.height for row in fitted)
    single = [row for row in fitted if len(row.value) == 1 and len(row.label) == 1]
    if spare > 0 and single:
        for row in single:
            row.minimum = min(MAX_ROW, row.height + spare / len(single))
    return fitted


def _draw_table(page: _Page, rows: list[_Row], x: float, top: float, label_width: float, value_width: float, accent) -> float:
    """The ruled table of face fields from ``top`` down; returns its bottom."""
    width = label_width + value_width
    rule = _mix(accent, WHITE, 0.45)
    label_colour = _mix(accent, BLACK, 0.6)
    y = top
    bottoms = []
    for row in rows:
        height = row.height
        y -= height
        bottoms.append(y)
        page.rect(x, y, label_width, height, fill=_mix(accent, WHITE, 0.07))
        baseline = y + height / 2 + (len(row.label) - 1) * row.label_leading / 2 - row.label_size * 0.36
        for line in row.label:
            spread = 0.0
            if 1 < len(line) < LABEL_EMS and len(row.label) == 1:
                spread = (LABEL_EMS * row.label_size - page.measure(line, row.label_size)) / (len(line) - 1)
            page.text(x + CELL_PAD_X, baseline, line, size=row.label_size, bold=True, colour=label_colour, spacing=spread)
            baseline -= row.label_leading
        baseline = y + height / 2 + (len(row.value) - 1) * row.leading / 2 - row.size * 0.36
        for line in row.value:
            page.text(x + label_width + CELL_PAD_X, baseline, line, size=row.size)
            baseline -= row.leading
    for bottom in bottoms[:-1]:
        page.line(x, bottom, x + width, bottom, colour=rule, width=0.5)
    page.line(x + label_width, y, x + label_width, top, colour=rule, width=0.5)
    page.rect(x, y, width, top - y, stroke=accent, line=1.1)
    return y


def _watermark(page: _Page, note: str, accent, keep_clear: tuple[float, float, float, float]) -> None:
    """The copy note repeated diagonally over the page, faint, everywhere but the QR code."""
    w, h = page.width, page.height
    qx, qy, qw, qh = keep_clear
    size = 16.0
    tile = note + "　　　"
    tile_width = page.measure(tile, size)
    angle = math.radians(28)
    cos, sin = math.cos(angle), math.sin(angle)
    page.ops.append(
        b"q %.2f %.2f %.2f %.2f re %.2f %.2f %.2f %.2f re W* n /Faint gs"
        % (FRAME_INNER, FRAME_INNER, w - 2 * FRAME_INNER, h - 2 * FRAME_INNER, qx - 6, qy - 6, qw + 12, qh + 12)
    )
    page.ops.append(b"q %.5f %.5f %.5f %.5f %.3f %.3f cm" % (cos, sin, -sin, cos, w / 2, h / 2))
    diagonal = math.hypot(w, h)
    line = tile * (int(diagonal / tile_width) + 2)
    row, offset = -diagonal / 2, 0.0
    while row < diagonal / 2:
        page.text(-diagonal / 2 - offset, row, line, size=size, colour=accent)
        row += 78.0
        offset = (offset + tile_width / 3) % tile_width
    page.ops.append(b"Q Q")


ISSUER_SIZE = 13.0
COPY_INDENT = 62.0  # where the copy note starts, after its 加注件 label
COPY_LINES = 3


def _copy_band(page: _Page, note: str, width: float) -> tuple[list[str], float, float]:
    """The copy note's lines, size and band height: 10 pt on one or two lines, else smaller, at most three lines."""
    size = 10.0
    while True:
        lines = _wrap(lambda t, s=size: page.measure(t, s), note, width - COPY_INDENT - 8)
        if len(lines) <= 2 or size <= 7.0:
            break
        size -= 0.5
    if len(lines) > COPY_LINES:
        lines = [*lines[: COPY_LINES - 1], lines[COPY_LINES - 1][:-1] + "…"]
    return lines, size, len(lines) * size * 1.35 + 11


def render_face(
    definition: TypeView,
    *,
    identifier: str,
    face: dict,
    holder_name: str,
    issuer_name: str,
    valid_from: date,
    valid_until: date | None,
    issued_on: date,
    version: int,
    qr_text: str,
    copy_note: str | None = None,
) -> bytes:
    """The licence face as a one-page PDF, ready for :func:`seal_file`.

    ``face`` holds the values as they are to be printed (sensitive ones already masked or left out);
    ``qr_text`` is what the QR code encodes; ``copy_note`` makes it a copy for a stated use (加注件).
    """
    width, height = PAGE_SIZES.get(str(definition.layout.get("page") or DEFAULT_PAGE), PAGE_SIZES[DEFAULT_PAGE])
    accent = _colour(definition.layout.get("accent"))
    writer = PdfFileWriter()
    page = _Page(writer, width, height)
    seal_box = stamp.default_box((0, 0, width, height), SEAL_PLACEMENT.width, SEAL_PLACEMENT.height)
    right = width - MARGIN

    # paper and a double frame with square corners
    outer = (FRAME_OUTER, FRAME_OUTER, width - 2 * FRAME_OUTER, height - 2 * FRAME_OUTER)
    page.rect(*outer, fill=_mix(accent, (1.0, 0.99, 0.96), 0.02))
    page.rect(*outer, stroke=accent, line=2.4)
    page.rect(FRAME_INNER, FRAME_INNER, width - 2 * FRAME_INNER, height - 2 * FRAME_INNER, stroke=accent, line=0.6)
    for cx in (FRAME_INNER, width - FRAME_INNER):
        for cy in (FRAME_INNER, height - FRAME_INNER):
            page.rect(cx - 3.5, cy - 3.5, 7, 7, fill=accent)

    # small print: the identifier and version at the top left, what the file is at the top right
    top = height - MARGIN + 4
    page.text(MARGIN, top, "证照标识 Licence ID", size=7, colour=GREY)
    id_size = 8.0
    while id_size > 5.5 and page.measure(identifier, id_size) > width / 2 - 130 - MARGIN:
        id_size -= 0.5
    page.text(MARGIN, top - 12, identifier, size=id_size)
    page.text(MARGIN, top - 24, f"版本 Version {version:03d}", size=7, colour=GREY)
    page.text(right, top, "电子证照 Electronic licence", size=7, colour=GREY, align="right")
    page.text(right, top - 12, "与纸质证照具有同等法律效力", size=7.5, align="right")
    page.text(right, top - 24, "真伪与状态以扫码核验结果为准", size=7, colour=GREY, align="right")

    # the title, centred, with its English name between two rules
    name = definition.name
    title_size = 34.0
    spacing = title_size * (0.6 if len(name) <= 4 else 0.3 if len(name) <= 7 else 0.1)
    while page.measure(name, title_size, spacing=spacing) > width - 2 * (MARGIN + 150) and title_size > 18:
        title_size -= 2
        spacing = title_size * 0.08
    title_y = height - 100
    page.text(width / 2, title_y, name, size=title_size, bold=True, colour=accent, spacing=spacing, align="center")
    english = page.text(
        width / 2, title_y - 21, definition.name_en.upper(), size=8.5, colour=_mix(accent, GREY, 0.45), spacing=1.6, align="center"
    )
    for side in (-1, 1):
        start = width / 2 + side * (english / 2 + 10)
        page.line(start, title_y - 18, start + side * 48, title_y - 18, colour=accent, width=0.6)

    # the face fields, and the copy note under them
    table_top = title_y - 40
    table_width = right - MARGIN
    qr = stamp.qr_matrix(qr_text)
    qr_size = min(max(len(qr) * QR_MODULE, QR_SIZES[0]), QR_SIZES[1])
    qr_x, qr_y = MARGIN, seal_box[1] + 2
    band = _copy_band(page, copy_note, table_width) if copy_note else None
    # the issuer and date go left of the seal when they fit there (landscape), else above it (portrait)
    issuer_line = f"发证机关：{issuer_name}"
    caption_x = qr_x + qr_size + 14
    beside_seal = page.measure(issuer_line, ISSUER_SIZE) <= seal_box[0] - 12 - caption_x - 80
    footer_top = max(seal_box[3] + (0 if beside_seal else 48), qr_y + qr_size + 4)
    table_floor = footer_top + 14 + (band[2] + 8 if band else 0)
    rows = _rows(definition, face, holder_name, valid_from, valid_until)
    widest_label = max(page.measure(label, LABEL_SIZE) for label, _ in rows)
    label_width = max(LABEL_EMS * LABEL_SIZE, min(widest_label, 10 * LABEL_SIZE)) + 2 * CELL_PAD_X
    fitted = _fit_table(page, rows, label_width, table_width - label_width, table_top - table_floor)
    table_bottom = _draw_table(page, fitted, MARGIN, table_top, label_width, table_width - label_width, accent)
    if band:
        lines, size, band_height = band
        band_y = table_bottom - 7 - band_height
        page.rect(MARGIN, band_y, table_width, band_height, fill=_mix(accent, WHITE, 0.12))
        baseline = band_y + band_height - 5.5 - size * 0.88
        page.text(MARGIN + 8, baseline, "加注件", size=10, bold=True, colour=accent, spacing=2)
        for line in lines:
            page.text(MARGIN + COPY_INDENT, baseline, line, size=size, colour=_mix(accent, BLACK, 0.7))
            baseline -= size * 1.35

    # the QR code at the bottom left, on white
    page.rect(qr_x - 4, qr_y - 4, qr_size + 8, qr_size + 8, fill=WHITE, stroke=_mix(accent, WHITE, 0.5), line=0.5)
    page.ops.append(b"q 1 0 0 1 %.3f %.3f cm %s Q" % (qr_x, qr_y, stamp.qr_commands(qr, qr_size)))
    page.text(caption_x, qr_y + 22, "扫码核验证照", size=9, bold=True, colour=_mix(accent, BLACK, 0.6), spacing=1)
    page.text(caption_x, qr_y + 9, "Scan to verify", size=7.5, colour=GREY)

    # the issuer and the date of issue, beside or above the area the seal goes into
    if beside_seal:
        issuer_right, issuer_y = seal_box[0] - 12, seal_box[1] + 62
    else:
        issuer_right, issuer_y = right, seal_box[3] + 34
    issuer_size = ISSUER_SIZE
    while page.measure(issuer_line, issuer_size) > issuer_right - caption_x - 20 and issuer_size > 8:
        issuer_size -= 0.5
    page.text(issuer_right, issuer_y, issuer_line, size=issuer_size, bold=True, align="right")
    page.text(issuer_right, issuer_y - 22, chinese_date(issued_on), size=12.5, align="right")

    resources = generic.DictionaryObject({_name("/Font"): generic.DictionaryObject({_name("/F"): page.engine.as_resource()})})
    if copy_note:
        _watermark(page, copy_note, accent, (qr_x, qr_y, qr_size, qr_size))
        faint = generic.FloatObject(0.12)
        resources[_name("/ExtGState")] = generic.DictionaryObject(
            {_name("/Faint"): generic.DictionaryObject({_name("/ca"): faint, _name("/CA"): faint})}
        )
    content = generic.StreamObject(stream_data=page.stream())
    content.compress()
    writer.insert_page(
        generic.DictionaryObject(
            {
                _name("/Type"): _name("/Page"),
                _name("/MediaBox"): generic.ArrayObject([generic.FloatObject(v) for v in (0, 0, width, height)]),
                _name("/Contents"): writer.add_object(content),
                _name("/Resources"): resources,
            }
        )
    )
    writer.root[_name("/Lang")] = generic.TextStringObject("zh-CN")
    # viewers show the title (type and holder) rather than a file name
    writer.root[_name("/ViewerPreferences")] = generic.DictionaryObject({_name("/DisplayDocTitle"): generic.BooleanObject(True)})
    meta = writer.document_meta
    meta.title = f"{definition.name} · {holder_name}" if holder_name else definition.name
    meta.subject = identifier
    meta.author = issuer_name
    meta.creator = "Hallmark"
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def seal_file(sctx: SigningContext, pdf: bytes, *, seal_name: str, actor: str, reason: str) -> pades.SignedResult:
    """Seal a rendered face PAdES B-LT with the department's seal, in the area the face left for it."""
    # No first-page picture: a licence file's QR opens the library's own verification page, which shows the licence.
    return pades.seal_pdf(
        sctx, pdf, seal_name=seal_name, level="B-LT", placement=SEAL_PLACEMENT, reason=reason, actor=actor, first_page_picture=False
    )
