"""Demo licences: issuing departments with seals, the demo types, and sample face data for a holder.

Used by ``make run`` (through the composition root's demo), by the tests and by the
benchmarks, so all three issue the same realistic licences.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from core.identifiers import generate_credit_code, organisation_code_check_char
from licenses import catalogue, issuance, issuers
from licenses.context import LicencesContext
from licenses.models import Licence
from signing import seals
from signing.models import Seal


def _department_code(organisation: str) -> str:
    return generate_credit_code("11350100" + organisation + organisation_code_check_char(organisation))


@dataclass(frozen=True)
class DemoIssuer:
    code: str
    name: str
    type_codes: tuple[str, ...]


BUSINESS_LICENCE = "11100000000013952E001"
FOOD_PERMIT = "11100000000013952E002"
DRIVING_LICENCE = "1110000000001375XN001"
TEACHER_QUALIFICATION = "11100000000013469Q001"

ISSUERS = (
    DemoIssuer(_department_code("M0001001"), "示范市市场监督管理局", (BUSINESS_LICENCE, FOOD_PERMIT)),
    DemoIssuer(_department_code("M0001002"), "示范市公安局交通警察支队", (DRIVING_LICENCE,)),
    DemoIssuer(_department_code("M0001003"), "示范市教育局", (TEACHER_QUALIFICATION,)),
)


def issuer_for(type_code: str) -> DemoIssuer:
    return next(i for i in ISSUERS if type_code in i.type_codes)


def prepare_catalogue(ctx: LicencesContext, *, actor: str) -> None:
    """The demo types, and each demo department with a seal and as an issuer (idempotent)."""
    with ctx.sessions() as db, db.begin():
        for path in sorted(catalogue.DEMO_TYPES.glob("*.json")):
            catalogue.add(db, catalogue.read_file(path), actor=actor)
    for issuer in ISSUERS:
        with ctx.sessions() as db:
            seal = db.get(Seal, issuer.name)
        if seal is None:
            seals.add(ctx.signing.ca, department=issuer.name, credit_code=issuer.code, actor=actor)
        with ctx.sessions() as db, db.begin():
            issuers.add(db, credit_code=issuer.code, name=issuer.name, seal_name=issuer.name, actor=actor)


def sample_face(type_code: str, *, holder_code: str, holder_name: str, seed: str = "") -> dict:
    """Plausible face data of a demo type for this holder (the same seed gives the same data)."""
    rng = random.Random(f"{type_code}:{holder_code}:{seed}")
    digits = "".join(rng.choice("0123456789") for _ in range(20))
    if type_code == BUSINESS_LICENCE:
        return {
            "credit_code": holder_code,
            "name": holder_name,
            "entity_type": "有限责任公司（自然人投资或控股）",
            "legal_representative": rng.choice(["林志明", "陈晓燕", "黄建国", "吴海峰"]),
            "registered_capital": f"{rng.choice([50, 100, 300, 500])}万元人民币",
            "established_on": (date(2010, 1, 1) + timedelta(days=rng.randrange(0, 5000))).isoformat(),
            "domicile": f"示范市鼓楼区五四路{rng.randrange(1, 300)}号",
            "business_scope": "一般项目：食品销售（仅销售预包装食品）；日用百货销售；信息咨询服务（不含许可类信息咨询服务）。",
        }
    if type_code == FOOD_PERMIT:
        return {
            "permit_number": "JY1" + digits[:13],
            "operator": holder_name,
            "credit_code": holder_code,
            "legal_representative": rng.choice(["林志明", "陈晓燕", "黄建国"]),
            "premises": f"示范市台江区八一七中路{rng.randrange(1, 500)}号一层",
            "main_business": rng.choice(["食品销售经营者", "餐饮服务经营者"]),
            "business_items": "预包装食品销售（含冷藏冷冻食品）；散装食品销售（不含散装熟食）",
            "complaint_phone": "12315",
        }
    if type_code == DRIVING_LICENCE:
        birth = date(int(holder_code[6:10]), int(holder_code[10:12]), int(holder_code[12:14]))
        return {
            "licence_number": holder_code,
            "name": holder_name,
            "sex": "男" if int(holder_code[16]) % 2 else "女",
            "nationality": "中国",
            "address": f"示范市仓山区上渡路{rng.randrange(1, 200)}号{rng.randrange(1, 30)}栋{rng.randrange(101, 2801)}室",
            "birth_date": birth.isoformat(),
            "first_issued_on": (birth.replace(year=birth.year + 20) + timedelta(days=rng.randrange(0, 3000))).isoformat(),
            "vehicle_class": rng.choice(["C1", "C2", "B2", "A1"]),
        }
    if type_code == TEACHER_QUALIFICATION:
        return {
            "certificate_number": digits[:17],
            "name": holder_name,
            "sex": "男" if int(holder_code[16]) % 2 else "女",
            "resident_id": holder_code,
            "qualification": rng.choice(["小学教师资格", "初级中学教师资格", "高级中学教师资格"]),
            "subject": rng.choice(["语文", "数学", "英语", "物理", "历史"]),
        }
    raise ValueError(f"no sample data for licence type {type_code}")


def catalogue_kind(ctx: LicencesContext, type_code: str) -> str:
    with ctx.sessions() as db:
        return catalogue.get(db, type_code).holder_code_type


def issue_samples(ctx: LicencesContext, *, holder_code: str, holder_name: str, type_codes: tuple[str, ...], actor: str) -> list[Licence]:
    """Issue one licence of each type to the holder, once (the request id makes it idempotent)."""
    made = []
    for type_code in type_codes:
        order = issuance.Order(
            type_code=type_code,
            issuer_code=issuer_for(type_code).code,
            holder_code=holder_code,
            face=sample_face(type_code, holder_code=holder_code, holder_name=holder_name),
            # keyed hash, not the code: request ids are stored in clear
            request_id=f"demo:{type_code}:{issuance.holder_hash(ctx, catalogue_kind(ctx, type_code), holder_code)[:32]}",
        )
        made.append(issuance.issue(ctx, order, actor=actor, requester=actor))
    return made
