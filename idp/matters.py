"""The matter catalogue (事项目录): the authentication level each administrative matter needs.

The catalogue is central policy, set by the departments through Hallmark's
operators, and read by halls (``GET /api/idp/matters``). An authorization
request naming a matter is raised to the matter's level, so a hall cannot ask
for less than the matter needs (see ``idp.levels.required``).

The catalogue is public: it says what a matter requires, nothing about anyone.
"""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.db import utc_now
from idp import levels
from idp.i18n import N_, Refusal
from idp.models import Matter

CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Demo catalogue for newcomers: one matter per level, and one more at level 3
# because funds, like marriage, need a certificate (see DESIGN.md).
DEMO = (
    ("marriage-registration", "婚姻登记", 3, "民政局"),
    ("housing-fund-withdrawal", "住房公积金提取", 3, "住房公积金管理中心"),
    ("sole-trader-registration", "个体工商户注册", 2, "市场监督管理局"),
    ("policy-enquiry", "政策咨询", 1, "政务服务中心"),
)


class MatterRefusal(Refusal):
    pass


def _clean(text: str | None) -> str:
    return " ".join(unicodedata.normalize("NFKC", text or "").split())


def get(db: Session, code: str) -> Matter | None:
    if not isinstance(code, str) or not CODE.fullmatch(code):
        return None
    return db.get(Matter, code)


def all_matters(db: Session) -> list[Matter]:
    return list(db.scalars(select(Matter).order_by(Matter.code)))


def set_matter(db: Session, code: str, *, level: int, name: str | None = None, department: str | None = None, actor: str) -> Matter:
    """Create or change a matter. ``name`` is needed for a new one; unchanged fields may be left out."""
    if not isinstance(code, str) or not CODE.fullmatch(code):
        raise MatterRefusal(
            N_("A matter code has 1 to 64 characters: letters, digits and _ . - (starting with a letter or digit)."),
            code="bad_code",
        )
    if level not in levels.LEVELS:
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


def as_json(row: Matter) -> dict:
    return {
        "code": row.code,
        "name": row.name,
        "level": row.level,
        "acr": levels.acr_for(row.level),
        "level_name": levels.NAMES[row.level],
        "department": row.department,
        "updated_at": row.updated_at.isoformat(),
    }
