"""hsm.module.Gate: operations share a module, a restart has it to itself (see test_hsm_recovery for the crash it prevents)."""

from __future__ import annotations

import threading
import time

import pytest

from hsm.module import Gate


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _restart_pending(gate: Gate) -> bool:
    return gate._closing  # the restart has announced itself and waits for the threads inside


def _started(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_restart_waits_for_the_operation_inside_and_holds_new_ones_back():
    gate = Gate()
    events: list[str] = []
    inside, release, restarting = threading.Event(), threading.Event(), threading.Event()

    def operation():
        with gate:
            events.append("operation in")
            inside.set()
            release.wait(10)
            events.append("operation out")

    def restart():
        restarting.set()
        with gate.exclusive():
            events.append("restart")
            time.sleep(0.05)  # an operation arriving now must wait until this is done
            events.append("restart done")

    def late_operation():
        with gate:
            events.append("late operation")

    first = _started(operation)
    assert inside.wait(10)
    restarter = _started(restart)
    assert restarting.wait(10)
    _until(lambda: _restart_pending(gate))
    time.sleep(0.05)
    assert "restart" not in events  # still waiting for the operation inside
    late = _started(late_operation)
    time.sleep(0.05)
    assert "late operation" not in events  # held back: a restart is waiting
    release.set()
    for thread in (first, restarter, late):
        thread.join(10)
    assert events == ["operation in", "operation out", "restart", "restart done", "late operation"]


def test_entering_again_on_the_same_thread_never_waits_for_a_pending_restart():
    gate = Gate()
    nested_done, restart_done = threading.Event(), threading.Event()
    inside = threading.Event()
    go_on = threading.Event()

    def operation():
        with gate:
            inside.set()
            go_on.wait(10)  # a restart is waiting by now
            with gate:  # a nested use of the module (a retry inside an operation)
                nested_done.set()

    def restart():
        with gate.exclusive():
            restart_done.set()

    worker = _started(operation)
    assert inside.wait(10)
    restarter = _started(restart)
    _until(lambda: _restart_pending(gate))
    go_on.set()
    assert nested_done.wait(5), "the nested entry waited for the restart, which waited for it"
    worker.join(10)
    restarter.join(10)
    assert restart_done.is_set()


def test_a_thread_inside_cannot_restart_the_module():
    gate = Gate()
    with gate, pytest.raises(RuntimeError, match="cannot reinitialise"), gate.exclusive():
        pass
    with gate.exclusive():  # outside again: allowed
        pass
