"""Background upkeep of revocation data: CRLs before they run out, OCSP responses before nextUpdate.

Every worker process of every node may run it. Both jobs are idempotent and
decide under a lock what is still due (``crl.publish_due`` re-checks under the
authority's row lock; ``ocsp.refresh_due`` takes rows with SKIP LOCKED), so
several schedulers share the work instead of repeating it. The first run waits a
random part of the interval so workers started together do not run in step.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field

from ca import crl, ocsp
from ca.context import CAContext

log = logging.getLogger("hallmark.ca.schedule")


@dataclass
class Schedule:
    """A running scheduler; :meth:`stop` ends its thread after the current run."""

    interval_seconds: float
    runs: int = 0
    failures: int = 0  # runs in which a job failed (logged)
    thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def stop(self, timeout: float | None = 10) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout)


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
    """Start the daemon thread that runs :func:`run_once` every ``interval_seconds``.

    The first run comes after ``first_delay`` (default: a random part of the interval).
    """
    if interval_seconds <= 0:
        raise ValueError("interval_seconds must be positive")
    schedule = Schedule(interval_seconds)
    delay = random.uniform(0, interval_seconds) if first_delay is None else first_delay
    schedule.thread = threading.Thread(target=_loop, args=(ctx, schedule, delay), name="hallmark-ca-schedule", daemon=True)
    schedule.thread.start()
    return schedule


def _loop(ctx: CAContext, schedule: Schedule, delay: float) -> None:
    while not schedule._stop.wait(delay):
        published, refreshed = run_once(ctx)
        schedule.runs += 1
        if published < 0 or refreshed < 0:
            schedule.failures += 1
        delay = schedule.interval_seconds
