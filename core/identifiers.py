"""Chinese identifiers: resident ID numbers (GB 11643-1999) and unified social
credit codes (GB 32100-2015).

Resident IDs are personal data: they must never be logged or put into error
messages in full. Use ``masked()`` / ``mask_resident_id`` for display and
``lookup_hash`` for storage-side lookups.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import string
from dataclasses import dataclass
from datetime import date

__all__ = [
    "CreditCode",
    "InvalidIdentifier",
    "ResidentID",
    "credit_code_check_char",
    "generate_credit_code",
    "generate_resident_id",
    "lookup_hash",
    "mask_credit_code",
    "mask_resident_id",
    "mask_resident_ids",
    "organisation_code_check_char",
    "plausible_resident_ids",
    "resident_id_check_char",
    "validate_credit_code",
    "validate_resident_id",
]

RESIDENT_ID = "resident_id"
CREDIT_CODE = "credit_code"
_HUMAN_KIND = {RESIDENT_ID: "resident ID", CREDIT_CODE: "unified social credit code"}

_DIGITS = "0123456789"
# Only ASCII is upper-cased: str.upper() on arbitrary Unicode can change the length ("ß" -> "SS").
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)

# GB 11643-1999
_RID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RID_CHECK = "10X98765432"
# GB/T 2260 province-level codes (71 Taiwan, 81 Hong Kong, 82 Macau).
_PROVINCES = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
    ]
)

# What may be a full resident ID inside free text (a log line, a library's error message, a
# certificate subject): 17 digits and a digit or X, not part of a longer word. The one copy
# of this pattern; :func:`mask_resident_ids` and :func:`plausible_resident_ids` apply it.
RESIDENT_ID_PATTERN = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")

# GB 32100-2015
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # no I, O, Z, S, V
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# GB 11714 organisation code, embedded at positions 9-17 of a credit code.
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


class InvalidIdentifier(ValueError):
    """An identifier failed validation. ``reason`` never contains the full value."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"invalid {_HUMAN_KIND.get(kind, kind)}: {reason}")


# --------------------------------------------------------------------------- check characters


def resident_id_check_char(first17: str) -> str:
    """Check character for the first 17 digits of a resident ID."""
    return _RID_CHECK[sum(int(c) * w for c, w in zip(first17, _RID_WEIGHTS, strict=True)) % 11]


def credit_code_check_char(first17: str) -> str:
    """Check character (position 18) for the first 17 characters of a credit code."""
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def organisation_code_check_char(first8: str) -> str:
    """GB 11714 check character for the 8-character body of an organisation code."""
    total = sum(int(c, 36) * w for c, w in zip(first8, _ORG_WEIGHTS, strict=True))  # 0-9, A=10..Z=35
    r = 11 - total % 11
    return {10: "X", 11: "0"}.get(r, str(r))


# --------------------------------------------------------------------------- resident ID


@dataclass(frozen=True, repr=False)
class ResidentID:
    """A validated 18-character resident ID. Obtain via ``validate_resident_id``."""

    value: str

    @property
    def birth_date(self) -> date:
        v = self.value
        return date(int(v[6:10]), int(v[10:12]), int(v[12:14]))

    @property
    def sex(self) -> str:
        return "male" if int(self.value[16]) % 2 else "female"

    @property
    def region_code(self) -> str:
        return self.value[:6]

    def masked(self) -> str:
        return mask_resident_id(self.value)

    # Masked so that logging or printing the object can never leak the number.
    def __repr__(self) -> str:
        return f"ResidentID({self.masked()!r})"


def plausible_resident_id(text: str) -> bool:
    """Whether 18 characters read like a resident ID: a province code and a real birth date.

    The check character is not required: a mistyped ID still names a real person. Used
    to keep IDs out of logs and audit events without refusing other 18-digit numbers
    (an all-digit unified social credit code starts with a registration authority, not a province).
    """
    s = text.strip().upper()
    if len(s) != 18 or not s[:17].isdigit() or s[17] not in _DIGITS + "X" or s[:2] not in _PROVINCES:
        return False
    try:
        birth = date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    return 1900 <= birth.year <= date.today().year


def plausible_resident_ids(text: str) -> list[str]:
    """The full resident IDs in free text: candidates of :data:`RESIDENT_ID_PATTERN` that are plausible."""
    return [found for found in RESIDENT_ID_PATTERN.findall(text) if plausible_resident_id(found)]


def validate_resident_id(text: str, *, today: date | None = None) -> ResidentID:
    def fail(reason: str) -> InvalidIdentifier:
        return InvalidIdentifier(RESIDENT_ID, reason)

    if not isinstance(text, str):
        raise fail(f"must be a string, got {type(text).__name__}")
    s = text.strip().replace("x", "X")
    if len(s) == 15 and all(c in _DIGITS for c in s):
        raise fail("15-digit IDs from before 1999 are not accepted; use the 18-character form")
    if len(s) != 18:
        raise fail(f"must be 18 characters, got {len(s)}")
    for pos, c in enumerate(s[:17], start=1):
        if c not in _DIGITS:
            raise fail(f"character {c!r} at position {pos} is not allowed (must be a digit)")
    if s[17] not in _DIGITS + "X":
        raise fail(f"character {s[17]!r} at position 18 is not allowed (must be a digit or X)")
    if s[:2] not in _PROVINCES:
        raise fail(f"region code starts with {s[:2]}, which is not a province-level code")

    born = s[6:14]
    try:
        birth = date(int(born[:4]), int(born[4:6]), int(born[6:]))
    except ValueError:
        raise fail(f"birth date {born} is not a real date") from None
    if birth.year < 1900:
        raise fail(f"birth year {birth.year} is before 1900")
    if birth > (today or date.today()):
        raise fail(f"birth date {born} is in the future")

    expected = resident_id_check_char(s[:17])
    if s[17] != expected:
        raise fail(f"check character should be '{expected}', not '{s[17]}'")
    return ResidentID(s)


