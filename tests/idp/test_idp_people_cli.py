"""``hallmark idp account|registry|verify-at-counter|matter`` as an operator meets them, on a fresh instance."""

from __future__ import annotations

import csv
import re

import pytest

from tests.conftest import initialised_copy, run_hallmark


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    path = tmp_path_factory.mktemp("people-cli")
    initialised_copy(path)
    return path


def ok(instance, *args, input=None):
    result = run_hallmark(instance, *args, input=input)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _run_with_input(instance, args, text):
    return run_hallmark(instance, *args, input=text)


FULL_ID = re.compile(r"\d{17}[\dX]")


def test_accounts_demo_registry_and_counter(instance, tmp_path):
    generated = ok(instance, "idp", "account", "add", "--username", "clerk01", "--role", "clerk")
    assert "created" in generated.stdout and "roles: clerk" in generated.stdout
    password = re.search(r"password \(shown only now\): (\S+)", generated.stdout).group(1)
    assert len(password) == 16
    given = ok(instance, "idp", "account", "add", "--mobile", "13800138000", "--password-stdin", input="Resident pass 42\n")
    assert "138****8000" in given.stdout and "password" not in given.stdout.split("created")[1]
    weak = _run_with_input(instance, ("idp", "account", "add", "--username", "weakling", "--password-stdin"), "short\n")
    assert weak.returncode == 1 and "at least 10 characters" in weak.stderr and "Traceback" not in weak.stderr
    taken = run_hallmark(instance, "idp", "account", "add", "--username", "clerk01")
    assert taken.returncode == 1 and "username is taken" in taken.stderr

    out = tmp_path / "people.csv"
    demo = ok(instance, "idp", "registry", "demo", "--count", "12", "--out", str(out))
    assert "12 demo people" in demo.stdout and str(out) in demo.stdout
    assert not FULL_ID.search(demo.stdout), "the demo command must print masked IDs only"
    assert re.search(r"\d{3}\*{11}[\dX]{4}", demo.stdout)
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and all(FULL_ID.fullmatch(r["resident_id"]) for r in rows)
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    again = ok(instance, "idp", "registry", "demo", "--count", "12", "--out", str(out))
    assert "(0 new)" in again.stdout

    person = rows[0]
    counter = ok(
        instance,
        "idp",
        "verify-at-counter",
        "--account",
        "13800138000",
        "--resident-id",
        person["resident_id"],
        "--name",
        person["name"],
        "--clerk",
        "clerk01",
        "--location",
        "市民中心 3号窗口",
        "--document",
        "resident-card",
    )
    assert "verified at the counter" in counter.stdout and "市民中心 3号窗口" in counter.stdout
    assert person["resident_id"] not in counter.stdout
    not_clerk = run_hallmark(
        instance,
        "idp",
        "verify-at-counter",
        "--account",
        "clerk01",
        "--resident-id",
        rows[1]["resident_id"],
        "--name",
        rows[1]["name"],
        "--clerk",
        "13800138000",
        "--location",
        "x",
        "--document",
        "resident-card",
    )
    assert not_clerk.returncode == 1 and "not an active counter clerk" in not_clerk.stderr
    ok(instance, "idp", "account", "add", "--username", "second")
    bound = _run_with_input(
        instance,
        (
            "idp",
            "verify-at-counter",
            "--account",
            "second",
            "--resident-id",
            "-",
            "--name",
            person["name"],
            "--clerk",
            "clerk01",
            "--location",
            "x",
            "--document",
            "resident-card",
        ),
        person["resident_id"] + "\n",
    )
    assert bound.returncode == 1 and "already bound to another account" in bound.stderr
    verify = ok(instance, "audit", "verify")
    assert "intact" in verify.stdout


def test_registry_import_reports_bad_rows(instance, tmp_path):
    from idp.people import realname

    people = realname.demo_people(60)[50:]
    good, other = people[0], people[1]
    bad_check = other.resident_id[:-1] + ("1" if other.resident_id[-1] != "1" else "2")
    path = tmp_path / "registry.csv"
    path.write_text(
        "name,resident_id,status\n"
        f"{good.name},{good.resident_id}\n"
        f"{other.name},{bad_check}\n"
        f"{people[2].name},{people[2].resident_id},unknown\n"
        f"{people[3].name},{people[3].resident_id},normal\n",
        encoding="utf-8",
    )
    result = run_hallmark(instance, "idp", "registry", "import", str(path))
    assert result.returncode == 2, result.stderr
    assert f"registry.csv:3: resident ID {bad_check[:3]}" in result.stderr and "check character" in result.stderr
    assert "registry.csv:4:" in result.stderr and "status must be one of" in result.stderr
    assert bad_check not in result.stderr + result.stdout
    assert "4 rows: 2 added, 0 updated, 0 unchanged, 2 rejected" in result.stdout
    rerun = run_hallmark(instance, "idp", "registry", "import", str(path))
    assert "0 added, 0 updated, 2 unchanged" in rerun.stdout

    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(f"{people[4].name},{people[4].resident_id}\n".encode("gb18030"))
    wrong = run_hallmark(instance, "idp", "registry", "import", str(gbk))
    assert wrong.returncode == 1 and "--encoding gb18030" in wrong.stderr
    assert "1 added" in ok(instance, "idp", "registry", "import", str(gbk), "--encoding", "gb18030").stdout


def test_matters(instance):
    empty = ok(instance, "idp", "matter", "list")
    assert "catalogue is empty" in empty.stdout
    demo = ok(instance, "idp", "matter", "demo")
    assert "marriage-registration" in demo.stdout and "婚姻登记" in demo.stdout
    changed = ok(instance, "idp", "matter", "set", "policy-enquiry", "--level", "2")
    assert "政策咨询" in changed.stdout and "level 2" in changed.stdout
    new = ok(
        instance, "idp", "matter", "set", "business-licence", "--level", "2", "--name", "营业执照办理", "--department", "市场监督管理局"
    )
    assert "business-licence" in new.stdout
    listed = ok(instance, "idp", "matter", "list").stdout
    assert re.search(r"marriage-registration\s+level 3\s+婚姻登记", listed)
    assert re.search(r"policy-enquiry\s+level 2", listed)
    nameless = run_hallmark(instance, "idp", "matter", "set", "unnamed", "--level", "1")
    assert nameless.returncode == 1 and "needs a name" in nameless.stderr
    too_high = run_hallmark(instance, "idp", "matter", "set", "x", "--level", "4", "--name", "x")
    assert too_high.returncode == 2 and "4 is not in the range 1<=x<=3" in too_high.stderr
