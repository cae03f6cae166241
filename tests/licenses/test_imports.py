"""Bulk import of legacy licences (``hallmark licences import``) and sealing their files later (``seal-pending``)."""

from __future__ import annotations

import csv
import json
import secrets

import pytest
from sqlalchemy import select

from licenses import catalogue, demo, imports, library, verification
from licenses.models import ImportRun, Licence
from tests.conftest import run_hallmark
from tests.licenses.conftest import ACTOR, person_code

TYPE = demo.DRIVING_LICENCE
ISSUER = demo.issuer_for(TYPE).code
OTHER_ISSUER = next(i.code for i in demo.ISSUERS if i.code != ISSUER)
COLUMNS = [
    "证照编号",
    "持证主体代码",
    "有效期起始日期",
    "有效期截止日期",
    "证号",
    "姓名",
    "性别",
    "国籍",
    "住址",
    "出生日期",
    "初次领证日期",
    "准驾车型",
]
FIELDS = ["licence_number", "name", "sex", "nationality", "address", "birth_date", "first_issued_on", "vehicle_class"]


def legacy_rows(prefix: str, count: int, first_holder: int) -> list[dict]:
    """Good rows under the Chinese column titles a local spreadsheet uses."""
    rows = []
    for n in range(count):
        holder = person_code(first_holder + n)
        face = demo.sample_face(TYPE, holder_code=holder, holder_name="林志明", seed=str(n))
        rows.append(
            {
                "证照编号": f"{prefix}{n:05d}",
                "持证主体代码": holder,
                "有效期起始日期": "2019/3/5",
                "有效期截止日期": "2025-03-04" if n % 2 else "",
                **{title: face[name] for title, name in zip(COLUMNS[4:], FIELDS, strict=True)},
            }
        )
    return rows


def plant_bad_rows(rows: list[dict]) -> dict[int, str]:
    """Five bad rows put among the good ones; returns {index in the list: what the report must say}."""
    bad_check = dict(rows[1], 证照编号=rows[1]["证照编号"] + "B")
    code = bad_check["持证主体代码"]
    bad_check["持证主体代码"] = code[:17] + ("0" if code[17] != "0" else "1")
    missing = {k: v for k, v in rows[2].items() if k != "准驾车型"}
    missing["证照编号"] += "M"
    bad_date = dict(rows[3], 证照编号=rows[3]["证照编号"] + "D", 有效期起始日期="2019-13-45")
    schema = dict(rows[4], 证照编号=rows[4]["证照编号"] + "S", 性别="未知")
    duplicate = dict(rows[5])
    planted = [
        (bad_check, "check"),
        (missing, "missing column"),
        (bad_date, "not a date"),
        (schema, "sex"),
        (duplicate, "duplicate of line"),
    ]
    expected = {}
    for offset, (row, reason) in enumerate(planted):
        at = 7 + offset * 2
        rows.insert(at, row)
        expected[at] = reason
    return expected


