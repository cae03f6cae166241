"""``hallmark licences ...`` in process (CliRunner): types, issuers, issuing, lifecycle, files."""

from __future__ import annotations

import json

import pytest

from licenses import catalogue, demo
from tests.conftest import initialised_copy, run_hallmark
from tests.licenses.conftest import person_code

ISSUER = demo.issuer_for(demo.DRIVING_LICENCE)


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    instance = initialised_copy(tmp_path_factory.mktemp("licences-cli") / "instance")
    ok(instance, "sign", "seal", "add", "--department", ISSUER.name, "--credit-code", ISSUER.code)
    return instance


def ok(instance, *args):
    result = run_hallmark(instance, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def fails(instance, *args) -> str:
    result = run_hallmark(instance, *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_whole_life_of_a_licence_from_the_command_line(instance, tmp_path):
    assert "licences" in ok(instance, "--help").stdout
    added = ok(instance, "licences", "type", "add", *map(str, sorted(catalogue.DEMO_TYPES.glob("*.json")))).stdout
    assert added.count("added") == 4
    assert ok(instance, "licences", "type", "add", str(catalogue.DEMO_TYPES / "driving-licence.json")).stdout.startswith("present")
    listed = ok(instance, "licences", "type", "list").stdout
    assert "机动车驾驶证" in listed and "营业执照" in listed
    assert json.loads(ok(instance, "licences", "type", "show", demo.DRIVING_LICENCE).stdout)["holder_kind"] == "person"

    ok(instance, "licences", "issuer", "add", ISSUER.code, ISSUER.name, "--seal", ISSUER.name)
    assert ISSUER.name in ok(instance, "licences", "issuer", "list").stdout

    holder = person_code(5150)
    face = demo.sample_face(demo.DRIVING_LICENCE, holder_code=holder, holder_name="孙八")
    (tmp_path / "face.json").write_text(json.dumps(face, ensure_ascii=False), encoding="utf-8")
    issued = json.loads(
        ok(
            instance, "licences", "issue", "--type", demo.DRIVING_LICENCE, "--issuer", ISSUER.code, "--holder", holder,
            "--face", f"@{tmp_path / 'face.json'}", "--request-id", "cli-1", "--json",
        ).stdout
    )  # fmt: skip
    identifier = issued["identifier"]
    assert issued["status"]["state"] == "valid" and issued["holder"]["code"] != holder
    assert issued["face"]["licence_number"] != holder  # sensitive: masked
    shown = ok(instance, "licences", "show", identifier).stdout
    assert "valid" in shown and holder not in shown

    listed = ok(instance, "licences", "list", "--holder", holder, "--json").stdout
    assert [b["identifier"] for b in json.loads(listed)] == [identifier]

    out = tmp_path / "licence.pdf"
    ok(instance, "licences", "file", identifier, str(out))
    assert out.read_bytes().startswith(b"%PDF")

    assert "reason" in fails(instance, "licences", "suspend", identifier).lower()  # --reason is required
    ok(instance, "licences", "suspend", identifier, "--reason", "交通违法记满12分")
    ok(instance, "licences", "resume", identifier)
    renewed = json.loads(ok(instance, "licences", "renew", identifier, "--json").stdout)
    assert renewed["identifier"].split(".")[-2] == "002" and renewed["predecessor"] == identifier
    assert json.loads(ok(instance, "licences", "show", identifier, "--json").stdout)["status"]["state"] == "superseded"
    ok(instance, "licences", "revoke", renewed["identifier"], "--reason", "吊销")
    assert json.loads(ok(instance, "licences", "show", renewed["identifier"], "--json").stdout)["status"]["state"] == "revoked"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("licences", "show", "1.2.156.3005.2.X"), "licence identifier"),
        (("licences", "type", "show", "11100000000013952E999"), "no licence type"),
        (("licences", "issue", "--type", demo.DRIVING_LICENCE, "--issuer", ISSUER.code, "--holder", "1", "--face", "{}"), ""),
        (("licences", "issue", "--type", demo.DRIVING_LICENCE, "--issuer", ISSUER.code, "--holder", "1", "--face", "[1]"), "JSON object"),
        (("licences", "issuer", "add", ISSUER.code, "某局", "--seal", "no-such-seal"), "no active seal"),
    ],
)
def test_bad_input_is_a_clear_message_not_a_traceback(instance, args, words):
    assert words in fails(instance, *args)
