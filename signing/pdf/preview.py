"""What the verification page shows of a sealed document: its title, its page count, a small picture of page 1.

A verification code proves only that *some* document was sealed; these let the reader
see *which*, so a QR code copied onto another paper does not vouch for it. They are
taken from the file as we return it, when the record is made; the file itself is not kept.

The picture is rendered by poppler's ``pdftoppm`` (Debian's ``poppler-utils``, which
``make run`` installs) at :data:`THUMBNAIL_WIDTH` pixels wide: the layout, headings,
photo and seal are recognisable, body text is not legible (the page is public to
whoever holds the code). Without ``pdftoppm``, or when rendering fails or runs past
:data:`RENDER_SECONDS`, the record simply has no picture.
"""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from core.problems import Problem
from signing.pdf import reading as pdfinput

log = logging.getLogger("hallmark.signing.preview")

THUMBNAIL_WIDTH = 240  # pixels; an A4 page comes out 240 x 340
RENDER_SECONDS = 10  # a page that takes longer gets no picture
MAX_THUMBNAIL_BYTES = 200_000  # a picture larger than this (a very busy page) is not kept
TITLE_CHARS = 200


@dataclass(frozen=True)
class Preview:
    title: str | None
    pages: int | None
    thumbnail_png: bytes | None


def title_and_pages(reader) -> tuple[str | None, int | None]:
    """The document information's ``/Title`` (whitespace folded, at most :data:`TITLE_CHARS`) and the page count."""
    title = None
    try:
        info = reader.trailer["/Info"]  # TrailerDictionary: item access only, KeyError when missing
        value = info.get_object().get("/Title")
        if value is not None:
            title = " ".join(str(value).split())[:TITLE_CHARS] or None
    except pdfinput.DAMAGED:
        title = None
    try:
        pages = int(reader.root["/Pages"]["/Count"])
    except pdfinput.DAMAGED:
        pages = None
    return title, pages if pages is not None and pages > 0 else None


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


class Rendering:
    """Page 1 of ``pdf`` being rendered by ``pdftoppm`` beside whatever the caller does meanwhile (sealing, say).

    :meth:`result` waits for the PNG (None: no pdftoppm, a failure, too slow, too large).
    A rendering whose result is never asked for (the seal failed) is stopped and its
    files removed when it is dropped.
    """

    def __init__(self, pdf: bytes, width: int = THUMBNAIL_WIDTH):
        self._process: subprocess.Popen | None = None
        self._started = time.monotonic()
        program = shutil.which("pdftoppm")
        if program is None:
            log.info("pdftoppm (poppler-utils) is not installed: sealed documents get no first-page picture")
            self._folder = None
            return
        self._folder = Path(tempfile.mkdtemp(prefix="hallmark-preview-"))
        source = self._folder / "in.pdf"
        source.write_bytes(pdf)
        command = [program, "-png", "-f", "1", "-l", "1", "-singlefile", "-scale-to-x", str(width), "-scale-to-y", "-1"]
        try:
            self._process = subprocess.Popen(
                [*command, str(source), str(self._folder / "page")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            log.info("pdftoppm could not be started: %s", exc)
        self._finalizer = weakref.finalize(self, _clean_up, self._process, self._folder)

    def result(self) -> bytes | None:
        if self._folder is None:
            return None
        try:
            if self._process is None:
                return None
            try:
                status = self._process.wait(max(RENDER_SECONDS - (time.monotonic() - self._started), 0.01))
            except subprocess.TimeoutExpired:
                log.warning("the first page took longer than %s s to render: no picture kept", RENDER_SECONDS)
                return None
            if status != 0:
                log.info("the first page could not be rendered (pdftoppm exit %s)", status)
                return None
            try:
                png = (self._folder / "page.png").read_bytes()
            except OSError as exc:
                log.info("the first page's picture cannot be read: %s", exc)
                return None
            if len(png) > MAX_THUMBNAIL_BYTES:
                log.info("the first page's picture is %d bytes: not kept", len(png))
                return None
            return png
        finally:
            self._finalizer()


def _clean_up(process: subprocess.Popen | None, folder: Path) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
    shutil.rmtree(folder, ignore_errors=True)


def first_page_png(pdf: bytes, width: int = THUMBNAIL_WIDTH) -> bytes | None:
    """Page 1 of ``pdf`` as a PNG ``width`` pixels wide, or None (no pdftoppm, a failure, too slow)."""
    return Rendering(pdf, width).result()


def of(pdf: bytes) -> Preview:
    """The preview of a file we are about to return."""
    picture = Rendering(pdf)
    try:
        title, pages = title_and_pages(pdfinput.read(pdf, limit=len(pdf)))
    except (Problem, *pdfinput.DAMAGED) as exc:  # a preview never stops a seal
        log.info("no title or page count for the record: %s", exc)
        title, pages = None, None
    return Preview(title, pages, picture.result())