def write_csv(path, rows: list[dict], encoding: str) -> None:
    with path.open("w", encoding=encoding, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for row in rows:
            values = [row.get(c, "") for c in COLUMNS]
            if "准驾车型" not in row:  # a short row: its last column is missing altogether
                values = values[:-1]
            writer.writerow(values)


def write_jsonl(path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def imported(world, run_id: str) -> list[tuple]:
    """What a run left in the library, independent of the issuer: serial, row, holder, face, validity, file state."""
    with world.ctx.sessions() as db:
        rows = db.execute(
            select(
                Licence.serial,
                Licence.source_row,
                Licence.holder_hash,
                Licence.face_public,
                Licence.valid_from,
                Licence.valid_until,
                Licence.file_state,
            ).where(Licence.import_id == run_id)
        )
        return sorted(tuple(r) for r in rows)


def report_lines(path) -> dict[int, str]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["line", "reason", "row"]
        return {int(line): reason + " " + row for line, reason, row in reader}


def ok(instance, *args):
    result = run_hallmark(instance, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_gbk_csv_with_bad_rows_imports_its_good_rows_and_reports_the_bad_ones(licence_world, tmp_path):
    prefix = "CSV" + secrets.token_hex(4).upper()
    rows = legacy_rows(prefix, 20, 910_000)
    expected = plant_bad_rows(rows)
    source = tmp_path / "驾驶证台账.csv"
    write_csv(source, rows, "gbk")
    report = tmp_path / "errors.csv"
    args = ("licences", "import", str(source), "--type", TYPE, "--issuer", ISSUER, "--errors", str(report), "--batch", "7", "--json")

    first = json.loads(ok(licence_world.instance, *args).stdout)
    assert first["encoding"] == "GB18030"  # detected: GBK is read as its superset
    assert (first["rows_read"], first["rows_added"], first["rows_rejected"], first["rows_existing"]) == (25, 20, 5, 0)

    # Each bad row by its line (the header is line 1) and why; no full resident ID anywhere in the report.
    lines = report_lines(report)
    assert sorted(lines) == sorted(at + 2 for at in expected)
    for at, reason in expected.items():
        assert reason in lines[at + 2], lines[at + 2]
    text = report.read_text(encoding="utf-8")
    assert not any(row["持证主体代码"] in text for row in rows)

    # The good rows are licences at once, before their files are sealed.
    with licence_world.ctx.sessions() as db:
        some = db.scalars(select(Licence).where(Licence.import_id == first["run_id"]).order_by(Licence.source_row)).first()
        body = library.describe(licence_world.ctx, db, library.by_identifier(db, some.identifier), face="full")
        assert body["status"]["state"] in ("valid", "expired") and body["file"]["sealed"] is False
        assert body["face"]["vehicle_class"] and body["status"]["valid_from"] == "2019-03-05"
        holder = rows[0]["持证主体代码"]
        assert [lic.serial for lic in library.by_holder(licence_world.ctx, db, "111", holder)] == [f"{prefix}00000"]
        entries = db.execute(select(Licence.status_list, Licence.status_index).where(Licence.import_id == first["run_id"])).all()
        assert len(set(entries)) == 20 and all(number is not None and index is not None for number, index in entries)
        run = db.get(ImportRun, first["run_id"])
        assert (run.state, run.source_name, run.imported_by.startswith("cli:"), run.resume_after) == ("finished", source.name, True, 26)

    # The same file again adds nothing.
    again = json.loads(ok(licence_world.instance, *args).stdout)
    assert again["run_id"] == first["run_id"]
    assert (again["rows_added"], again["rows_existing"], again["rows_rejected"]) == (0, 20, 5)
    assert len(imported(licence_world, first["run_id"])) == 20


def test_a_killed_run_resumes_to_exactly_what_an_uninterrupted_run_writes(licence_world, tmp_path):
    prefix = "JSL" + secrets.token_hex(4).upper()
    rows = legacy_rows(prefix, 30, 920_000)
    expected = plant_bad_rows(rows)
    source = tmp_path / "legacy.jsonl"
    write_jsonl(source, rows)
    ctx = licence_world.ctx

    def run(issuer, report, **kwargs):
        return imports.import_file(ctx, source, type_code=TYPE, issuer_code=issuer, actor=ACTOR, error_report=report, batch=4, **kwargs)

    whole = run(ISSUER, tmp_path / "whole.csv")
    assert (whole.rows_added, whole.rows_rejected) == (30, 5)
    # JSONL lines count from 1 (no header)
    assert sorted(report_lines(tmp_path / "whole.csv")) == sorted(at + 1 for at in expected)

    with pytest.raises(imports.ImportStopped):  # a process killed after its third batch committed
        run(OTHER_ISSUER, tmp_path / "resumed.csv", stop_after_batches=3)
    stopped_id = imports.run_id_for(whole.source_sha256, TYPE, OTHER_ISSUER)
    with ctx.sessions() as db:
        stopped = db.get(ImportRun, stopped_id)
        assert (stopped.state, stopped.resume_after) == ("running", 12)
    assert len(imported(licence_world, stopped_id)) < 30

    resumed = run(OTHER_ISSUER, tmp_path / "resumed.csv")
    assert resumed.resumed_after == 12
    assert (resumed.rows_read, resumed.rows_added, resumed.rows_rejected) == (35, 30, 5)
    assert imported(licence_world, stopped_id) == imported(licence_world, whole.run_id)
    assert report_lines(tmp_path / "resumed.csv") == report_lines(tmp_path / "whole.csv")


def test_seal_pending_seals_the_files_and_they_validate(licence_world, tmp_path):
    prefix = "SEAL" + secrets.token_hex(3).upper()
    rows = legacy_rows(prefix, 3, 930_000)
    source = tmp_path / "few.csv"
    write_csv(source, rows, "utf-8")
    result = imports.import_file(licence_world.ctx, source, type_code=TYPE, issuer_code=ISSUER, actor=ACTOR)
    assert result.rows_added == 3

    # This run's files only: the licence world is shared, and other tests leave files of their own queued.
    sealed = run_hallmark(licence_world.instance, "licences", "seal-pending", "--run", result.run_id)
    assert sealed.returncode == 0, sealed.stdout + sealed.stderr
    assert "0 waiting" in sealed.stdout
    with licence_world.ctx.sessions() as db:
        files = db.execute(
            select(Licence.identifier, Licence.file_state, Licence.document_id, Licence.pdf).where(Licence.import_id == result.run_id)
        ).all()
    assert {state for _i, state, _d, _p in files} == {"sealed"}
    for identifier, _state, document_id, pdf in files:
        assert pdf is not None and document_id
        found = verification.verify_file(licence_world.ctx, pdf)  # signing's validator, outside any open transaction
        assert found["verdict"].startswith("genuine"), found
        assert found["licence"]["identifier"] == identifier
    # nothing left to seal: a second worker finds nothing and seals nothing twice
    assert imports.seal_pending(licence_world.ctx, run=result.run_id).sealed == 0


def test_a_file_in_an_unexpected_encoding_or_without_a_needed_column_is_refused_whole(licence_world, tmp_path):
    rows = legacy_rows("ENC" + secrets.token_hex(4).upper(), 2, 940_000)
    utf16 = tmp_path / "utf16.csv"
    write_csv(utf16, rows, "utf-16")
    refused = run_hallmark(licence_world.instance, "licences", "import", str(utf16), "--type", TYPE, "--issuer", ISSUER)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "unexpected encoding" in refused.stderr and "--encoding" in refused.stderr

    gbk = tmp_path / "gbk.csv"
    write_csv(gbk, rows, "gbk")
    stated = run_hallmark(licence_world.instance, "licences", "import", str(gbk), "--type", TYPE, "--issuer", ISSUER, "--encoding", "utf-8")
    assert stated.returncode == 1 and "not valid UTF-8" in stated.stderr

    headless = tmp_path / "no-serial.csv"
    headless.write_text("持证主体代码,姓名\n" + rows[0]["持证主体代码"] + ",林志明\n", encoding="utf-8")
    missing = run_hallmark(licence_world.instance, "licences", "import", str(headless), "--type", TYPE, "--issuer", ISSUER)
    assert missing.returncode == 1 and "no column for: serial" in missing.stderr

    with licence_world.ctx.sessions() as db:
        digests = [imports.scan(p, "csv", None if p != gbk else "gbk")[0] for p in (gbk,)]
        assert db.scalars(select(ImportRun).where(ImportRun.source_sha256.in_(digests))).first() is None


def test_a_mapping_file_names_local_columns(licence_world, tmp_path):
    prefix = "MAP" + secrets.token_hex(4).upper()
    rows = legacy_rows(prefix, 3, 950_000)
    local = [
        {"编号": r["证照编号"], "身份证号": r["持证主体代码"], "发证日期": r["有效期起始日期"], "驾照姓名": r["姓名"], **r} for r in rows
    ]
    for row in local:
        del row["证照编号"], row["持证主体代码"], row["有效期起始日期"], row["姓名"]
    source = tmp_path / "local.jsonl"
    write_jsonl(source, local)
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        json.dumps({"face": {"驾照姓名": "name"}, "holder": "身份证号", "serial": "编号", "valid_from": "发证日期"}, ensure_ascii=False),
        encoding="utf-8",
    )
    result = imports.import_file(licence_world.ctx, source, type_code=TYPE, issuer_code=ISSUER, actor=ACTOR, mapping_path=mapping)
    assert (result.rows_added, result.rows_rejected) == (3, 0)

    bad = tmp_path / "bad-mapping.json"
    bad.write_text(json.dumps({"face": {"驾照姓名": "nickname"}}), encoding="utf-8")
    with pytest.raises(imports.ImportFailed, match="not a field"):
        imports.read_mapping(bad, _view(licence_world))


def _view(world):
    with world.ctx.sessions() as db:
        return catalogue.get(db, TYPE)


def test_an_import_process_killed_with_sigkill_resumes_without_duplicates(licence_world, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, hallmark_env

    prefix = "KIL" + secrets.token_hex(4).upper()
    # Enough rows that the import cannot finish between two looks at its progress on a loaded machine (1,500 did,
    # once the import got faster).
    rows = legacy_rows(prefix, 6000, 1_200_000)
    plant_bad_rows(rows)
    source = tmp_path / "big.csv"
    write_csv(source, rows, "gb18030")
    digest = imports.scan(source, "csv", None)[0]
    killed_id = imports.run_id_for(digest, TYPE, OTHER_ISSUER)
    args = [
        "licences",
        "import",
        str(source),
        "--type",
        TYPE,
        "--issuer",
        OTHER_ISSUER,
        "--batch",
        "10",
        "--errors",
        str(tmp_path / "k.csv"),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "hallmark.cli", *args], env=hallmark_env(licence_world.instance), cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            with licence_world.ctx.sessions() as db:
                run = db.get(ImportRun, killed_id)
                if run is not None and run.resume_after >= 200:
                    break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    with licence_world.ctx.sessions() as db:
        run = db.get(ImportRun, killed_id)
        assert run is not None and run.state == "running" and 200 <= run.resume_after < 6005, "the import was not killed halfway"
    resumed = json.loads(ok(licence_world.instance, *args, "--json").stdout)
    assert resumed["resumed_after"] > 0 and (resumed["rows_added"], resumed["rows_rejected"]) == (6000, 5)

    whole = imports.import_file(licence_world.ctx, source, type_code=TYPE, issuer_code=ISSUER, actor=ACTOR, error_report=tmp_path / "w.csv")
    assert imported(licence_world, killed_id) == imported(licence_world, whole.run_id)
    assert report_lines(tmp_path / "k.csv") == report_lines(tmp_path / "w.csv")


def test_without_a_terminal_the_import_logs_plain_progress_lines(licence_world, tmp_path):
    rows = legacy_rows("LOG" + secrets.token_hex(4).upper(), 12, 970_000)
    source = tmp_path / "log.csv"
    write_csv(source, rows, "utf-8")
    done = ok(
        licence_world.instance, "licences", "import", str(source), "--type", TYPE, "--issuer", ISSUER, "--batch", "5", "--log-every", "5"
    )
    assert done.stderr.count("import: ") >= 2 and "rows/s" in done.stderr and "\r" not in done.stderr
    assert "12 added" in done.stdout and "seal-pending" in done.stdout


def write_xlsx(path, rows: list[dict]) -> None:
    """A minimal XLSX workbook (one sheet, inline strings) written with zipfile: no spreadsheet writer is installed."""
    import zipfile
    from xml.sax.saxutils import escape

    def cells(values):
        return "".join(f'<c t="inlineStr"><is><t>{escape(str(v))}</t></is></c>' for v in values)

    lines = [cells(COLUMNS)] + [cells([row.get(c, "") for c in COLUMNS if c in row or c != "准驾车型"]) for row in rows]
    sheet = "".join(f'<row r="{n}">{line}</row>' for n, line in enumerate(lines, start=1))
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    with zipfile.ZipFile(path, "w") as book:
        book.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            "</Types>",
        )
        book.writestr(
            "_rels/.rels",
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        )
        book.writestr(
            "xl/workbook.xml",
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{main}" xmlns:r="{rel}">'
            '<sheets><sheet name="台账" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        book.writestr(
            "xl/_rels/workbook.xml.rels",
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
        )
        book.writestr(
            "xl/worksheets/sheet1.xml",
            f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{main}"><sheetData>{sheet}</sheetData></worksheet>',
        )


def test_an_xlsx_sheet_with_bad_rows_imports_its_good_rows(licence_world, tmp_path):
    pytest.importorskip("python_calamine")
    prefix = "XLS" + secrets.token_hex(4).upper()
    rows = legacy_rows(prefix, 12, 980_000)
    expected = plant_bad_rows(rows)
    sheet = tmp_path / "台账.xlsx"
    write_xlsx(sheet, rows)
    args = (
        "licences",
        "import",
        str(sheet),
        "--type",
        TYPE,
        "--issuer",
        ISSUER,
        "--errors",
        str(tmp_path / "x.csv"),
        "--batch",
        "4",
        "--json",
    )
    first = json.loads(ok(licence_world.instance, *args).stdout)
    assert (first["rows_read"], first["rows_added"], first["rows_rejected"]) == (17, 12, 5)
    lines = report_lines(tmp_path / "x.csv")
    assert sorted(lines) == sorted(at + 2 for at in expected)
    for at, reason in expected.items():
        # a sheet's rows are rectangular: the row whose last cell is missing has it empty, so the field is "required"
        reason = "vehicle_class: is required" if reason == "missing column" else reason
        assert reason in lines[at + 2], lines[at + 2]
    again = json.loads(ok(licence_world.instance, *args).stdout)
    assert (again["rows_added"], again["rows_existing"]) == (0, 12)
