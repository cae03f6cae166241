"""The catalogue of licence types: who defines a type, who holds it, its face fields and validity.

A type is declared in a JSON file (see ``licenses/types/*.json`` for the demo
ones) with these members:

- ``code``: 21 characters, the defining authority's credit code and 3 digits;
- ``name`` (Chinese), ``name_en``; ``authority``: ``{"code", "name"}``;
- ``holder_kind``: ``person`` (resident ID) or ``enterprise`` (credit code);
- ``holder_name_field``: the face field holding the holder's name;
- ``face``: a JSON Schema (draft 2020-12) of an object; each property has a
  Chinese ``title``, an English ``x-title-en`` and may be ``x-sensitive`` (stored
  encrypted, masked on pages, read only in ``read`` mode or above);
- ``validity``: ``{"years": n}``, ``{"months": n}`` or ``{}`` (no end date);
- ``layout``: how the file is drawn: ``{"fields": [order], "accent": "#rrggbb"}``.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.db import READ_ONLY, utc_now
from core.identifiers import InvalidIdentifier, validate_credit_code
from core.problems import Problem
from licenses import identifiers
from licenses.models import LicenceType

DEMO_TYPES = Path(__file__).parent / "types"
HOLDER_KINDS = {"person": "111", "enterprise": "001"}  # holder kind -> GB/T 36903 holder code type
MAX_DEFINITION_BYTES = 64 * 1024
MAX_FIELDS = 40


def _bad(detail: str, code: str = "bad_licence_type") -> Problem:
    return Problem(422, "Unprocessable Content", detail, code=code)


@dataclass(frozen=True)
class Field:
    name: str
    title: str  # Chinese
    title_en: str
    sensitive: bool
    kind: str  # the JSON Schema type: string, integer, number, boolean
    format: str = ""  # e.g. "date"


@dataclass(frozen=True)
class TypeView:
    """A catalogue entry, parsed once: what issuing, sharing and rendering read."""

    code: str
    name: str
    name_en: str
    authority_code: str
    authority_name: str
    holder_kind: str
    holder_code_type: str
    holder_name_field: str
    fields: tuple[Field, ...]
    schema: dict
    validity: dict
    layout: dict

    @property
    def sensitive(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.sensitive)

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def as_json(self) -> dict:
        return {
            "code": self.code,
            "name": self.name,
            "name_en": self.name_en,
            "authority": {"code": self.authority_code, "name": self.authority_name},
            "holder_kind": self.holder_kind,
            "holder_name_field": self.holder_name_field,
            "face": self.schema,
            "validity": self.validity,
            "layout": self.layout,
        }

    def fields_json(self) -> list[dict]:
        return [
            {"name": f.name, "title": f.title, "title_en": f.title_en, "sensitive": f.sensitive, "type": f.kind, "format": f.format or None}
            for f in self.fields
        ]


def parse_definition(data: dict) -> TypeView:
    """Check a type definition; a 422 problem names the first thing wrong with it."""
    if not isinstance(data, dict):
        raise _bad("a licence type definition must be a JSON object")
    try:
        code = identifiers.check_type_code(str(data.get("code", "")))
    except InvalidIdentifier as exc:
        raise _bad(str(exc)) from None
    authority = data.get("authority") or {}
    if not isinstance(authority, dict):
        raise _bad("authority must be an object with code and name")
    try:
        authority_code = validate_credit_code(str(authority.get("code", ""))).value
    except InvalidIdentifier as exc:
        raise _bad(f"authority.code: {exc}") from None
    if authority_code != code[:18]:
        raise _bad("the type code must start with the defining authority's credit code")
    for member, limit in (("name", 100), ("name_en", 200)):
        value = data.get(member)
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise _bad(f"{member} must be text of 1 to {limit} characters")
    authority_name = authority.get("name")
    if not isinstance(authority_name, str) or not authority_name.strip() or len(authority_name) > 100:
        raise _bad("authority.name must be text of 1 to 100 characters")
    holder_kind = data.get("holder_kind")
    if holder_kind not in HOLDER_KINDS:
        raise _bad("holder_kind must be person or enterprise")
    schema = data.get("face")
    if not isinstance(schema, dict):
        raise _bad("face must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise _bad(f"face is not a valid JSON Schema: {exc.message}") from None
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        raise _bad("face must describe an object with properties")
    if len(schema["properties"]) > MAX_FIELDS:
        raise _bad(f"a type has at most {MAX_FIELDS} face fields")
    fields = []
    for name, spec in schema["properties"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("title"), str) or not isinstance(spec.get("x-title-en"), str):
            raise _bad(f"face field {name!r} needs a Chinese title and an English x-title-en")
        kind = spec.get("type", "string")
        if kind not in ("string", "integer", "number", "boolean"):
            raise _bad(f"face field {name!r} must be a string, integer, number or boolean")
        fields.append(Field(name, spec["title"], spec["x-title-en"], bool(spec.get("x-sensitive", False)), kind, spec.get("format", "")))
    holder_name_field = data.get("holder_name_field")
    if holder_name_field not in schema["properties"] or holder_name_field not in schema.get("required", []):
        raise _bad("holder_name_field must name a required face field")
    validity = data.get("validity", {})
    if not isinstance(validity, dict) or set(validity) - {"years", "months"} or len(validity) > 1:
        raise _bad('validity must be {"years": n}, {"months": n} or {}')
    for value in validity.values():
        if not isinstance(value, int) or not 1 <= value <= 100 * 12:
            raise _bad("validity must be a whole number of years or months")
    layout = data.get("layout", {})
    if not isinstance(layout, dict):
        raise _bad("layout must be an object")
    unknown = [f for f in layout.get("fields", []) if f not in schema["properties"]]
    if unknown:
        raise _bad(f"layout.fields names fields the face does not have: {', '.join(map(str, unknown))}")
    return TypeView(
        code=code,
        name=data["name"].strip(),
        name_en=data["name_en"].strip(),
        authority_code=authority_code,
        authority_name=authority_name.strip(),
        holder_kind=holder_kind,
        holder_code_type=HOLDER_KINDS[holder_kind],
        holder_name_field=holder_name_field,
        fields=tuple(fields),
        schema=schema,
        validity=validity,
        layout=layout,
    )


def read_file(path: Path) -> TypeView:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise _bad(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_DEFINITION_BYTES:
        raise _bad(f"a type definition is at most {MAX_DEFINITION_BYTES // 1024} KiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"{Path(path).name} is not JSON in UTF-8: {exc}") from None
    return parse_definition(data)


def add(db: Session, definition: TypeView, *, actor: str) -> tuple[LicenceType, bool]:
    """Add a type; (row, created). The same definition again changes nothing; a different one is a 409."""
    existing = db.get(LicenceType, definition.code)
    if existing is not None:
        if view(existing).as_json() == definition.as_json():
            return existing, False
        raise Problem(409, "Conflict", f"licence type {definition.code} exists with a different definition", code="type_exists")
    row = LicenceType(
        code=definition.code,
        name=definition.name,
        name_en=definition.name_en,
        authority_code=definition.authority_code,
        authority_name=definition.authority_name,
        holder_kind=definition.holder_kind,
        face_schema=json.dumps({**definition.schema, "x-holder-name": definition.holder_name_field}, ensure_ascii=False),
        validity=json.dumps(definition.validity),
        layout=json.dumps(definition.layout, ensure_ascii=False),
        created_at=utc_now(),
        created_by=actor,
    )
    db.add(row)
    db.flush()
    audit.record(db, actor=actor, action="licences.type.added", target=definition.code, details={"name": definition.name})
    return row, True


_views: dict[tuple[str, str], TypeView] = {}
_views_lock = threading.Lock()


def view(row: LicenceType) -> TypeView:
    """The parsed form of a stored type (cached: types are never edited in place)."""
    key = (row.code, row.face_schema)
    found = _views.get(key)
    if found is None:
        schema = json.loads(row.face_schema)
        holder_name_field = schema.pop("x-holder-name")
        found = parse_definition(
            {
                "code": row.code,
                "name": row.name,
                "name_en": row.name_en,
                "authority": {"code": row.authority_code, "name": row.authority_name},
                "holder_kind": row.holder_kind,
                "holder_name_field": holder_name_field,
                "face": schema,
                "validity": json.loads(row.validity),
                "layout": json.loads(row.layout),
            }
        )
        with _views_lock:
            _views[key] = found
    return found


# Types by code, per database (keyed by the engine's connection pool), as read from committed rows: a type is
# never changed (add refuses a different definition) nor removed, so once read it holds for the process's life.
_committed: weakref.WeakKeyDictionary[object, dict[str, TypeView]] = weakref.WeakKeyDictionary()


def get(db: Session, code: str) -> TypeView:
    """A type by code, or a 404 problem ``unknown_type``."""
    code_key = (code or "").strip().upper()[:21]
    bind = db.get_bind()
    known = _committed.get(bind.pool)
    found = known.get(code_key) if known is not None else None
    if found is not None:
        return found
    row = db.get(LicenceType, code_key)
    if row is None:
        raise Problem(404, "Not Found", f"there is no licence type {str(code)[:40]!r} in the catalogue", code="unknown_type")
    found = view(row)
    # Only what a read-only session saw is surely committed; a writer's own new row could still be rolled back.
    if bind.get_execution_options().get(READ_ONLY):
        with _views_lock:
            _committed.setdefault(bind.pool, {})[code_key] = found
    return found


def all_types(db: Session) -> list[TypeView]:
    return [view(row) for row in db.scalars(select(LicenceType).order_by(LicenceType.code))]


_validators: dict[str, Draft202012Validator] = {}


def check_face(definition: TypeView, face: object) -> dict:
    """The face data if it fits the type's schema; otherwise a 422 problem listing each field's error."""
    if not isinstance(face, dict):
        raise Problem(422, "Unprocessable Content", "face must be a JSON object", code="bad_face", errors=[])
    validator = _validators.get(definition.code)
    if validator is None or validator.schema is not definition.schema:
        validator = _validators[definition.code] = Draft202012Validator(
            definition.schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
    errors = []
    for error in sorted(validator.iter_errors(face), key=lambda e: list(e.path)):
        name = ".".join(str(p) for p in error.path) or (error.validator == "required" and _missing(error.message)) or ""
        field = definition.field(name.split(".")[0]) if name else None
        errors.append(
            {
                "field": name,
                "title": field.title if field else "",
                # the schema's message can quote the value; a sensitive field's value must not come back
                "detail": _message(error, sensitive=bool(field and field.sensitive)),
            }
        )
    if errors:
        raise Problem(
            422,
            "Unprocessable Content",
            f"the face data does not fit licence type {definition.code}: "
            + "; ".join(f"{e['field'] or '(face)'}: {e['detail']}" for e in errors[:5]),
            code="bad_face",
            errors=errors,
        )
    return face


def _missing(message: str) -> str:
    # "'name' is a required property" -> name
    return message.split("'")[1] if message.count("'") >= 2 else ""


def _message(error, *, sensitive: bool) -> str:
    kinds = {
        "required": "is required",
        "type": f"must be of type {error.validator_value}",
        "maxLength": f"must be at most {error.validator_value} characters",
        "minLength": f"must be at least {error.validator_value} characters",
        "pattern": "does not have the expected form",
        "format": f"must be a valid {error.validator_value}",
        "enum": "must be one of: " + ", ".join(map(str, error.validator_value)) if isinstance(error.validator_value, list) else "",
        "additionalProperties": "is not a field of this type" if not sensitive else "",
        "minimum": f"must be at least {error.validator_value}",
        "maximum": f"must be at most {error.validator_value}",
    }
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field(s)")
    return kinds.get(error.validator) or ("is not valid" if sensitive else error.message[:200])
