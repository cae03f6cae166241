"""Seal images: checking an uploaded one, and drawing a demo seal when none is given.

The demo seal follows the shape of a Chinese official seal (公章): a red ring, a
five-pointed star in the middle, the department's name running clockwise along
the upper arc and a purpose line (电子印章) under the star. The text needs a CJK
font; without one the seal is drawn with the ring and star only.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

from core.problems import Problem

MAX_IMAGE_BYTES = 1024 * 1024
MAX_IMAGE_PIXELS = 2048
MIN_IMAGE_PIXELS = 64
SIZE = 600  # the demo seal is drawn this many pixels square (about 4.2 cm at 360 dpi)
RED = (200, 16, 32, 255)
FONTS = Path("/usr/share/fonts")
# After Noto Serif/Sans CJK in the weight asked for: any CJK font Debian ships.
_FONT_FALLBACKS = ("*CJK*.tt[cf]", "wqy*.tt[cf]", "uming.ttc", "ukai.ttc")


def _bad(detail: str) -> Problem:
    return Problem(422, "Unprocessable Content", detail, code="bad_seal_image")


def check_image(data: bytes) -> bytes:
    """The seal image as PNG (RGBA), or a 422 problem saying what is wrong with ``data``."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise _bad(f"the seal image is larger than {MAX_IMAGE_BYTES // 1024} KiB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG"):
                raise _bad(f"the seal image must be a PNG or JPEG, not {image.format}")
            width, height = image.size
            if max(width, height) > MAX_IMAGE_PIXELS or min(width, height) < MIN_IMAGE_PIXELS:
                raise _bad(f"the seal image must be between {MIN_IMAGE_PIXELS} and {MAX_IMAGE_PIXELS} pixels on each side")
            image.load()
            converted = image.convert("RGBA")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise _bad("the seal image cannot be read as PNG or JPEG") from None
    out = io.BytesIO()
    converted.save(out, "PNG", optimize=True)
    return out.getvalue()


@lru_cache(maxsize=4)
def cjk_font_path(weight: str = "Bold") -> str | None:
    """A CJK font file, Noto Serif CJK first (a serif bold looks most like a carved seal); ``weight``: Bold or Regular."""
    for pattern in (f"NotoSerifCJK-{weight}.ttc", f"NotoSansCJK-{weight}.ttc", *_FONT_FALLBACKS):
        found = sorted(FONTS.rglob(pattern))
        if found:
            return str(found[0])
    return None


def _star(cx: float, cy: float, outer: float) -> list[tuple[float, float]]:
    inner = outer * 0.382
    points = []
    for i in range(10):
        radius = outer if i % 2 == 0 else inner
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def demo_seal(department: str, purpose: str = "电子印章") -> bytes:
    """A red round seal with ``department`` along the rim, as PNG with a transparent background."""
    from PIL import Image, ImageDraw, ImageFont

    scale = 2  # drawn at twice the size and scaled down, for smooth edges
    size = SIZE * scale
    image = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)
    centre = size / 2
    ring = size * 0.03
    draw.ellipse((ring / 2, ring / 2, size - ring / 2, size - ring / 2), outline=RED, width=int(ring))
    draw.polygon(_star(centre, centre, size * 0.17), fill=RED)
    font_path = cjk_font_path()
    if font_path:
        name = department.strip()[:24] or "电子印章"
        count = len(name)
        font_size = int(min(size * 0.13, size * 2.6 / max(count, 1)))
        font = ImageFont.truetype(font_path, font_size)
        radius = size / 2 - ring - font_size * 0.85
        span = min(math.radians(250), math.radians(22) * count)  # the arc the name covers, centred on the top
        for index, char in enumerate(name):
            angle = -math.pi / 2 - span / 2 + (span * (index + 0.5) / count)
            glyph = Image.new("RGBA", (font_size * 2, font_size * 2), (255, 255, 255, 0))
            ImageDraw.Draw(glyph).text((font_size, font_size), char, font=font, fill=RED, anchor="mm")
            glyph = glyph.rotate(-math.degrees(angle + math.pi / 2), resample=Image.BICUBIC)
            x = centre + radius * math.cos(angle) - font_size
            y = centre + radius * math.sin(angle) - font_size
            image.alpha_composite(glyph, (int(x), int(y)))
        if purpose:
            small = ImageFont.truetype(font_path, int(size * 0.075))
            draw.text((centre, centre + size * 0.27), purpose, font=small, fill=RED, anchor="mm")
    image = image.resize((SIZE, SIZE), Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()
