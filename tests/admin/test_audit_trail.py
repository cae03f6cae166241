"""The audit section: an auditor searches the trail (actor, subject, action prefix, time range) a page at a time,
exports the search as CSV and JSON (formulas defused), and verifies the hash chain, which names the event a test
altered in the database. Searches and exports are themselves in the trail."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from admin import roles, trail
from core import audit
from core import db as core_db

pytestmark = pytest.mark.slow


@contextmanager
def guard_lifted(console):
    """What someone with rights on the database does: lift the append-only guard; put back afterwards."""
    engine = console.services.sessions.kw["bind"]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
            triggers = []
        else:
            triggers = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'")).all()
            for name, _ in triggers:
                conn.execute(text(f'DROP TRIGGER "{name}"'))
    try:
        yield engine
    finally:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
            for _, sql in triggers:
                conn.exec_driver_sql(sql)


def seqs(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-seq="(\d+)">', page)]


@pytest.fixture
def marked(console):
    """60 events of an action of their own (and their subject), 3 of them back in January 2020."""
    mark = uuid.uuid4().hex[:10]
    action, subject = f"test.trail{mark}", f"subject-{mark}"
    written = []
    with core_db.transaction(console.services.sessions) as db:
        for n in range(60):
            moment = datetime(2020, 1, 5, 2 + n, 0, tzinfo=UTC) if n < 3 else None
            event = audit.record(db, actor=f"test:{mark}", action=f"{action}.{n % 3}", target=subject, details={"n": n}, at=moment)
            written.append(event.seq)
    return {"mark": mark, "action": action, "subject": subject, "seqs": written}


@pytest.fixture
def auditor(console):
    person = console.person((roles.AUDITOR, None), usb=False, name="审计员")
    browser = console.browser(person)
    assert browser.sign_in().status_code == 200
    return browser


def test_an_auditor_searches_page_by_page_and_the_searches_are_recorded(console, marked, auditor):
    first = auditor.get(f"/admin/audit?action={marked['action']}")
    assert first.status_code == 200
    assert seqs(first.text) == sorted(marked["seqs"], reverse=True)[:50]  # newest first, a page of 50
    older = re.search(r'href="(/admin/audit\?[^"]+)" rel="next"', first.text).group(1).replace("&amp;", "&")
    assert "before=" in older and "offset" not in older
    second = auditor.get(older)
    assert seqs(second.text) == sorted(marked["seqs"], reverse=True)[50:]
    assert 'rel="next"' not in second.text

    by_actor_and_subject = auditor.get(f"/admin/audit?actor=test:{marked['mark']}&subject={marked['subject']}&action={marked['action']}.1")
    assert seqs(by_actor_and_subject.text) == sorted(marked["seqs"][1::3], reverse=True)
    # 2020-01-05 in China Standard Time: 02:00 and 03:00 UTC are that day's 10:00 and 11:00; 04:00 UTC too.
    by_time = auditor.get(f"/admin/audit?action={marked['action']}&from=2020-01-05&to=2020-01-05")
    assert seqs(by_time.text) == sorted(marked["seqs"][:3], reverse=True)
    by_minute = auditor.get(f"/admin/audit?action={marked['action']}&from=2020-01-05T11:00&to=2020-01-05T11:00")
    assert seqs(by_minute.text) == [marked["seqs"][1]]
    nothing = auditor.get(f"/admin/audit?action={marked['action']}&to=2019-12-31")
    assert seqs(nothing.text) == [] and "没有符合条件的事件" in nothing.text

    bad = auditor.get("/admin/audit?from=yesterday")
    assert bad.status_code == 400 and "不是日期" in bad.text

    searched = sorted(
        (e for e in console.audit("admin.audit.searched") if e.actor == f"account:{auditor.person.account_id}"), key=lambda e: e.seq
    )
    assert len(searched) == 6
    assert json.loads(searched[0].details)["search"] == {"action": marked["action"]}
    assert json.loads(searched[1].details)["before"] is not None


def test_the_export_streams_csv_and_json_with_formulas_defused(console, marked, auditor):
    dangerous = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tTAB", "plain"]
    action = f"test.export{marked['mark']}"
    with core_db.transaction(console.services.sessions) as db:
        for value in dangerous:
            audit.record(db, actor="test:export", action=action, target=value, details={"note": "=1+2"})
    answer = auditor.get(f"/admin/audit/export.csv?action={action}")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/csv")
    assert answer.headers["Content-Disposition"].startswith("attachment;") and answer.headers.get("Content-Length") is None  # streamed
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert [row["target"] for row in rows] == ["plain", "'\tTAB", "'@SUM(A1)", "'-2", "'+1+1", '\'=HYPERLINK("http://x")']
    assert all(row["details"] == '{"note":"=1+2"}' for row in rows)  # starts with "{": left as it is
    assert all(row["action"] == action for row in rows)

    exported = auditor.get(f"/admin/audit/export.json?action={action}")
    body = json.loads(exported.content)
    assert body["search"] == {"action": action}
    assert [event["target"] for event in body["events"]] == list(reversed(dangerous))  # JSON as stored
    assert body["events"][0]["details"] == {"note": "=1+2"}
    assert [
        json.loads(e.details)["format"] for e in console.audit("admin.audit.exported") if e.actor.endswith(auditor.person.account_id)
    ] == [
        "csv",
        "json",
    ]
    assert auditor.get("/admin/audit/export.xml").status_code == 404


def test_the_chain_check_names_the_event_altered_in_the_database(console, marked, auditor):
    intact = auditor.get("/admin/audit/verify?first=&last=")
    assert intact.status_code == 200 and 'data-state="ok"' in intact.text and "哈希链完整" in intact.text

    victim = marked["seqs"][30]
    with console.services.sessions() as db:
        original = db.execute(text("SELECT details FROM audit_events WHERE seq = :s"), {"s": victim}).scalar_one()
    with guard_lifted(console) as engine, engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET details = :d WHERE seq = :s"), {"d": '{"n":999}', "s": victim})
    try:
        broken = auditor.get("/admin/audit/verify?first=&last=")
        assert broken.status_code == 200 and 'data-state="broken"' in broken.text
        assert f"首个出错的事件：第 {victim} 号" in broken.text
        assert f"第 {victim} 号事件在写入后被改动" in broken.text
        # A range after it is intact: its first event links to the stored hash of the one before.
        after = auditor.get(f"/admin/audit/verify?first={victim + 1}&last={marked['seqs'][-1]}")
        assert 'data-state="ok"' in after.text
        # In steps, as the page runs on a long trail: the same event, whichever step finds it.
        with console.services.sessions() as db:
            first, last, newest = trail.verify_bounds(db, "", "")
            at, steps = first, 0
            while True:
                step = trail.verify_step(db, first, last, at, to_newest=newest, step=max(7, (last - first) // 9))
                steps += 1
                if step.next is None:
                    break
                assert step.ok and step.done == step.next - first
                at = step.next
        assert steps > 2 and not step.ok and step.broken_at == victim
        recorded = [json.loads(e.details) for e in console.audit("admin.audit.verified") if e.actor.endswith(auditor.person.account_id)]
        assert [r["ok"] for r in recorded] == [True, False, True] and recorded[1]["broken_at"] == victim
    finally:
        with guard_lifted(console) as engine, engine.begin() as conn:
            conn.execute(text("UPDATE audit_events SET details = :d WHERE seq = :s"), {"d": original, "s": victim})
    with console.services.sessions() as db:
        assert audit.verify(db).ok
    assert auditor.get("/admin/audit/verify?first=abc").status_code == 400


def test_a_long_check_runs_in_steps_and_the_page_follows_them(console, marked, auditor, monkeypatch):
    """The console in this process (the same instance and database), checking 25 events a request: each answer
    shows the progress and names the next step in its Refresh header, as a browser follows it."""
    import os

    from hallmark import components
    from hallmark.app import create_app
    from tests.conftest import pkcs11_module_for

    module = pkcs11_module_for(console.instance / "softhsm" / "softhsm2.conf")
    environ = {**os.environ, "HALLMARK_PUBLIC_URL": console.base, "HALLMARK_PKCS11_MODULE": module, "HALLMARK_CA_UPKEEP_SECONDS": "0"}
    app = create_app(components.load_settings(console.instance, environ=environ))
    try:
        monkeypatch.setattr(trail, "VERIFY_STEP", 25)
        client = app.test_client()
        client.set_cookie("hallmark_admin", auditor.http.cookies.get("hallmark_admin"), path="/admin")
        answer = client.get("/admin/audit/verify?first=&last=")
        done, steps = [], 0
        while "Refresh" in answer.headers:
            page = answer.get_data(as_text=True)
            assert answer.status_code == 200 and 'data-state="running"' in page and "正在校验" in page
            done.append(int(re.search(r'<progress id="progress" max="\d+" value="(\d+)"', page).group(1)))
            answer = client.get(answer.headers["Refresh"].split("url=", 1)[1])
            steps += 1
        assert 'data-state="ok"' in answer.get_data(as_text=True)
        assert steps >= 3 and done == sorted(done) and done[0] == 25
    finally:
        app.extensions["hallmark.services"].close()
