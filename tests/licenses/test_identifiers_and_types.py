"""GB/T 36904 identifiers (judged by python-stdnum's MOD 37,36) and the type catalogue's checks."""

from __future__ import annotations

import json

import pytest
from stdnum.iso7064 import mod_37_36

from core.identifiers import InvalidIdentifier
from core.problems import Problem
from licenses import catalogue, identifiers

TYPE = "11100000000013952E002"
ISSUER = "91350100M000100Y43"


def test_an_identifier_has_the_deployed_shape_and_a_check_character_stdnum_accepts():
    made = identifiers.make(TYPE, ISSUER, "2026000123", 1)
    text = str(made)
    root, rest = text[: len(identifiers.ROOT)], text[len(identifiers.ROOT) + 1 :]
    assert root == "1.2.156.3005.2"
    type_code, issuer, serial, version, check = rest.split(".")
    assert (type_code, issuer, serial, version) == (TYPE, ISSUER, "2026000123", "001")
    assert mod_37_36.is_valid(type_code + issuer + serial + version + check)
    assert identifiers.parse(text) == made


@pytest.mark.parametrize("position", [15, 30, 45, 60, -5, -1])
def test_a_changed_character_is_refused(position):
    text = str(identifiers.make(TYPE, ISSUER, "2026000123", 2))
    original = text[position]
    if original == ".":
        pytest.skip("a dot")
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    replacement = alphabet[(alphabet.index(original) + 7) % 36]
    changed = text[:position] + replacement + (text[position + 1 :] if position != -1 else "")
    with pytest.raises(InvalidIdentifier):
        identifiers.parse(changed)


def test_a_wrong_check_character_is_named_as_such():
    text = str(identifiers.make(TYPE, ISSUER, "2026000123", 1))
    wrong = text[:-1] + ("A" if text[-1] != "A" else "B")
    with pytest.raises(InvalidIdentifier, match="check character"):
        identifiers.parse(wrong)


@pytest.mark.parametrize(
    "text",
    ["", "1.2.3", "1.2.156.3005.2.X.Y", "1.2.156.3005.2." + TYPE + "." + ISSUER + ".2026000123.000.0", "9" * 500],
)
def test_malformed_identifiers_are_refused(text):
    with pytest.raises(InvalidIdentifier):
        identifiers.parse(text)


def test_versions_count_up_from_001():
    first = identifiers.make(TYPE, ISSUER, "2026000123")
    assert str(first.next_version()).split(".")[-2] == "002"


def test_the_demo_types_are_valid_definitions():
    types = [catalogue.read_file(path) for path in sorted(catalogue.DEMO_TYPES.glob("*.json"))]
    assert len(types) >= 4
    assert {t.holder_kind for t in types} == {"person", "enterprise"}
    assert sum(t.holder_kind == "person" for t in types) >= 2 and sum(t.holder_kind == "enterprise" for t in types) >= 2
    for t in types:
        assert all(f.title and f.title_en for f in t.fields)


def _definition(**changes) -> dict:
    data = json.loads((catalogue.DEMO_TYPES / "food-business-permit.json").read_text())
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"code": "11100000000013952E00"}, "21 characters"),
        ({"code": "11100000000013952F002"}, "credit code"),
        ({"holder_kind": "robot"}, "holder_kind"),
        ({"face": {"type": "object", "properties": {"x": {"type": "string"}}}}, "title"),
        ({"face": {"type": "wrong"}}, "JSON Schema"),
        ({"validity": {"weeks": 2}}, "validity"),
        ({"holder_name_field": "nope"}, "holder_name_field"),
    ],
)
def test_bad_type_definitions_say_what_is_wrong(changes, words):
    with pytest.raises(Problem) as caught:
        catalogue.parse_definition(_definition(**changes))
    assert caught.value.status == 422 and words in caught.value.detail


def test_face_errors_are_listed_per_field_and_never_echo_sensitive_values():
    definition = catalogue.read_file(catalogue.DEMO_TYPES / "teacher-qualification.json")
    with pytest.raises(Problem) as caught:
        catalogue.check_face(definition, {"name": "王", "sex": "?", "resident_id": "SECRET-VALUE-123", "qualification": "小学教师资格"})
    problem = caught.value
    assert problem.status == 422 and problem.extensions["code"] == "bad_face"
    fields = {e["field"] for e in problem.extensions["errors"]}
    assert {"name", "sex", "resident_id", "certificate_number", "subject"} <= fields
    assert "SECRET-VALUE-123" not in json.dumps(problem.as_dict(), ensure_ascii=False)
