"""JSON from outside (request bodies, request parameters, form fields) parsed with a limit on its nesting.

Python's ``json`` recurses once per level: a few kilobytes of ``[`` raise
``RecursionError`` (not a ``ValueError``, so a caller's "not JSON" branch missed
it and the request became a 500), and a few hundred levels that do parse can
still break code that walks the value later. :func:`loads` raises
:class:`TooDeep`, a ``ValueError``, for both, so a caller that already answers
``ValueError`` with "not valid JSON" needs nothing more.

Only the nesting is limited here; sizes are limited where the text arrives
(``MAX_CONTENT_LENGTH`` for bodies, per-parameter limits for fields).
"""

from __future__ import annotations

import json
from typing import Any

# Deeper than anything Hallmark takes (an OIDC claims request, a licence face, authorization details
# are a handful of levels), far below where Python's recursion limit is reached.
MAX_DEPTH = 64


class TooDeep(ValueError):
    """The JSON is nested deeper than allowed."""


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH, **options) -> Any:
    """``json.loads`` (``options`` passed on) that raises :class:`TooDeep` past ``max_depth`` levels of arrays and objects."""
    too_deep = TooDeep(f"the JSON is nested more than {max_depth} levels deep")
    try:
        value = json.loads(data, **options)
    except RecursionError:
        raise too_deep from None
    # Nesting needs an opening bracket per level: a body with few of them is not walked at all.
    opening = data.count(b"[") + data.count(b"{") if isinstance(data, bytes | bytearray) else data.count("[") + data.count("{")
    if opening > max_depth and _deeper_than(value, max_depth):
        raise too_deep
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` has more than ``limit`` levels of lists and dicts (walked without recursion)."""
    pending = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
