"""Debian's chromium, driven headless by Playwright, for the page tests of every package.

One place for where chromium is, its flags (no sandbox as root; no background
networking, which this machine's closed network refuses) and how a page is opened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "") if p and os.path.exists(p)), None
)
SHOTS = Path(os.environ.get("HALLMARK_SHOTS", "/tmp/hallmark-shots"))
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A camera that needs no permission prompt and shows chromium's test pattern (getUserMedia in the counter desk's test).
FAKE_CAMERA = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")
MISSING = "chromium not found: apt-get install -y chromium fonts-noto-cjk"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


@contextlib.contextmanager
def page(profile: Path, *, timeout_ms: int = 20_000, args: tuple[str, ...] = (), **context_options) -> Iterator:
    """A page of a new chromium profile in ``profile`` (Chinese locale unless told), closed afterwards.

    ``context_options`` go to Playwright's ``launch_persistent_context``: ``**PHONE`` for a
    phone, ``viewport=...`` for a desktop window. ``args`` are chromium flags added for this
    page only (``FAKE_CAMERA`` for a page that uses the camera).
    """
    if CHROMIUM is None:
        pytest.skip(MISSING)
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=[*ARGS, *args], headless=True, **{"locale": "zh-CN", **context_options}
        )
        context.set_default_timeout(timeout_ms)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
