"""Background upkeep of revocation data: CRLs before they run out, OCSP responses before nextUpdate.

Every worker process of every node may run it. Both jobs are idempotent and
decide under a lock what is still due (``crl.publish_due`` re-checks under the
authority's row lock; ``ocsp.refresh_due`` takes rows with SKIP LOCKED), so
several schedulers share the work instead of repeating it. The first run waits a
random part of the interval so workers started together do not run in step.
"""

from __future__ import annotations

import logging

from ca.context import CAContext
from ca.status import crl, ocsp
from core import periodic

log = logging.getLogger("hallmark.ca.schedule")


Schedule = periodic.Periodic  # what start() returns


def run_once(ctx: CAContext) -> tuple[int, int]:
    """One pass: (CRLs published, OCSP responses re-signed), -1 for a job that failed (and was logged)."""
    published = refreshed = -1
    try:
        published = crl.publish_due(ctx)
    except Exception:
        log.exception("scheduled CRL publication failed; will retry next run")
    try:
        refreshed = ocsp.refresh_due(ctx)
    except Exception:
        log.exception("scheduled OCSP refresh failed; will retry next run")
    if published > 0 or refreshed > 0:
        log.info("published %d CRL(s), re-signed %d OCSP response(s)", max(published, 0), max(refreshed, 0))
    return published, refreshed


def start(ctx: CAContext, interval_seconds: float = 600, *, first_delay: float | None = None) -> Schedule:
    """Run :func:`run_once` every ``interval_seconds`` on a daemon thread (see ``core.periodic``)."""

    def job() -> bool:
        published, refreshed = run_once(ctx)
        return published >= 0 and refreshed >= 0

    return periodic.start("ca-schedule", job, interval_seconds, first_delay=first_delay)
