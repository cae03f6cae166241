"""Authentication levels: what a request requires, what a session achieved, what is missing.

| level | acr                 | needs                                                        |
|-------|---------------------|--------------------------------------------------------------|
| 1     | urn:hallmark:loa:1  | an account and its password                                  |
| 2     | urn:hallmark:loa:2  | identity proofed (registry or counter) + password            |
| 3     | urn:hallmark:loa:3  | identity proofed + a certificate's key proven this session   |

Proofing belongs to the account, authentication to the session; the achieved
level is derived from both, every time, never stored on its own.

The required level is the highest of: the client's minimum, what the hall asks
(``acr_values`` or an essential ``acr`` claim), and the matter's level from the
central catalogue, so a hall can raise a requirement but never lower it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

ACR_PREFIX = "urn:hallmark:loa:"
LEVELS = (1, 2, 3)
ACR_VALUES = tuple(f"{ACR_PREFIX}{n}" for n in LEVELS)
NAMES = {1: "basic", 2: "real-name", 3: "certificate"}

# RFC 8176 authentication method references that count as a factor here.
PASSWORD = "pwd"
HARDWARE_KEY = "hwk"  # a key in a USB token, proven by a signature


class UnmetRequirement(Exception):
    """The level asked for cannot be reached: OIDC ``unmet_authentication_requirements``."""


def acr_for(level: int) -> str:
    return f"{ACR_PREFIX}{level}"


def level_of(acr: str) -> int | None:
    if acr.startswith(ACR_PREFIX) and acr[len(ACR_PREFIX) :].isdigit():
        level = int(acr[len(ACR_PREFIX) :])
        return level if level in LEVELS else None
    return None


@dataclass(frozen=True)
class Requirement:
    level: int
    why: tuple[str, ...] = field(default=())  # for people and the audit trail: what set the level


def required(
    *,
    client_min: int = 1,
    acr_values: str | None = None,
    claims: str | dict | None = None,
    matter_level: int | None = None,
    matter_code: str | None = None,
    highest_available: int = 3,
) -> Requirement:
    """The level a request needs. Raises :class:`UnmetRequirement` when it is above what can be offered."""
    level, why = max(1, client_min), [f"client minimum {client_min}"]

    # acr_values lists acceptable values; any of them will do, so the lowest known one counts.
    asked = [lv for lv in (level_of(v) for v in (acr_values or "").split()) if lv]
    if asked:
        level = max(level, min(asked))
        why.append(f"acr_values {min(asked)}")

    essential = _essential_acr(claims)
    if essential is not None:
        known = [lv for lv in (level_of(v) for v in essential) if lv]
        if not known:
            raise UnmetRequirement("none of the essential acr values is offered by this provider")
        level = max(level, min(known))
        why.append(f"essential acr {min(known)}")

    if matter_level is not None:
        level = max(level, matter_level)
        why.append(f"matter {matter_code} level {matter_level}")

    if level > highest_available:
        raise UnmetRequirement(f"level {level} ({NAMES[level]}) cannot be reached here")
    return Requirement(level, tuple(why))


def _essential_acr(claims) -> list[str] | None:
    if not claims:
        return None
    if isinstance(claims, str):
        try:
            claims = json.loads(claims)
        except ValueError:
            return None
    if not isinstance(claims, dict):
        return None
    for where in ("id_token", "userinfo"):
        acr = (claims.get(where) or {}).get("acr") if isinstance(claims.get(where), dict) else None
        if isinstance(acr, dict) and acr.get("essential"):
            values = acr.get("values") or ([acr["value"]] if "value" in acr else [])
            return [v for v in values if isinstance(v, str)]
    return None


def achieved(*, proofed: bool, amr: set[str]) -> int:
    """The level a session reaches with these proven methods on an account proofed or not."""
    if not amr:
        return 0
    if proofed and HARDWARE_KEY in amr:
        return 3
    if proofed:
        return 2
    return 1


@dataclass(frozen=True)
class Missing:
    """What a session still lacks for a level; empty means nothing."""

    login: bool = False  # no session at all
    proofing: bool = False  # the account must be real-name verified first
    hardware_key: bool = False  # a USB-key login is needed

    def __bool__(self) -> bool:
        return self.login or self.proofing or self.hardware_key


def missing(level: int, *, has_session: bool, proofed: bool, amr: set[str]) -> Missing:
    """Only what is missing: step-up never asks for a factor the session already has."""
    if not has_session:
        return Missing(login=True, proofing=level >= 2 and not proofed, hardware_key=level >= 3)
    return Missing(
        proofing=level >= 2 and not proofed,
        hardware_key=level >= 3 and HARDWARE_KEY not in amr,
    )
