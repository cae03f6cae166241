"""A job run every few seconds on a daemon thread of each worker, stopped with the app.

Used for upkeep that every worker of every node may run (CRLs and OCSP responses,
logout notices): the jobs themselves decide under database locks what is due, so
running them in several places shares the work instead of repeating it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("hallmark.periodic")


@dataclass
class Periodic:
    """A running job; :meth:`stop` ends its thread after the current run."""

    name: str
    interval_seconds: float
    runs: int = 0
    failures: int = 0  # runs in which the job raised or reported failure (logged)
    thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def stop(self, timeout: float | None = 10) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout)


def start(name: str, job: Callable[[], bool], interval_seconds: float, *, first_delay: float | None = None) -> Periodic:
    """Run ``job`` every ``interval_seconds``; it returns False (or raises) when a run failed.

    The first run comes after ``first_delay`` (default: a random part of the
    interval, so workers started together do not run in step).
    """
    if interval_seconds <= 0:
        raise ValueError("interval_seconds must be positive")
    periodic = Periodic(name, interval_seconds)
    delay = random.uniform(0, interval_seconds) if first_delay is None else first_delay

    def loop() -> None:
        wait = delay
        while not periodic._stop.wait(wait):
            try:
                ok = job()
            except Exception:
                log.exception("%s failed; will retry next run", name)
                ok = False
            periodic.runs += 1
            if not ok:
                periodic.failures += 1
            wait = periodic.interval_seconds

    periodic.thread = threading.Thread(target=loop, name=f"hallmark-{name}", daemon=True)
    periodic.thread.start()
    return periodic
