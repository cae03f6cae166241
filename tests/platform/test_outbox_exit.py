"""A process with outbox deliveries under way still exits at once; the messages stay pending for another worker.

``deliver_soon`` sends on background threads. They were a ThreadPoolExecutor's, which
the interpreter joins at exit after running everything queued, so a worker stopping
while a hall did not answer waited for every queued message's timeouts (10 s each
here) before it could exit: part of why ``hallmark serve`` could hang on SIGTERM.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from core import db as core_db, http, outbox
    from core.models import OutboxMessage

    engine = core_db.make_engine("sqlite:///" + sys.argv[1])
    OutboxMessage.__table__.create(engine)
    sessions = core_db.make_session_factory(engine)
    client = http.session(retries=0)

    def send(message):
        answer = client.post(message.target, data=message.body, headers={"Content-Type": message.content_type})
        if answer.status_code >= 300:
            raise outbox.Failed(f"answered {answer.status_code}")

    outbox.register(sessions, "test.silent", send, soon=True)
    with core_db.transaction(sessions) as db:
        for n in range(3):
            outbox.enqueue(db, kind="test.silent", target=sys.argv[2], body=b"logout", content_type="text/plain")
    time.sleep(0.5)  # the first delivery is under way, waiting for the peer's answer
    print("queued", flush=True)
    """
)


def test_a_process_exits_with_deliveries_under_way(tmp_path):
    database = tmp_path / "outbox.db"
    with socket.socket() as silent:  # takes connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        target = f"http://127.0.0.1:{silent.getsockname()[1]}/logout"
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(database), target], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        with process:
            try:
                assert process.stdout.readline().strip() == "queued", process.stderr.read()
                try:
                    process.wait(5)  # a bound on waiting: each message would hold it 10 s
                except subprocess.TimeoutExpired:
                    pytest.fail("the process was still running 5 s after its work was done: it waits for outbox deliveries")
                errors = process.stderr.read()
            finally:
                process.kill()
    assert process.returncode == 0, errors
    with sqlite3.connect(database) as connection:
        states = [row[0] for row in connection.execute("select state from core_outbox")]
    assert states == ["pending"] * 3  # nothing lost: another worker sends them once the claim runs out
