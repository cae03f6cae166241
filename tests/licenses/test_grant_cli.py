"""``hallmark licences grant add/list/revoke`` in process (CliRunner), and bad grants as a message, not a traceback."""

from __future__ import annotations

import json

import pytest

from licenses import catalogue, demo
from tests.conftest import initialised_copy, run_hallmark

DRIVING = demo.DRIVING_LICENCE


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    instance = initialised_copy(tmp_path_factory.mktemp("licences-grants") / "instance")
    result = run_hallmark(instance, "licences", "type", "add", str(catalogue.DEMO_TYPES / "driving-licence.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    return instance


def ok(instance, *args) -> str:
    result = run_hallmark(instance, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_add_list_and_revoke_a_standing_grant(instance):
    added = json.loads(
        ok(
            instance,
            "licences",
            "grant",
            "add",
            "road-approval",
            DRIVING,
            "--mode",
            "read",
            "--matter",
            "JT-1",
            "--matter",
            "JT-2",
            "--json",
        )
    )
    assert (added["client_id"], added["type"], added["mode"], added["matters"]) == ("road-approval", DRIVING, "read", ["JT-1", "JT-2"])
    again = ok(instance, "licences", "grant", "add", "road-approval", DRIVING, "--mode", "read", "--matter", "JT-2", "--matter", "JT-1")
    assert again.startswith("present") and f"#{added['id']}" in again
    anyone = ok(instance, "licences", "grant", "add", "counter-app", DRIVING)  # compare, any matter by default
    assert "compare" in anyone and "matters *" in anyone
    listed = ok(instance, "licences", "grant", "list")
    assert "road-approval" in listed and "counter-app" in listed and "JT-1, JT-2" in listed
    assert ok(instance, "licences", "grant", "revoke", str(added["id"])).startswith("revoked")
    assert "road-approval" not in ok(instance, "licences", "grant", "list")
    everything = json.loads(ok(instance, "licences", "grant", "list", "--all", "--json"))
    assert [g["revoked_at"] is not None for g in everything if g["client_id"] == "road-approval"] == [True]
    assert "audit trail intact" in ok(instance, "audit", "verify")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("add", "road-approval", DRIVING, "--mode", "write"), "mode must be one of"),
        (("add", "road-approval", "11100000000013952E999"), "no licence type"),
        (("add", "road-approval", DRIVING, "--mode", "issue", "--matter", "JT-1"), "not for matters"),
        (("add", "road-approval", DRIVING, "--matter", "事" * 101), "at most 100"),
        (("revoke", "99999"), "no grant #99999"),
    ],
)
def test_bad_grants_are_a_clear_message(instance, args, words):
    result = run_hallmark(instance, "licences", "grant", *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert words in result.stdout + result.stderr
