"""Authentication levels and the matter catalogue: what a request requires, what a session achieved, what is missing.

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

The matter catalogue (事项目录) is part of the same policy: each administrative
matter's level is set centrally by the departments through Hallmark's operators
and read by halls (``GET /api/idp/matters``); a request naming a matter is raised
to the matter's level. The catalogue is public: it says what a matter requires,
nothing about anyone.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.db import utc_now
from idp.i18n import N_, Refusal
from idp.models import Matter

ACR_PREFIX = "urn:hallmark:loa:"
LEVELS = (1, 2, 3)
ACR_VALUES = tuple(f"{ACR_PREFIX}{n}" for n in LEVELS)
NAMES = {1: "basic", 2: "real-name", 3: "certificate"}

# RFC 8176 authentication method references that count as a factor here.
PASSWORD = "pwd"
HARDWARE_KEY = "hwk"  # a key in a USB token, proven by a signature
SMS = "sms"  # a code texted to the account's confirmed mobile number
MFA = "mfa"  # more than one of the above (RFC 8176 §2): recorded with them, never proven by itself

# The levels at which a password alone is not enough (a second factor, ``sms``, is asked for), from the IdP's
# settings (``second_factor_levels``); set when the IdP's services are built.
second_factor_at: frozenset[int] = frozenset()


def configure(*, second_factor: frozenset[int]) -> None:
    global second_factor_at
    second_factor_at = frozenset(second_factor)


def with_mfa(amr: set[str]) -> set[str]:
    """``amr`` with ``mfa`` when a password and a text code were both proven (pwd + hwk keeps its two values, as before)."""
    factors = set(amr) - {MFA}
    if PASSWORD in factors and SMS in factors:
        return factors | {MFA}
    return factors


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
    if PASSWORD not in amr:  # a text code alone: who holds the phone, level 1 at most
        return 1 if SMS in amr else 0
    if proofed and (2 not in second_factor_at or SMS in amr):
        return 2
    return 1


@dataclass(frozen=True)
class Missing:
    """What a session still lacks for a level; empty means nothing."""

    login: bool = False  # no session at all
    proofing: bool = False  # the account must be real-name verified first
    hardware_key: bool = False  # a USB-key login is needed
    second_factor: bool = False  # a text code after the password (``second_factor_levels``)
    password: bool = False  # signed in by text code only: the password is needed for level 2

    def __bool__(self) -> bool:
        return self.login or self.proofing or self.hardware_key or self.second_factor or self.password


def missing(level: int, *, has_session: bool, proofed: bool, amr: set[str]) -> Missing:
    """Only what is missing: step-up never asks for a factor the session already has."""
    if not has_session:
        return Missing(login=True, proofing=level >= 2 and not proofed, hardware_key=level >= 3)
    return Missing(
        proofing=level >= 2 and not proofed,
        hardware_key=level >= 3 and HARDWARE_KEY not in amr,
        password=level == 2 and not amr & {PASSWORD, HARDWARE_KEY},
        second_factor=level == 2 and level in second_factor_at and HARDWARE_KEY not in amr and SMS not in amr,
    )


# -- the matter catalogue ---------------------------------------------------------------------

MATTER_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Demo catalogue for newcomers: one matter per level, and one more at level 3
# because funds, like marriage, need a certificate (see DESIGN.md).
DEMO_MATTERS = (
    ("marriage-registration", "婚姻登记", 3, "民政局"),
    ("housing-fund-withdrawal", "住房公积金提取", 3, "住房公积金管理中心"),
    ("sole-trader-registration", "个体工商户注册", 2, "市场监督管理局"),
    ("policy-enquiry", "政策咨询", 1, "政务服务中心"),
)


class MatterRefusal(Refusal):
    pass


def _clean(text: str | None) -> str:
    return " ".join(unicodedata.normalize("NFKC", text or "").split())


def matter(db: Session, code: str) -> Matter | None:
    if not isinstance(code, str) or not MATTER_CODE.fullmatch(code):
        return None
    return db.get(Matter, code)


def all_matters(db: Session) -> list[Matter]:
    return list(db.scalars(select(Matter).order_by(Matter.code)))


def set_matter(db: Session, code: str, *, level: int, name: str | None = None, department: str | None = None, actor: str) -> Matter:
    """Create or change a matter. ``name`` is needed for a new one; unchanged fields may be left out."""
    if not isinstance(code, str) or not MATTER_CODE.fullmatch(code):
        raise MatterRefusal(
            N_("A matter code has 1 to 64 characters: letters, digits and _ . - (starting with a letter or digit)."),
            code="bad_code",
        )
    if level not in LEVELS:
        raise MatterRefusal(N_("The level must be 1, 2 or 3."), code="bad_level")
    row = db.get(Matter, code)
    name = _clean(name) if name is not None else None
    department = _clean(department) if department is not None else None
    if row is None and not name:
        raise MatterRefusal(N_("A new matter needs a name."), code="name_missing")
    if name is not None and (not name or len(name) > 200):
        raise MatterRefusal(N_("The matter's name must have 1 to 200 characters."), code="bad_name")
    if department is not None and len(department) > 100:
        raise MatterRefusal(N_("The department's name may have at most 100 characters."), code="bad_department")
    before = None if row is None else {"level": row.level, "name": row.name, "department": row.department}
    if row is None:
        row = Matter(code=code, name=name, level=level, department=department or "")
        db.add(row)
    else:
        row.level = level
        if name is not None:
            row.name = name
        if department is not None:
            row.department = department
    after = {"level": row.level, "name": row.name, "department": row.department}
    if before == after:
        return row
    row.updated_at = utc_now()
    row.updated_by = actor[:200]
    db.flush()
    audit.record(db, actor=actor, action="idp.matter.set", target=code, details={"before": before, "after": after})
    return row


def matter_json(row: Matter) -> dict:
    return {
        "code": row.code,
        "name": row.name,
        "level": row.level,
        "acr": acr_for(row.level),
        "level_name": NAMES[row.level],
        "department": row.department,
        "updated_at": row.updated_at.isoformat(),
    }
