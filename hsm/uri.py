"""RFC 7512 ``pkcs11:`` URIs: parse, validate and format.

Only what names a key is kept as structure; every attribute is percent-decoded,
so ``id`` holds raw bytes and text attributes hold ``str``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from hsm.errors import MalformedURI

# RFC 7512 section 2.3, plus RFC 7512's vendor-specific "x-" attributes.
PATH_ATTRIBUTES = frozenset(
    {
        "token",
        "manufacturer",
        "serial",
        "model",
        "library-manufacturer",
        "library-description",
        "library-version",
        "object",
        "type",
        "id",
        "slot-description",
        "slot-manufacturer",
        "slot-id",
    }
)
QUERY_ATTRIBUTES = frozenset({"pin-source", "pin-value", "module-name", "module-path"})
OBJECT_TYPES = frozenset({"public", "private", "cert", "secret-key", "data"})

_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Characters RFC 7512 allows unescaped in a path attribute value (pk11-pchar).
_SAFE_PATH = "-._~!$'()*+,=:[]@&"


@dataclass(frozen=True)
class PKCS11URI:
    """A parsed RFC 7512 URI. ``id`` is bytes; other attributes are text."""

    path: dict[str, str] = field(default_factory=dict)
    id: bytes | None = None
    query: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str | None:
        return self.path.get("token")

    @property
    def object(self) -> str | None:
        return self.path.get("object")

    @property
    def type(self) -> str | None:
        return self.path.get("type")

    @classmethod
    def for_key(cls, token: str, label: str, key_id: bytes) -> PKCS11URI:
        return cls(path={"token": token, "object": label}, id=key_id)

    @classmethod
    def parse(cls, text: str) -> PKCS11URI:
        if not isinstance(text, str) or not text.startswith("pkcs11:"):
            raise MalformedURI(str(text), "it must start with 'pkcs11:'")
        if len(text) > 4096:
            raise MalformedURI(text[:60] + "...", "longer than 4096 characters")
        body = text[len("pkcs11:") :]
        if "#" in body:
            raise MalformedURI(text, "a fragment ('#') is not allowed")
        path_part, _, query_part = body.partition("?")
        if _PCT.search(body):
            raise MalformedURI(text, "'%' must be followed by two hex digits")

        path: dict[str, str] = {}
        key_id: bytes | None = None
        for name, raw in _split(text, path_part, ";"):
            if name not in PATH_ATTRIBUTES and not name.startswith("x-"):
                raise MalformedURI(text, f"unknown path attribute {name!r}")
            if name in path or (name == "id" and key_id is not None):
                raise MalformedURI(text, f"attribute {name!r} appears twice")
            if name == "id":
                key_id = unquote_to_bytes(raw)
                if not key_id:
                    raise MalformedURI(text, "'id' is empty")
                continue
            path[name] = _decode_text(text, name, raw)
        if "type" in path and path["type"] not in OBJECT_TYPES:
            raise MalformedURI(text, f"type must be one of {', '.join(sorted(OBJECT_TYPES))}")
        if "slot-id" in path and not path["slot-id"].isdigit():
            raise MalformedURI(text, "slot-id must be a decimal number")

        query: dict[str, str] = {}
        for name, raw in _split(text, query_part, "&"):
            if name not in QUERY_ATTRIBUTES and not name.startswith("x-"):
                raise MalformedURI(text, f"unknown query attribute {name!r}")
            if name in query:
                raise MalformedURI(text, f"attribute {name!r} appears twice")
            query[name] = _decode_text(text, name, raw)
        return cls(path=path, id=key_id, query=query)

    def __str__(self) -> str:
        parts = []
        for name in ("token", "object", "type"):
            if name in self.path:
                parts.append(f"{name}={quote(self.path[name], safe=_SAFE_PATH.replace(';', ''))}")
        if self.id is not None:
            parts.append("id=" + "".join(f"%{b:02X}" for b in self.id))
        for name, value in self.path.items():
            if name not in ("token", "object", "type"):
                parts.append(f"{name}={quote(value, safe=_SAFE_PATH)}")
        text = "pkcs11:" + ";".join(parts)
        if self.query:
            text += "?" + "&".join(f"{k}={quote(v, safe='/:')}" for k, v in self.query.items())
        return text

    def without_secrets(self) -> str:
        """The URI as text with any pin-value removed, safe to log."""
        query = {k: v for k, v in self.query.items() if k != "pin-value"}
        return str(PKCS11URI(path=self.path, id=self.id, query=query))


def _split(uri: str, part: str, sep: str):
    if not part:
        return
    for item in part.split(sep):
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise MalformedURI(uri, f"{item!r} is not of the form name=value")
        yield name.lower(), value


def _decode_text(uri: str, name: str, raw: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedURI(uri, f"attribute {name!r} is not valid UTF-8 after percent-decoding") from None
