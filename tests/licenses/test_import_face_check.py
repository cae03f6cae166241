"""The bulk import's per-run shortcuts give what the per-row code gives: face verdicts and messages, identifiers.

The import checks a million faces with the type's schema compiled once (fastjsonschema); a face that check
does not pass goes to ``catalogue.check_face`` (jsonschema), so the compiled check must never pass a face
jsonschema refuses. These tests hold the two side by side on faces that are wrong in every way we can think of.
"""

from __future__ import annotations

import copy
import json
import random

import pytest

from core.problems import Problem
from licenses import catalogue, demo, identifiers, imports
from tests.licenses.conftest import enterprise_code, person_code

DEMO_TYPES = sorted(catalogue.DEMO_TYPES.glob("*.json"))


def verdict(check, face: dict):
    """("ok", the face as returned) or ("problem", its detail)."""
    try:
        return "ok", check(copy.deepcopy(face))
    except Problem as exc:
        return "problem", exc.detail


def same_verdicts(definition, faces: list[dict]) -> None:
    compiled = imports.face_checker(definition)
    for face in faces:
        expected = verdict(lambda f: catalogue.check_face(definition, f), face)
        assert verdict(compiled, face) == expected, face


def variants(definition, good: dict) -> list[dict]:
    """The good face, and faces wrong one field at a time (and a few near misses that are right)."""
    wrong_values = [None, 0, 1, -1, 1.0, 1.5, True, False, "", " ", "\n", [], {}, ["a"], {"a": 1}]
    faces = [good, {**good, "unknown_field": "x"}, {}]
    for name, value in good.items():
        faces.append({k: v for k, v in good.items() if k != name})
        faces += [{**good, name: wrong} for wrong in wrong_values]
        if isinstance(value, str):
            faces += [
                {**good, name: value + "\n"},  # a pattern's $ matches before a final newline in Python's re
                {**good, name: "\n" + value},
                {**good, name: value + "X"},
                {**good, name: value[:-1]},
                {**good, name: value * 40},
                {**good, name: value[:1]},
                {**good, name: value.lower()},
                {**good, name: "２０１９-０３-０５"},  # full-width digits: \d matches them, int() reads them
                {**good, name: "2019-02-29"},
                {**good, name: "2020-02-29"},
                {**good, name: "2019-2-3"},
                {**good, name: "20190305"},
                {**good, name: "2019-03-05T00:00:00"},
            ]
    for field in definition.fields:
        if field.name in good:
            continue
        faces.append({**good, field.name: "2019-03-05" if field.format == "date" else "示例"})
    return faces


@pytest.mark.parametrize("path", DEMO_TYPES, ids=lambda p: p.stem)
def test_every_demo_type_is_compiled_and_judges_faces_as_jsonschema_does(path):
    definition = catalogue.read_file(path)
    assert imports._compiled_face_check(definition.schema) is not None  # else the next lines test jsonschema twice
    holder = person_code(7) if definition.holder_kind == "person" else enterprise_code(7)
    for seed in range(5):
        good = demo.sample_face(definition.code, holder_code=holder, holder_name="林志明", seed=str(seed))
        assert verdict(imports.face_checker(definition), good) == ("ok", good)
        same_verdicts(definition, variants(definition, good))


def custom_type(face_schema: dict, holder_name_field: str = "name"):
    data = json.loads((catalogue.DEMO_TYPES / "driving-licence.json").read_text(encoding="utf-8"))
    data["face"] = face_schema
    data["holder_name_field"] = holder_name_field
    data["layout"] = {}
    return catalogue.parse_definition(data)


def field(**spec) -> dict:
    return {"title": "字段", "x-title-en": "Field", **spec}


def test_a_dollar_inside_a_pattern_keeps_the_face_check_on_jsonschema():
    # fastjsonschema reads every unescaped $ as \Z: right for a $ that ends the pattern (it only narrows it), but
    # a negative lookahead on $ then lets "a\n" through, which Python's re (and so jsonschema) refuses.
    definition = custom_type(
        {
            "type": "object",
            "required": ["name", "code"],
            "properties": {"name": field(type="string"), "code": field(type="string", pattern="^a(?!$)")},
        }
    )
    assert imports._compiled_face_check(definition.schema) is None
    same_verdicts(definition, [{"name": "林志明", "code": "a\n"}, {"name": "林志明", "code": "ab"}, {"name": "林志明", "code": "a"}])
    assert verdict(imports.face_checker(definition), {"name": "林志明", "code": "a\n"})[0] == "problem"


def test_keywords_outside_the_compiled_set_keep_the_face_check_on_jsonschema():
    base = {"name": field(type="string")}
    for schema in (
        {"type": "object", "required": ["name"], "properties": base, "minProperties": 3},
        {"type": "object", "required": ["name"], "properties": {**base, "n": field(type="integer", multipleOf=0.1)}},
        {"type": "object", "required": ["name"], "properties": {**base, "n": field(type="integer", exclusiveMinimum=0)}},
        {"type": "object", "required": ["name"], "properties": {**base, "n": field(type="string", enum=[["a"]])}},
        {"type": "object", "required": ["name"], "properties": {**base, "n": field(type="integer", enum=[1, 2])}},
        {"type": "object", "required": ["name"], "properties": base, "additionalProperties": {"type": "string"}},
        {"type": "object", "required": ["name"], "properties": base, "$schema": "http://json-schema.org/draft-04/schema#"},
    ):
        definition = custom_type(schema)
        assert imports._compiled_face_check(definition.schema) is None, schema
        same_verdicts(definition, [{"name": "林志明"}, {"name": "林志明", "n": 0}, {"name": "林志明", "n": "a"}, {"name": 1}])


def test_the_compiled_check_never_fills_in_defaults_nor_changes_the_face():
    definition = custom_type(
        {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": field(type="string", minLength=2),
                "nationality": field(type="string", default="中国"),
                "level": field(type="integer", minimum=1, maximum=5, default=3),
                "issued": field(type="string", format="date"),
                "class": field(type="string", enum=["A", "B"], pattern="^[AB]$"),
            },
        }
    )
    assert imports._compiled_face_check(definition.schema) is not None
    check = imports.face_checker(definition)
    face = {"name": "林志明"}
    assert check(face) == {"name": "林志明"}  # no nationality or level added: what is stored is what the file said
    same_verdicts(
        definition,
        [
            {"name": "林志明", "level": level, "issued": issued, "class": klass}
            for level in (0, 1, 5, 6, 2.0, 2.5, True, "3")
            for issued in ("2019-03-05", "2019-02-29", "2019-3-5", "20190305", 20190305)
            for klass in ("A", "C", "A\n", "a")
        ],
    )


def test_the_import_makes_the_identifiers_licence_id_makes():
    rng = random.Random(36)
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for type_code, issuer in (
        (demo.DRIVING_LICENCE, demo.issuer_for(demo.DRIVING_LICENCE).code),
        (demo.BUSINESS_LICENCE, enterprise_code(3)),
    ):
        make = imports._IdentifierMaker(type_code, issuer)
        serials = ["0000000", "ZZZZZZZ", "IMP0000000001", "9" * 32] + [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(7, 32))) for _ in range(3000)
        ]
        for serial in serials:
            made = make(serial)
            assert made == str(identifiers.LicenceId(type_code, issuer, serial, 1)), serial
            assert identifiers.parse(made).serial == serial
