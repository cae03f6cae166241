"""Sealing the files of imported licences with several workers: a claim on a file runs out, so a worker that died
leaves no file stuck in *sealing*, and a live worker's claim is left alone."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select, update

from core.db import utc_now
from licenses import imports
from licenses.models import Licence
from tests.licenses.conftest import ACTOR
from tests.licenses.test_imports import ISSUER, TYPE, legacy_rows, write_csv


def test_a_file_left_sealing_by_a_dead_worker_is_sealed_once_its_claim_runs_out(licence_world, tmp_path):
    ctx = licence_world.ctx
    source = tmp_path / "claims.csv"
    write_csv(source, legacy_rows("CLM" + secrets.token_hex(3).upper(), 2, 970_000), "utf-8")
    result = imports.import_file(ctx, source, type_code=TYPE, issuer_code=ISSUER, actor=ACTOR)
    with ctx.sessions() as db:
        dead_workers, live_workers = db.scalars(select(Licence.identifier).where(Licence.import_id == result.run_id)).all()
    table = Licence.__table__
    with ctx.sessions() as db, db.begin():  # two claims as workers leave them: one ran out (its worker died), one still runs
        db.execute(
            update(table)
            .where(table.c.identifier == dead_workers)
            .values(file_state="sealing", file_claimed_until=utc_now() - timedelta(seconds=1))
        )
        db.execute(
            update(table)
            .where(table.c.identifier == live_workers)
            .values(file_state="sealing", file_claimed_until=utc_now() + imports.SEAL_LEASE - timedelta(minutes=1))
        )

    assert imports.seal_pending(ctx, run=result.run_id).sealed == 1  # this run's only (the licence world is shared)
    with ctx.sessions() as db:
        states = dict(db.execute(select(Licence.identifier, Licence.file_state).where(Licence.import_id == result.run_id)).all())
        claims = dict(db.execute(select(Licence.identifier, Licence.file_claimed_until).where(Licence.import_id == result.run_id)).all())
    assert states == {dead_workers: "sealed", live_workers: "sealing"}
    assert claims[dead_workers] is None and claims[live_workers] is not None

    # Staff who know no worker runs need not wait for the claim: --reclaim frees it now.
    assert imports.reclaim(ctx) >= 1
    assert imports.seal_pending(ctx, run=result.run_id).sealed == 1
    with ctx.sessions() as db:
        assert db.get(Licence, live_workers).file_state == "sealed"
