"""The test harness itself: ``hallmark`` run in this process keeps instances apart, as separate processes would."""

from __future__ import annotations

from tests.conftest import initialised_copy, run_hallmark


def test_copies_of_the_initialised_instance_keep_their_own_token_and_database(tmp_path):
    first, second = initialised_copy(tmp_path / "first"), initialised_copy(tmp_path / "second")
    for instance in (first, second):
        conf = (instance / "softhsm" / "softhsm2.conf").read_text()
        assert f"directories.tokendir = {instance / 'softhsm' / 'tokens'}" in conf

    created = run_hallmark(first, "hsm", "create-key", "only-in-first")
    assert created.returncode == 0, created.stderr
    assert "only-in-first" in run_hallmark(first, "hsm", "keys").stdout
    assert "only-in-first" not in run_hallmark(second, "hsm", "keys").stdout
    # The label is still free in the second instance's token.
    again = run_hallmark(second, "hsm", "create-key", "only-in-first")
    assert again.returncode == 0, again.stderr

    upgraded = run_hallmark(second, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert str(second / "hallmark.db") in upgraded.stdout and str(first) not in upgraded.stdout


def test_environment_of_one_run_does_not_reach_the_next(tmp_path):
    instance = initialised_copy(tmp_path / "instance")
    wrong = run_hallmark(instance, "hsm", "status", HALLMARK_TOKEN_LABEL="unplugged")
    assert wrong.returncode == 1 and "no token labelled 'unplugged'" in wrong.stderr
    right = run_hallmark(instance, "hsm", "status")
    assert right.returncode == 0 and "status  ok" in right.stdout, right.stderr
