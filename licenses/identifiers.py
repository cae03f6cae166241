"""Licence identifiers as GB/T 36904 is deployed: ``1.2.156.3005.2.{type}.{issuer}.{serial}.{version}.{check}``.

- ``type``: the 21-character licence-type code (the defining authority's credit
  code and a 3-digit sequence);
- ``issuer``: the issuing department's 18-character unified social credit code;
- ``serial``: 7 to 32 characters, digits and upper-case letters (the licence
  number, a year and sequence, or a UUID without its dashes);
- ``version``: three digits from ``001``, up by one on renewal or change;
- ``check``: one ISO/IEC 7064 MOD 37,36 character over type + issuer + serial +
  version joined without dots (python-stdnum computes it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stdnum.iso7064 import mod_37_36

from core.identifiers import InvalidIdentifier, validate_credit_code

ROOT = "1.2.156.3005.2"
_SERIAL = re.compile(r"^[0-9A-Z]{7,32}$")
_TYPE = re.compile(r"^[0-9A-Z]{18}[0-9]{3}$")
_VERSION = re.compile(r"^[0-9]{3}$")
MAX_LENGTH = len(ROOT) + 1 + 21 + 1 + 18 + 1 + 32 + 1 + 3 + 1 + 1


def _fail(reason: str) -> InvalidIdentifier:
    return InvalidIdentifier("licence identifier", reason)


def check_type_code(code: str) -> str:
    """A licence-type code: 18 characters of the defining authority's credit code, then 3 digits."""
    code = (code or "").strip().upper()
    if not _TYPE.match(code):
        raise InvalidIdentifier("licence type code", "must be 21 characters: a unified social credit code and a 3-digit number")
    validate_credit_code(code[:18])
    return code


def check_serial(serial: str) -> str:
    serial = (serial or "").strip().upper().replace("-", "")
    if not _SERIAL.match(serial):
        raise InvalidIdentifier("licence serial", "must be 7 to 32 digits or upper-case letters")
    return serial


@dataclass(frozen=True)
class LicenceId:
    type_code: str
    issuer_code: str
    serial: str
    version: int

    @property
    def check(self) -> str:
        return mod_37_36.calc_check_digit(self.body)

    @property
    def body(self) -> str:
        return f"{self.type_code}{self.issuer_code}{self.serial}{self.version:03d}"

    def __str__(self) -> str:
        return f"{ROOT}.{self.type_code}.{self.issuer_code}.{self.serial}.{self.version:03d}.{self.check}"

    def next_version(self) -> LicenceId:
        if self.version >= 999:
            raise _fail("the version cannot go past 999")
        return LicenceId(self.type_code, self.issuer_code, self.serial, self.version + 1)


def make(type_code: str, issuer_code: str, serial: str, version: int = 1) -> LicenceId:
    """A new identifier from its parts, each checked."""
    if not 1 <= version <= 999:
        raise _fail("the version must be between 001 and 999")
    return LicenceId(check_type_code(type_code), validate_credit_code(issuer_code).value, check_serial(serial), version)


def parse(text: str) -> LicenceId:
    """Parse an identifier; a wrong shape or check character raises ``InvalidIdentifier`` naming what is wrong."""
    text = (text or "").strip()
    if len(text) > MAX_LENGTH:
        raise _fail("is too long")
    if not text.startswith(ROOT + "."):
        raise _fail(f"must start with {ROOT}.")
    parts = text[len(ROOT) + 1 :].split(".")
    if len(parts) != 5:
        raise _fail("must have five parts after the root: type, issuer, serial, version and check character")
    type_code, issuer_code, serial, version, check = parts
    if not _VERSION.match(version) or version == "000":
        raise _fail("the version must be three digits from 001")
    parsed = LicenceId(check_type_code(type_code), validate_credit_code(issuer_code).value, check_serial(serial), int(version))
    if serial != parsed.serial:
        raise _fail("the serial must be digits and upper-case letters")
    if len(check) != 1 or check != parsed.check:
        raise _fail("the check character is wrong (ISO/IEC 7064 MOD 37,36): the identifier was mistyped or altered")
    return parsed
