"""Passwords: the policy a new password must meet, and argon2id hashing.

Passwords are normalised with NFKC before anything else, so a password typed
with a phone's full-width keyboard (``Ａ１``) is the same as its ASCII form.
A password never leaves this module except as an argon2id PHC string.
"""

from __future__ import annotations

import secrets
import unicodedata

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from idp.i18n import N_, Refusal

# argon2id at the OWASP Password Storage Cheat Sheet's baseline: 19 MiB of memory,
# 2 passes, 1 lane (about 25-40 ms on one core of a current server). Changing a
# value here makes every account's hash be upgraded at its next successful login.
ARGON2_PARAMETERS = {
    "time_cost": 2,
    "memory_cost": 19456,  # KiB
    "parallelism": 1,
    "hash_len": 32,
    "salt_len": 16,
}

MIN_LENGTH = 10
MAX_LENGTH = 128  # argon2 pre-hashes, so this is about sanity, not cost

# Passwords of 10+ characters and 2+ character classes that still top every leak
# list (Chinese and international). Compared case-insensitively.
COMMON = frozenset(
    [
        "1234567890a",
        "a1234567890",
        "123456789a",
        "a123456789",
        "aa123456789",
        "aa12345678",
        "abc1234567",
        "abcd123456",
        "abc123456789",
        "qq123456789",
        "qwe1234567",
        "qwer123456",
        "1qaz2wsx3edc",
        "1q2w3e4r5t",
        "q1w2e3r4t5",
        "qazwsxedc123",
        "1qaz2wsx3e",
        "zxcvbnm123",
        "asdfghjkl1",
        "qwertyuiop1",
        "qwertyuiop123",
        "password12",
        "password123",
        "password1234",
        "passw0rd123",
        "p@ssw0rd123",
        "p@ssword123",
        "iloveyou12",
        "iloveyou123",
        "woaini1314",
        "woaini520520",
        "woaini12345",
        "5201314abc",
        "abc5201314",
        "admin12345",
        "admin123456",
        "administrator1",
        "welcome123",
        "letmein123",
        "huawei12345",
        "wang123456",
        "zhang123456",
        "li123456789",
        "liu123456789",
        "chen1234567",
        "a5201314520",
        "1314520abc",
    ]
)

_hasher = PasswordHasher(type=Type.ID, **ARGON2_PARAMETERS)
_dummy_hash: str | None = None


class PasswordRejected(Refusal):
    """The new password does not meet the policy; the message says which rule."""


def normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def _classes(password: str) -> int:
    kinds = set()
    for c in password:
        if c.isascii() and c.islower():
            kinds.add("lower")
        elif c.isascii() and c.isupper():
            kinds.add("upper")
        elif c.isdigit():
            kinds.add("digit")
        else:
            kinds.add("other")
    return len(kinds)


def check_policy(password: str, *, username: str | None = None, mobile: str | None = None) -> str:
    """The normalised password, or :class:`PasswordRejected` naming the first rule it breaks."""
    if not isinstance(password, str) or not password:
        raise PasswordRejected(N_("Enter a password."), code="password_missing")
    pw = normalise(password)
    if len(pw) < MIN_LENGTH:
        raise PasswordRejected(N_("The password must be at least %(min)s characters long."), code="password_too_short", min=MIN_LENGTH)
    if len(pw) > MAX_LENGTH:
        raise PasswordRejected(N_("The password must be at most %(max)s characters long."), code="password_too_long", max=MAX_LENGTH)
    if any(unicodedata.category(c).startswith("C") for c in pw):
        raise PasswordRejected(N_("The password contains a control character."), code="password_control_character")
    if _classes(pw) < 2:
        raise PasswordRejected(
            N_("Mix at least two kinds of characters: lower-case letters, capitals, digits, symbols."),
            code="password_one_class",
        )
    if pw.lower() in COMMON:
        raise PasswordRejected(N_("This password is among the most common ones; choose another."), code="password_common")
    lowered = pw.lower()
    for name in (username, mobile):
        if name and len(name) >= 3 and name.lower() in lowered:
            raise PasswordRejected(N_("The password must not contain your username or mobile number."), code="password_contains_name")
    return pw


def hash_password(password: str) -> str:
    return _hasher.hash(normalise(password))


def verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, normalise(password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


def dummy_verify(password: str) -> None:
    """Spend the time a real check costs, so an unknown account is not told apart by timing."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    verify(_dummy_hash, password)


def generate() -> str:
    """A random password that meets the policy (for demo accounts): 16 characters, 3 classes."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(16))
        if _classes(pw) >= 3:
            return pw