def generate_resident_id(region: str, birth: date, sequence: int) -> str:
    """Build a checksum-valid resident ID (for demo data and tests).

    ``sequence`` (0-999) is the 3-digit order code; odd means male, even female.
    """
    if len(region) != 6 or any(c not in _DIGITS for c in region) or region[:2] not in _PROVINCES:
        raise ValueError("region must be 6 digits starting with a province-level code")
    if not 0 <= sequence <= 999:
        raise ValueError("sequence must be between 0 and 999")
    if birth.year < 1900:
        raise ValueError("birth year must be 1900 or later")
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + resident_id_check_char(first17)


# --------------------------------------------------------------------------- credit code


@dataclass(frozen=True, repr=False)
class CreditCode:
    """A validated unified social credit code. Obtain via ``validate_credit_code``."""

    value: str

    @property
    def organisation_code(self) -> str:
        """The embedded 9-character GB 11714 organisation code (positions 9-17)."""
        return self.value[8:17]

    def masked(self) -> str:
        return mask_credit_code(self.value)

    # Credit codes are public register data, but we mask by default like resident IDs.
    def __repr__(self) -> str:
        return f"CreditCode({self.masked()!r})"


def _check_credit_structure(s: str) -> None:
    """Validate alphabet, region digits and the inner organisation-code check."""
    for pos, c in enumerate(s, start=1):
        if c not in _USCC_ALPHABET:
            raise InvalidIdentifier(
                CREDIT_CODE,
                f"character {c!r} at position {pos} is not allowed (the alphabet excludes I, O, Z, S, V)",
            )
    # Position 1 (registration authority) and 2 (entity type) may be any alphabet character:
    # the code tables grow over time, so we only enforce structure and checksums.
    for pos, c in enumerate(s[2:8], start=3):
        if c not in _DIGITS:
            raise InvalidIdentifier(CREDIT_CODE, f"character {c!r} at position {pos} is not allowed (region code must be digits)")
    # Verified against the known-valid 91350100M000100Y43, so real codes satisfy the inner check.
    expected = organisation_code_check_char(s[8:16])
    if s[16] != expected:
        raise InvalidIdentifier(
            CREDIT_CODE,
            f"organisation code check character at position 17 should be '{expected}', not '{s[16]}'",
        )


def validate_credit_code(text: str) -> CreditCode:
    if not isinstance(text, str):
        raise InvalidIdentifier(CREDIT_CODE, f"must be a string, got {type(text).__name__}")
    s = text.strip().translate(_ASCII_UPPER)
    if len(s) != 18:
        raise InvalidIdentifier(CREDIT_CODE, f"must be 18 characters, got {len(s)}")
    _check_credit_structure(s)
    expected = credit_code_check_char(s[:17])
    if s[17] != expected:
        raise InvalidIdentifier(CREDIT_CODE, f"check character should be '{expected}', not '{s[17]}'")
    return CreditCode(s)


def generate_credit_code(prefix17: str) -> str:
    """Append the check character to a 17-character prefix.

    The prefix must already carry a valid GB 11714 check at position 17 (see
    ``organisation_code_check_char``) so the result always passes validation.
    """
    s = prefix17.strip().translate(_ASCII_UPPER)
    if len(s) != 17:
        raise InvalidIdentifier(CREDIT_CODE, f"prefix must be 17 characters, got {len(s)}")
    _check_credit_structure(s)
    return s + credit_code_check_char(s)


# --------------------------------------------------------------------------- masking


def _mask(text: str, head: int, tail: int, canonical_len: int) -> str:
    s = str(text).strip()
    n = len(s)
    if n < 8:
        return "*" * n
    if n != canonical_len:
        # Not ID-shaped: scale the visible part down to at most 40% of the characters.
        budget = n * 2 // 5
        if head + tail > budget:
            tail = budget * tail // (head + tail)
            head = budget - tail
    return s[:head] + "*" * (n - head - tail) + s[n - tail :]


def mask_resident_id(text: str) -> str:
    """``110***********002X``: first 3 and last 4 characters (7 of 18, under 40%)."""
    return _mask(str(text).replace("x", "X"), 3, 4, 18)


def mask_resident_ids(text: str) -> str:
    """Free text with everything shaped like a resident ID masked, plausible or not (text meant for people)."""
    return RESIDENT_ID_PATTERN.sub(lambda found: mask_resident_id(found.group(0)), text)


def mask_credit_code(text: str) -> str:
    """``913501********0Y43``: first 6 and last 4 characters."""
    return _mask(str(text).translate(_ASCII_UPPER), 6, 4, 18)


# --------------------------------------------------------------------------- lookup hash

_LOOKUP_DOMAIN = b"hallmark-id-v1\x00"


def lookup_hash(key: bytes, kind: str, value: str) -> str:
    """Keyed, deterministic hash for finding a record by identifier without storing it.

    The kind is part of the MAC input so a resident ID and a credit code with the
    same characters never collide; the value is normalised (trimmed, ASCII upper case).
    """
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError("key must be bytes")
    if len(key) < 16:
        raise ValueError("lookup key must be at least 16 bytes")
    if kind not in _HUMAN_KIND:
        raise ValueError(f"kind must be one of {sorted(_HUMAN_KIND)}")
    canonical = value.strip().translate(_ASCII_UPPER)
    message = _LOOKUP_DOMAIN + kind.encode() + b"\x00" + canonical.encode("utf-8")
    return hmac.new(bytes(key), message, hashlib.sha256).hexdigest()
