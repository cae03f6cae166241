"""Bulk import of legacy (paper-era) licences from CSV, JSONL or XLSX, and sealing their files afterwards.

An import streams its file: one pass reads the file's SHA-256 and checks its
encoding (UTF-8, else GB18030, a superset of GBK, unless one is stated), a second
reads the rows. Each row is checked like an issue is (the holder code's check
digits, the serial, the dates, the face against the type's schema); valid rows are
written in batches with one Core ``executemany`` per table, faces and holder codes
sealed in process with ``licenses.privacy``. A batch, the run's resume point
(``ImportRun.resume_after``) and its counters are one transaction, so a run killed
anywhere resumes after its last committed batch and never writes a row twice.

The licence identifier comes from (type, issuer, serial from the file, version
001): a rerun finds its rows already there (``rows_existing``) and adds nothing. A
run is named by (file digest, type, issuer), so running the same file again resumes
an unfinished run or re-checks a finished one.

Imported licences have no file yet (``file_state="pending"``): they are queryable at
once, and ``seal_pending`` (``hallmark licences seal-pending``, and a periodic job)
renders and seals their files later, so an import is not bound by the HSM's speed.

Rejected rows go to an error report (CSV: line, reason, the row with anything shaped
like a resident ID and the type's sensitive fields masked).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import fastjsonschema
from jsonschema import Draft202012Validator
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session
from stdnum.iso7064 import mod_37_36

from core import audit
from core.db import utc_now
from core.identifiers import InvalidIdentifier, mask_resident_ids
from core.problems import Problem
from licenses import catalogue, identifiers, issuance, issuers, lifecycle, privacy, statuslist
from licenses.catalogue import TypeView
from licenses.context import ACTOR, LicencesContext
from licenses.models import ImportRun, Licence, StateChange

log = logging.getLogger(__name__)

ENCODINGS = ("utf-8", "gbk", "gb18030")
FORMATS = ("csv", "jsonl", "xlsx")
DEFAULT_BATCH = 1000
MAX_BATCH = 20_000
PENDING, SEALING, SEALED = "pending", "sealing", "sealed"
# How long a worker's claim on a file it is sealing lasts: far longer than sealing a batch takes
# (seconds), so a live worker keeps its claim; a worker that died frees its files after it.
SEAL_LEASE = timedelta(minutes=10)
_CHUNK = 1 << 20
_IN_CHUNK = 500  # identifiers per IN (...) look-up: well under SQLite's bound-parameter limit
# Columns understood without a mapping file (besides each face field's name and Chinese title).
DEFAULT_COLUMNS = {
    "holder": ("holder_code", "持证主体代码"),
    "serial": ("serial", "证照编号"),
    "valid_from": ("valid_from", "有效期起始日期"),
    "valid_until": ("valid_until", "有效期截止日期"),
}
_DATE_FORMS = (
    re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"),
    re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"),
    re.compile(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})$"),
)
_DATE_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


class ImportFailed(Exception):
    """The file as a whole cannot be imported (encoding, format, columns, mapping): nothing was written."""


class ImportStopped(Exception):
    """The run stopped on request after some batches (a test hook standing in for a killed process)."""


@dataclass(frozen=True)
class Mapping:
    """Which column holds what: face fields by column, and the holder code, serial and validity columns."""

    face: dict[str, str]  # column -> face field
    holder: tuple[str, ...]
    serial: tuple[str, ...]
    valid_from: tuple[str, ...]
    valid_until: tuple[str, ...]


@dataclass
class Result:
    run_id: str
    source_sha256: str
    encoding: str
    rows_read: int = 0
    rows_added: int = 0
    rows_existing: int = 0
    rows_rejected: int = 0
    resumed_after: int = 0  # the source row this run went on after (0: from the start)
    error_report: str = ""
    batches: int = 0

    def as_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Candidate:
    line: int
    identifier: str
    serial: str
    holder: tuple[str, str]  # code, masked
    holder_name: str
    face: dict
    valid_from: date
    valid_until: date | None
    raw: dict = field(repr=False)


# -- the file: digest, encoding, format, rows ------------------------------------------------------


def file_format(path: Path, stated: str | None = None) -> str:
    if stated:
        if stated not in FORMATS:
            raise ImportFailed(f"unknown format {stated!r}; use one of {', '.join(FORMATS)}")
        return stated
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("csv", "txt"):
        return "csv"
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in ("xlsx", "xlsm", "xls"):
        return "xlsx"
    raise ImportFailed(f"{path.name}: cannot tell the format from the name; the file must end in .csv, .jsonl or .xlsx")


def scan(path: Path, kind: str, encoding: str | None) -> tuple[str, int, str]:
    """(SHA-256, size, text encoding) of the file, read in chunks; the encoding is checked over the whole file.

    Stated or not, every byte must decode strictly, so a file in an unexpected encoding
    is refused before anything is written rather than half-imported with mojibake.
    """
    if encoding is not None and encoding.lower() not in ENCODINGS:
        raise ImportFailed(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    if kind == "xlsx":
        candidates: tuple[str, ...] = ()
    elif kind == "jsonl":
        candidates = ("utf-8-sig",)  # JSON text is UTF-8 (RFC 8259)
        if encoding and encoding.lower() != "utf-8":
            raise ImportFailed("a JSONL file is UTF-8 (RFC 8259); --encoding applies to CSV files only")
    elif encoding:
        candidates = ("utf-8-sig",) if encoding.lower() == "utf-8" else (encoding.lower(),)
    else:
        candidates = ("utf-8-sig", "gb18030")
    digest, size = hashlib.sha256(), 0
    failures: list[str] = []
    chosen = None
    for number, name in enumerate(candidates or (None,)):
        decoder = codecs.getincrementaldecoder(name)("strict") if name else None
        failure, offset = None, 0
        try:
            with path.open("rb") as raw:
                while chunk := raw.read(_CHUNK):
                    if number == 0:  # the digest is taken on the first pass only
                        digest.update(chunk)
                        size += len(chunk)
                    if decoder is not None and failure is None:
                        try:
                            decoder.decode(chunk)
                        except UnicodeDecodeError as exc:
                            failure = f"{_human(name)}: byte 0x{chunk[exc.start]:02x} at offset {offset + exc.start:,} does not decode"
                            if number:
                                break
                    offset += len(chunk)
                if decoder is not None and failure is None:
                    try:
                        decoder.decode(b"", final=True)
                    except UnicodeDecodeError:
                        failure = f"{_human(name)}: the file ends inside a character"
        except OSError as exc:
            raise ImportFailed(f"cannot read {path}: {exc.strerror}") from None
        if failure is None:
            chosen = name
            break
        failures.append(failure)
    if candidates and chosen is None:
        if encoding:
            raise ImportFailed(f"{path.name} is not valid {_human(candidates[0])} text: {failures[0]}; check --encoding")
        raise ImportFailed(
            f"{path.name} is in an unexpected encoding: it is neither UTF-8 nor GBK/GB18030 text ({'; '.join(failures)}); "
            "save it as UTF-8 or state --encoding"
        )
    return digest.hexdigest(), size, chosen or "binary"


def _human(encoding: str | None) -> str:
    return {"utf-8-sig": "UTF-8", "gb18030": "GB18030", "gbk": "GBK"}.get(encoding or "", encoding or "binary")


class _Source:
    """Rows of a file as (line number, {column: value}), with how many bytes have been read."""

    def __init__(self, path: Path, kind: str, encoding: str):
        self.path, self.kind, self.encoding = path, kind, encoding
        self.header: list[str] | None = None
        self._raw = None

    @property
    def position(self) -> int:
        with contextlib.suppress(Exception):
            return self._raw.tell() if self._raw is not None else 0
        return 0

    def rows(self) -> Iterator[tuple[int, dict | str]]:
        """A dict per row, or a string saying why the row could not be read at all."""
        if self.kind == "csv":
            yield from self._csv()
        elif self.kind == "jsonl":
            yield from self._jsonl()
        else:
            yield from self._xlsx()

    def _csv(self):
        with self.path.open("rb") as raw, io.TextIOWrapper(raw, encoding=self.encoding, newline="") as text:
            self._raw = raw
            reader = csv.reader(text)
            try:
                header = next(reader)
            except StopIteration:
                raise ImportFailed(f"{self.path.name} is empty") from None
            except csv.Error as exc:
                raise ImportFailed(f"{self.path.name}: the header line is not CSV ({exc})") from None
            self.header = [h.strip().lstrip("\ufeff") for h in header]
            width = len(self.header)
            while True:
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield reader.line_num, f"not a CSV row ({exc})"
                    continue
                if not any(v.strip() for v in values):
                    continue
                if len(values) > width:
                    yield reader.line_num, f"{len(values)} values for {width} columns"
                    continue
                yield reader.line_num, dict(zip(self.header, values, strict=False))  # a short row lacks its last columns

    def _jsonl(self):
        with self.path.open("rb") as raw, io.TextIOWrapper(raw, encoding=self.encoding) as lines:
            self._raw = raw
            for line, text in enumerate(lines, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except ValueError as exc:
                    yield line, f"not JSON ({exc.msg} at column {getattr(exc, 'colno', '?')})"
                    continue
                if not isinstance(row, dict):
                    yield line, "not a JSON object"
                    continue
                yield line, {str(k): v for k, v in row.items()}

    def _xlsx(self):
        try:
            from python_calamine import CalamineWorkbook
        except ImportError:
            raise ImportFailed("reading XLSX needs the python-calamine package, which is not installed; save the sheet as CSV") from None
        try:
            sheet = CalamineWorkbook.from_path(str(self.path)).get_sheet_by_index(0)
            rows = sheet.iter_rows()
            header = next(rows, None)
        except Exception as exc:  # calamine's own errors: a damaged or password-protected workbook
            raise ImportFailed(f"{self.path.name} is not a readable XLSX workbook ({exc})") from None
        if header is None:
            raise ImportFailed(f"{self.path.name} is empty")
        self.header = [_cell(h).strip() for h in header]
        size = self.path.stat().st_size
        total = max(1, sheet.height)
        for line, values in enumerate(rows, start=2):
            self._xlsx_position = size * line // total
            if not any(_cell(v).strip() for v in values):
                continue
            yield line, {name: _cell(value) for name, value in zip(self.header, values, strict=False) if name}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- the mapping --------------------------------------------------------------------------------


def read_mapping(path: Path | None, definition: TypeView) -> Mapping:
    """The default mapping (face field names and Chinese titles as columns), with a mapping file's entries over it.

    A mapping file is a JSON object: ``{"face": {"column": "field", ...}, "holder": "column", "serial":
    "column", "valid_from": "column", "valid_until": "column"}``; every member is optional.
    """
    face = {}
    for f in definition.fields:
        face[f.name] = f.name
        if f.title:
            face[f.title] = f.name
    special = {key: list(names) for key, names in DEFAULT_COLUMNS.items()}
    if path is not None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ImportFailed(f"cannot read the mapping file {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ImportFailed(f"the mapping file {path} is not JSON: {exc}") from None
        if not isinstance(data, dict) or set(data) - {"face", *DEFAULT_COLUMNS}:
            raise ImportFailed(f"the mapping file must be a JSON object with members face, {', '.join(DEFAULT_COLUMNS)}")
        known = {f.name for f in definition.fields}
        for column, name in (data.get("face") or {}).items():
            if name not in known:
                raise ImportFailed(f"the mapping file maps column {column!r} to {name!r}, which is not a field of type {definition.code}")
            face[str(column)] = name
        for key in DEFAULT_COLUMNS:
            if key in data:
                if not isinstance(data[key], str) or not data[key]:
                    raise ImportFailed(f"the mapping file's {key} must name a column")
                special[key] = [data[key]]
    return Mapping(face=face, **{key: tuple(names) for key, names in special.items()})


def _check_header(header: list[str], mapping: Mapping, definition: TypeView) -> None:
    """The columns every row needs are in the header: else nothing is read (a mapping file or a renamed column fixes it)."""
    present = set(header)
    missing = [
        f"{key} ({' / '.join(getattr(mapping, key))})"
        for key in ("holder", "serial", "valid_from")
        if not present & set(getattr(mapping, key))
    ]
    mapped = {mapping.face[c] for c in present if c in mapping.face}
    required = definition.schema.get("required", [])
    missing += [f"{name} ({definition.field(name).title if definition.field(name) else name})" for name in required if name not in mapped]
    if missing:
        raise ImportFailed("the file has no column for: " + ", ".join(missing) + "; rename the columns or give a --mapping file")


# -- checking one row ----------------------------------------------------------------------------


def parse_date(text: object, what: str) -> date:
    value = str(text or "").strip()
    if len(value) == 10 and value[4] == "-" and value[7] == "-" and value.isascii():
        with contextlib.suppress(ValueError):  # the usual YYYY-MM-DD at once; anything else as below
            return date.fromisoformat(value)
    for form in (*_DATE_FORMS, _DATE_COMPACT):
        found = form.match(value)
        if found:
            try:
                return date(*(int(part) for part in found.groups()))
            except ValueError:
                break
    raise ValueError(f"{what} {mask_resident_ids(value)[:40]!r} is not a date (YYYY-MM-DD)")


def _first(row: dict, columns: tuple[str, ...]) -> object:
    for column in columns:
        if column in row:
            return row[column]
    return None


def _clean(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


# What a face schema may use for the compiled check: keywords that mean the same in JSON Schema 2020-12 (the
# types' dialect, which catalogue.check_face applies with jsonschema) and in what fastjsonschema compiles, where
# fastjsonschema is never the more lenient. A schema with anything else is checked with jsonschema alone.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly"})
_TOP_KEYWORDS = _ANNOTATIONS | {"$schema", "type", "properties", "required", "additionalProperties"}
_FIELD_KEYWORDS = _ANNOTATIONS | {"type", "minLength", "maxLength", "pattern", "enum", "format", "minimum", "maximum"}
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _compiled_face_check(schema: dict) -> tuple[Callable[[dict], object], tuple[tuple[str, str], ...]] | None:
    """(fastjsonschema's compiled validator of ``schema`` without its formats, (field, format) pairs), or None.

    None when the schema uses something outside the keywords above, so that a face the compiled check passes
    is always one jsonschema passes too (a face it fails gets jsonschema's own verdict and messages):

    - ``format`` is left out of the compiled code and checked with jsonschema's own format checker;
    - ``pattern``: fastjsonschema searches with Python's ``re`` as jsonschema does, but turns ``$`` into ``\\Z``
      (no match before a final newline), which narrows a ``$`` that ends the pattern and may widen one anywhere else
      (in a lookahead, say): a pattern with an unescaped ``$`` before its end is not compiled;
    - ``enum`` with text members only (``1``, ``1.0`` and ``true`` are told apart differently by some versions);
    - ``additionalProperties`` true or false, not a schema; ``default`` is never filled in (``use_default=False``).
    """
    if set(schema) - _TOP_KEYWORDS or schema.get("$schema", _DIALECT) != _DIALECT or schema.get("type") != "object":
        return None
    if not isinstance(schema.get("additionalProperties", True), bool) or not isinstance(schema.get("properties"), dict):
        return None
    formats = []
    for name, spec in schema["properties"].items():
        keywords = {k for k in spec if not k.startswith("x-")} if isinstance(spec, dict) else None
        if keywords is None or keywords - _FIELD_KEYWORDS or not isinstance(spec.get("type", "string"), str):
            return None
        if not all(isinstance(v, str) for v in spec.get("enum", ())):
            return None
        pattern = spec.get("pattern", "")
        if any(pattern[i] == "$" and pattern[i - 1 : i] != "\\" for i in range(len(pattern) - 1)):
            return None
        if "format" in spec:
            formats.append((name, spec["format"]))
    try:
        compiled = fastjsonschema.compile(
            {k: v for k, v in schema.items() if k != "$schema"}, use_default=False, use_formats=False, detailed_exceptions=False
        )
    except Exception:  # a pattern Python's re cannot take once rewritten, say: jsonschema checks every face
        log.debug("the face schema does not compile with fastjsonschema; faces are checked with jsonschema", exc_info=True)
        return None
    return compiled, tuple(formats)


def face_checker(definition: TypeView) -> Callable[[dict], dict]:
    """``catalogue.check_face`` for one type, for many faces: the same verdicts and messages, compiled where it can be.

    A face the compiled check passes is returned as it is; any other face goes to ``catalogue.check_face``, whose
    problem (or, where the compiled check is the stricter, whose pass) is the answer.
    """
    compiled = _compiled_face_check(definition.schema)
    formats = Draft202012Validator.FORMAT_CHECKER

    def check(face: dict) -> dict:
        if compiled is not None and isinstance(face, dict):
            validate, formatted = compiled
            try:
                validate(face)
            except fastjsonschema.JsonSchemaValueException:
                pass
            else:
                if all(name not in face or formats.conforms(face[name], kind) for name, kind in formatted):
                    return face
        return catalogue.check_face(definition, face)

    return check


class _IdentifierMaker:
    """``str(identifiers.LicenceId(type, issuer, serial, 1))`` for one type and issuer and many serials.

    The MOD 37,36 check character (ISO/IEC 7064, as python-stdnum computes it) is a fold over the characters of
    type + issuer + serial + version: the fold over the type and issuer, two thirds of the characters, is taken
    once. tests/licenses/test_import_face_check.py holds it to ``LicenceId`` and ``identifiers.parse``.
    """

    _ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

    def __init__(self, type_code: str, issuer_code: str):
        self._head = f"{identifiers.ROOT}.{type_code}.{issuer_code}."
        self._state = mod_37_36.checksum(type_code + issuer_code)

    def __call__(self, serial: str) -> str:
        alphabet, check = self._ALPHABET, self._state
        for character in serial + "001":
            check = (((check or 36) * 2) % 37 + alphabet.index(character)) % 36
        return f"{self._head}{serial}.001.{alphabet[(1 - ((check or 36) * 2) % 37) % 36]}"


class RowChecker:
    """Checks rows of one run: what holds for every row (the type, the issuer, the mapping) is worked out once.

    No database and no keys: the holder's lookup hash is taken for the rows that are written (``_licence_row``).
    """

    def __init__(self, definition: TypeView, issuer_code: str, mapping: Mapping):
        self.definition, self.issuer_code, self.mapping = definition, issuer_code, mapping
        self._dates = frozenset(f.name for f in definition.fields if f.format == "date")
        self._required = tuple(definition.schema.get("required", []))
        self._missing: dict[tuple, list[str]] = {}  # the row's columns -> required fields no column maps to
        self._face_fits = face_checker(definition)
        self._identifier = _IdentifierMaker(definition.code, issuer_code)

    def check(self, line: int, row: dict) -> _Candidate:
        """The row as a licence to add, or ``ValueError`` with the reason (never a full resident ID in it)."""
        definition, mapping = self.definition, self.mapping
        missing = [c[0] for c in (mapping.holder, mapping.serial, mapping.valid_from) if _first(row, c) is None]
        face: dict = {}
        names, dates = mapping.face, self._dates
        for column, value in row.items():
            name = names.get(column)
            if name is None:
                continue
            value = _clean(value)
            if value is None or value == "":
                continue
            if name in dates and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    value = parse_date(value, name).isoformat()  # 2019/3/5 -> 2019-03-05; a bad one fails the schema
            face[name] = value
        columns = tuple(row)
        unmapped = self._missing.get(columns)
        if unmapped is None:
            mapped = {names.get(c) for c in row}
            unmapped = [n for n in self._required if n not in mapped]
            if len(self._missing) < 64:  # a CSV or XLSX file has a few shapes of row; JSONL lines may each differ
                self._missing[columns] = unmapped
        missing += unmapped
        if missing:
            raise ValueError("missing column(s): " + ", ".join(missing))
        try:
            code, _kind, masked = issuance.check_holder(definition.holder_code_type, str(_clean(_first(row, mapping.holder)) or ""))
            serial = identifiers.check_serial(str(_clean(_first(row, mapping.serial)) or ""))
        except Problem as exc:
            raise ValueError(exc.detail) from None
        except InvalidIdentifier as exc:
            raise ValueError(str(exc)) from None
        start = parse_date(_first(row, mapping.valid_from), "valid_from")
        until_text = _clean(_first(row, mapping.valid_until))
        until = parse_date(until_text, "valid_until") if until_text else None
        try:
            face = self._face_fits(face)
            start, until = issuance.validity(definition, start, until)
        except Problem as exc:
            raise ValueError(exc.detail) from None
        holder_name = str(face.get(definition.holder_name_field, ""))
        identifier = self._identifier(serial)
        return _Candidate(line, identifier, serial, (code, masked), holder_name, face, start, until, row)


def masked_row(definition: TypeView, mapping: Mapping, row: dict | str) -> str:
    """The row for the error report: sensitive fields and the holder code masked, resident IDs anywhere masked."""
    if isinstance(row, str):
        return mask_resident_ids(row)[:500]
    shown = {}
    for column, value in row.items():
        name = mapping.face.get(column)
        text = "" if value is None else str(value)
        if (name in definition.sensitive or column in mapping.holder) and text:
            text = privacy._mask(definition, name or "", text) if name else (text[:3] + "***" + text[-2:] if len(text) > 6 else "***")
        shown[column] = mask_resident_ids(text)
    return json.dumps(shown, ensure_ascii=False)


# -- the run -------------------------------------------------------------------------------------


def run_id_for(digest: str, type_code: str, issuer_code: str) -> str:
    return hashlib.sha256(f"{digest}:{type_code}:{issuer_code}".encode()).hexdigest()[:32]


class _Report:
    """The error report: line, reason, the masked row. On a resume, the lines of batches that never committed go."""

    def __init__(self, path: Path, *, keep_up_to: int | None):
        self.path = path
        if keep_up_to is not None and path.exists():
            kept = path.with_name(path.name + ".part")
            with path.open(newline="", encoding="utf-8") as old, kept.open("w", newline="", encoding="utf-8") as new:
                reader, writer = csv.reader(old), csv.writer(new)
                for number, entry in enumerate(reader):
                    if number == 0 or (entry and entry[0].isdigit() and int(entry[0]) <= keep_up_to):
                        writer.writerow(entry)
            os.replace(kept, path)
            self._file = path.open("a", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
        else:
            self._file = path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
            self._writer.writerow(["line", "reason", "row"])

    def write(self, entries: list[tuple[int, str, str]]) -> None:
        for line, reason, row in sorted(entries):
            self._writer.writerow([line, mask_resident_ids(reason), row])
        self._file.flush()  # before the batch commits: a resume drops what a killed batch left here

    def close(self) -> None:
        self._file.close()


def import_file(
    ctx: LicencesContext,
    path: Path,
    *,
    type_code: str,
    issuer_code: str,
    actor: str,
    encoding: str | None = None,
    mapping_path: Path | None = None,
    error_report: Path | None = None,
    batch: int = DEFAULT_BATCH,
    kind: str | None = None,
    progress: Callable[[int, int, Result], None] | None = None,
    stop_after_batches: int | None = None,
) -> Result:
    """Import the licences in ``path``; resumes an unfinished run of the same file, type and issuer.

    ``progress(bytes_read, bytes_total, result)`` is called after each batch. ``ImportFailed`` (nothing written) for a
    file that cannot be imported as a whole; a Problem for an unknown type or issuer.
    """
    path = Path(path)
    if not 1 <= batch <= MAX_BATCH:
        raise ImportFailed(f"--batch must be between 1 and {MAX_BATCH:,}")
    if not path.is_file():
        raise ImportFailed(f"{path} is not a file")
    kind = file_format(path, kind)
    with ctx.sessions() as db:
        definition = catalogue.get(db, type_code)
        issuer = issuers.get(db, issuer_code)
        issuer_code = issuer.credit_code
    mapping = read_mapping(mapping_path, definition)
    digest, total, text_encoding = scan(path, kind, encoding)
    source = _Source(path, kind, text_encoding)
    run_id = run_id_for(digest, definition.code, issuer_code)
    report_path = Path(error_report) if error_report else path.with_name(path.name + ".errors.csv")
    result = Result(run_id=run_id, source_sha256=digest, encoding=_human(text_encoding), error_report=str(report_path))
    rows = source.rows()
    first = next(rows, None)  # reads the header: a file lacking a needed column stops here, before any write
    if source.header is not None:
        _check_header(source.header, mapping, definition)
    with ctx.sessions() as db, db.begin():
        run = db.get(ImportRun, run_id, with_for_update=True)
        if run is None:
            run = ImportRun(
                id=run_id,
                source_name=path.name[:255],
                source_sha256=digest,
                type_code=definition.code,
                issuer_code=issuer_code,
                imported_by=actor[:200],
                state="running",
                rows_read=0,
                rows_added=0,
                rows_existing=0,
                rows_rejected=0,
                resume_after=0,
                error_report=str(report_path)[:400],
                started_at=utc_now(),
            )
            db.add(run)
        elif run.state == "finished":  # the same file again: check every row, add what is missing
            run.state, run.resume_after, run.started_at, run.finished_at = "running", 0, utc_now(), None
            run.rows_read = run.rows_added = run.rows_existing = run.rows_rejected = 0
            run.imported_by, run.error_report = actor[:200], str(report_path)[:400]
        else:  # killed or failed: go on after its last committed batch
            run.state = "running"
            result.resumed_after = run.resume_after
            result.rows_read, result.rows_added = run.rows_read, run.rows_added
            result.rows_existing, result.rows_rejected = run.rows_existing, run.rows_rejected
    report = _Report(report_path, keep_up_to=result.resumed_after if result.resumed_after else None)
    try:
        _rows(ctx, definition, issuer_code, mapping, source, rows, first, result, report, actor, batch, total, progress, stop_after_batches)
    except ImportStopped:
        raise
    except BaseException:
        with contextlib.suppress(Exception), ctx.sessions() as db, db.begin():
            db.execute(update(ImportRun).where(ImportRun.id == run_id).values(state="failed"))
        raise
    finally:
        rows.close()
        report.close()
    with ctx.sessions() as db, db.begin():
        run = db.get(ImportRun, run_id, with_for_update=True)
        run.state, run.finished_at = "finished", utc_now()
        audit.record(
            db,
            actor=actor,
            action="licences.import",
            target=run_id,
            details={
                "source": path.name,
                "sha256": digest,
                "type": definition.code,
                "issuer": issuer_code,
                "read": result.rows_read,
                "added": result.rows_added,
                "existing": result.rows_existing,
                "rejected": result.rows_rejected,
                "resumed_after": result.resumed_after,
            },
        )
    return result


def _rows(ctx, definition, issuer_code, mapping, source, rows, first, result, report, actor, batch, total, progress, stop_after) -> None:
    pending: list[tuple[int, dict | str]] = []
    checker = RowChecker(definition, issuer_code, mapping)

    def chained():
        if first is not None:
            yield first
        yield from rows

    for line, row in chained():
        if line <= result.resumed_after:
            continue
        pending.append((line, row))
        if len(pending) >= batch:
            _write_batch(ctx, checker, pending, result, report, actor)
            pending = []
            if progress is not None:
                progress(getattr(source, "_xlsx_position", None) or source.position, total, result)
            if stop_after is not None and result.batches >= stop_after:
                raise ImportStopped(f"stopped after {result.batches} batches")
    if pending:
        _write_batch(ctx, checker, pending, result, report, actor)
    if progress is not None:
        progress(total, total, result)


def _write_batch(ctx, checker: RowChecker, rows: list, result: Result, report: _Report, actor: str) -> None:
    definition, issuer_code, mapping = checker.definition, checker.issuer_code, checker.mapping
    rejected: list[tuple[int, str, str]] = []
    candidates: dict[str, _Candidate] = {}
    for line, row in rows:
        if isinstance(row, str):
            rejected.append((line, row, ""))
            continue
        try:
            candidate = checker.check(line, row)
        except ValueError as exc:
            rejected.append((line, str(exc), masked_row(definition, mapping, row)))
            continue
        earlier = candidates.get(candidate.identifier)
        if earlier is not None:
            rejected.append((line, f"duplicate of line {earlier.line} (serial {candidate.serial})", masked_row(definition, mapping, row)))
            continue
        candidates[candidate.identifier] = candidate
    added = existing = 0
    with ctx.sessions() as db, db.begin():
        run = db.get(ImportRun, result.run_id, with_for_update=True)
        sealer = privacy.sealer(ctx, db)  # the data key every face and holder of this batch is sealed with
        found = _existing(db, list(candidates))
        licences, history = [], []
        now = utc_now()
        for identifier, candidate in candidates.items():
            there = found.get(identifier)
            if there is not None:
                import_id, source_row = there
                if import_id == result.run_id and source_row is not None and source_row < candidate.line:
                    rejected.append(
                        (
                            candidate.line,
                            f"duplicate of line {source_row} (serial {candidate.serial})",
                            masked_row(definition, mapping, candidate.raw),
                        )
                    )
                else:
                    existing += 1  # added by an earlier run of this file, or already in the library
                continue
            licences.append(_licence_row(ctx, db, sealer, definition, issuer_code, candidate, result.run_id, actor, now))
            history.append(
                {
                    "identifier": identifier,
                    "from_state": "",
                    "to_state": lifecycle.VALID,
                    "reason": "import",
                    "actor": actor[:200],
                    "at": now,
                }
            )
        if licences:
            # Each licence's entry in its issuer's status lists (random indexes, drawn for the whole batch at once).
            entries = statuslist.allocate_many(db, issuer_code, len(licences), size=ctx.settings.status_list_size)
            for row, (list_number, index) in zip(licences, entries, strict=True):
                row["status_list"], row["status_index"] = list_number, index
            db.execute(insert(Licence.__table__), licences)
            db.execute(insert(StateChange.__table__), history)
        added = len(licences)
        report.write(rejected)
        run.rows_read += len(rows)
        run.rows_added += added
        run.rows_existing += existing
        run.rows_rejected += len(rejected)
        run.resume_after = rows[-1][0]
    result.rows_read += len(rows)
    result.rows_added += added
    result.rows_existing += existing
    result.rows_rejected += len(rejected)
    result.batches += 1


def _existing(db: Session, identifier_list: list[str]) -> dict[str, tuple[str | None, int | None]]:
    found = {}
    for start in range(0, len(identifier_list), _IN_CHUNK):
        chunk = identifier_list[start : start + _IN_CHUNK]
        query = select(Licence.identifier, Licence.import_id, Licence.source_row).where(Licence.identifier.in_(chunk))
        found.update({identifier: (import_id, row) for identifier, import_id, row in db.execute(query)})
    return found


def _licence_row(
    ctx, db: Session, sealer: privacy.Sealer, definition: TypeView, issuer_code: str, c: _Candidate, run_id: str, actor: str, now
) -> dict:
    code, masked = c.holder
    hashed = issuance.holder_hash(ctx, definition.holder_code_type, code)
    face_public, face_secret, data_key_id = privacy.seal_face(ctx, db, definition, c.face, c.identifier, using=sealer)
    _key, holder_cipher = privacy.seal_holder(ctx, db, code, c.identifier, using=sealer)
    return {
        "identifier": c.identifier,
        "type_code": definition.code,
        "issuer_code": issuer_code,
        "serial": c.serial,
        "version": 1,
        "holder_type": definition.holder_code_type,
        "holder_hash": hashed,
        "holder_masked": masked,
        "holder_cipher": holder_cipher,
        "holder_name": c.holder_name[:200],
        "state": lifecycle.VALID,
        "state_reason": "",
        "state_changed_at": now,
        "valid_from": c.valid_from,
        "valid_until": c.valid_until,
        "issued_at": now,
        "issued_by": actor[:200],
        "face_public": face_public,
        "face_secret": face_secret,
        "data_key_id": data_key_id,
        "predecessor": None,
        "successor": None,
        "requester": actor[:200],
        "request_id": None,
        "document_id": None,
        "pdf_sha256": None,
        "pdf": None,
        "import_id": run_id,
        "source_row": c.line,
        "file_state": PENDING,
        "status_list": None,
        "status_index": None,
    }


# -- sealing the files of imported licences ------------------------------------------------------


@dataclass
class SealResult:
    sealed: int = 0
    failed: int = 0


def seal_pending(
    ctx: LicencesContext, *, limit: int | None = None, batch: int = 20, actor: str = ACTOR, run: str | None = None
) -> SealResult:
    """Render and seal the files of licences waiting for one, ``batch`` at a time, until none is left (or ``limit``).

    ``run``: only the licences of that import run (its id).

    Several workers may run this at once: a worker claims rows by moving them from
    *pending* to *sealing* in one UPDATE, with a claim that runs out after
    :data:`SEAL_LEASE`, and seals only the rows that UPDATE returned, so no file is
    sealed twice while its worker lives. A file that fails goes back to *pending*; a
    file whose worker died (its claim ran out) is claimed again by the next run.
    """
    done = SealResult()
    table = Licence.__table__
    while limit is None or done.sealed + done.failed < limit:
        size = batch if limit is None else min(batch, limit - done.sealed - done.failed)
        now = utc_now()
        claimable = or_(table.c.file_state == PENDING, and_(table.c.file_state == SEALING, table.c.file_claimed_until < now))
        if run is not None:
            claimable = and_(claimable, table.c.import_id == run)
        with ctx.sessions() as db, db.begin():
            wanted = list(db.scalars(select(table.c.identifier).where(table.c.file_state.in_((PENDING, SEALING)), claimable).limit(size)))
            if not wanted:
                break
            claimed = list(
                db.scalars(
                    update(table)
                    .where(table.c.identifier.in_(wanted), claimable)
                    .values(file_state=SEALING, file_claimed_until=now + SEAL_LEASE)
                    .returning(table.c.identifier)
                )
            )
        for identifier in claimed:
            try:
                _seal_one(ctx, identifier, actor)
                done.sealed += 1
            except Exception:
                log.exception("licence %s: sealing its file failed; it goes back to the queue", identifier)
                done.failed += 1
                with ctx.sessions() as db, db.begin():
                    db.execute(_set_state(identifier, SEALING, PENDING))
                if done.failed >= batch and not done.sealed:
                    return done  # sealing fails for everything (HSM down?): try again on the next run
    return done


def _set_state(identifier: str, old: str, new: str, **values):
    table = Licence.__table__
    return (
        update(table)
        .where(table.c.identifier == identifier, table.c.file_state == old)
        .values(file_state=new, file_claimed_until=None, **values)
    )


def _seal_one(ctx: LicencesContext, identifier: str, actor: str) -> None:
    with ctx.sessions() as db:
        licence = db.get(Licence, identifier)
        definition = catalogue.get(db, licence.type_code)
        issuer = issuers.get(db, licence.issuer_code)
        seal_name = issuers.seal_name_for(db, issuer)
        face = privacy.open_face(ctx, db, licence, definition)
        entry = (licence.status_list, licence.status_index) if licence.status_list is not None else None
        facts = (licence.holder_name, licence.holder_masked, licence.valid_from, licence.valid_until, licence.version)
    holder_name, masked, valid_from, valid_until, version = facts
    pdf, document_id = issuance.render_and_seal(
        ctx,
        definition,
        issuer,
        seal_name,
        identifier=identifier,
        face=face,
        holder_name=holder_name,
        holder_masked=masked,
        valid_from=valid_from,
        valid_until=valid_until,
        version=version,
        actor=actor,
        issued_on=valid_from,
        status_entry=entry,  # the file's QR code names the licence's status-list entry, as an issued one does
    )
    with ctx.sessions() as db, db.begin():
        db.execute(_set_state(identifier, SEALING, SEALED, pdf=pdf, pdf_sha256=hashlib.sha256(pdf).hexdigest(), document_id=document_id))


def reclaim(ctx: LicencesContext) -> int:
    """Put licences left *sealing* by a worker that died back in the queue. Only while no worker runs."""
    with ctx.sessions() as db, db.begin():
        table = Licence.__table__
        return db.execute(update(table).where(table.c.file_state == SEALING).values(file_state=PENDING, file_claimed_until=None)).rowcount


def pending_count(db: Session, *, run: str | None = None) -> int:
    """Files still to be sealed (of one import run, with ``run``)."""
    from sqlalchemy import func

    query = select(func.count()).select_from(Licence).where(Licence.file_state.in_((PENDING, SEALING)))
    if run is not None:
        query = query.where(Licence.import_id == run)
    return db.scalar(query) or 0
