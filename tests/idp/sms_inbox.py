"""Reading codes from the development SMS inbox page (/dev/sms, core/sms_pages.py) as a person at this machine would."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

ITEM = re.compile(r"<li>(.*?)</li>", re.S)
CODE = re.compile(r"验证码(\d{6})")


def codes(page_html: str, phone: str) -> list[str]:
    """The codes texted to ``phone`` on the inbox page, newest first."""
    found = []
    for item in ITEM.findall(page_html):
        if f">{phone}<" in item:
            code = CODE.search(item)
            if code:
                found.append(code.group(1))
    return found


def new_code(read_page: Callable[[], str], phone: str, before: int, timeout: float = 30) -> str:
    """Wait until the inbox shows more than ``before`` codes for ``phone`` (the outbox delivers after commit); the newest."""
    deadline = time.monotonic() + timeout
    while True:
        found = codes(read_page(), phone)
        if len(found) > before:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no new code for {phone} in the inbox after {timeout} s")
        time.sleep(0.2)
