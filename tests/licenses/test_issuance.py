"""Issuing licences and their lifecycle, judged by outside tools where it matters (stdnum, pdfsig, pyHanko)."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
import requests
from sqlalchemy import func, select
from stdnum.iso7064 import mod_37_36

from core.problems import Problem
from licenses import demo, issuance, library, lifecycle
from licenses.models import Licence, StateChange
from tests.licenses.conftest import ACTOR, enterprise_code, person_code
from tests.signing_fixtures import nss_database, pdfsig, pyhanko_ades


def _count(world) -> int:
    with world.ctx.sessions() as db:
        return db.scalar(select(func.count()).select_from(Licence))


def test_an_issued_licence_has_a_checked_identifier_a_state_and_a_sealed_file(licence_world):
    licence = licence_world.issue(demo.FOOD_PERMIT, holder_name="示范市鼓楼区好味道餐饮店")
    body = licence.identifier[len("1.2.156.3005.2.") :].replace(".", "")
    assert mod_37_36.is_valid(body)
    assert licence.state == "valid" and licence.version == 1
    assert licence.valid_until == licence.valid_from.replace(year=licence.valid_from.year + 5) - timedelta(days=1)
    with licence_world.ctx.sessions() as db:
        pdf = db.get(Licence, licence.identifier).pdf
        described = library.describe(licence_world.ctx, db, licence, face="masked")
    assert pdf.startswith(b"%PDF") and described["file"]["sealed"]
    assert described["status"]["state"] == "valid" and described["face"]["operator"] == "示范市鼓楼区好味道餐饮店"
    from signing.models import SignedDocument

    with licence_world.ctx.sessions() as db:  # the library shows its own page: no first-page picture is made for a licence
        record = db.get(SignedDocument, db.get(Licence, licence.identifier).document_id)
    assert record is not None and record.thumbnail_png is None


def test_the_file_is_valid_for_pdfsig_and_pyhanko_with_the_hallmark_root(licence_world, tmp_path):
    base = licence_world.serve()  # pdfsig (NSS) asks our OCSP responder; the certificates name this URL
    licence = licence_world.issue(demo.BUSINESS_LICENCE, holder_name="示范市闽江贸易有限公司")
    with licence_world.ctx.sessions() as db:
        pdf = db.get(Licence, licence.identifier).pdf
    path = tmp_path / "licence.pdf"
    path.write_bytes(pdf)
    root = requests.get(base + "/pki/ca/root.crt", timeout=10).content
    if root.startswith(b"-----"):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        root = x509.load_pem_x509_certificate(root).public_bytes(Encoding.DER)
    judged = pdfsig(path, nss_database(tmp_path / "nss", root))
    assert len(judged) == 1 and judged[0].signature_valid and judged[0].certificate_trusted, judged[0].lines
    services = requests.get(base + "/pki/ca/services.crt", timeout=10).content
    crls = [requests.get(f"{base}/pki/crl/{name}.crl", timeout=10).content for name in ("root", "services")]
    assert pyhanko_ades(pdf, root, [services], crls) == [("PASSED", None)]


def test_the_same_request_id_gives_the_same_licence(licence_world):
    holder = enterprise_code(9001)
    order = issuance.Order(
        type_code=demo.BUSINESS_LICENCE,
        issuer_code=demo.issuer_for(demo.BUSINESS_LICENCE).code,
        holder_code=holder,
        face=demo.sample_face(demo.BUSINESS_LICENCE, holder_code=holder, holder_name="示范市重复请求有限公司"),
        request_id="approval-42",
    )
    first = issuance.issue(licence_world.ctx, order, actor=ACTOR, requester="client:market")
    before = _count(licence_world)
    again = issuance.issue(licence_world.ctx, order, actor=ACTOR, requester="client:market")
    assert again.identifier == first.identifier and _count(licence_world) == before
    other_holder = enterprise_code(9002)
    order.holder_code = other_holder
    order.face = demo.sample_face(demo.BUSINESS_LICENCE, holder_code=other_holder, holder_name="示范市另一家有限公司")
    with pytest.raises(Problem) as caught:
        issuance.issue(licence_world.ctx, order, actor=ACTOR, requester="client:market")
    assert caught.value.status == 409 and caught.value.extensions["code"] == "request_id_reused"
    # another requester's request id is its own
    made = issuance.issue(licence_world.ctx, order, actor=ACTOR, requester="client:land")
    assert made.identifier != first.identifier


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"type_code": "11100000000013952E999"}, "unknown_type"),
        ({"issuer_code": "91350100M000100Y43"}, "unknown_issuer"),
        ({"holder_code": "110105194912310021"}, "bad_holder"),  # wrong check digit
        ({"face": {"name": "王"}}, "bad_face"),
        ({"valid_from": date(2030, 1, 1), "valid_until": date(2029, 1, 1)}, "bad_validity"),
        ({"serial": "abc"}, "bad_serial"),
        ({"request_id": "x" * 101}, "bad_request_id"),
    ],
)
def test_bad_orders_name_the_problem_and_write_nothing(licence_world, change, code):
    holder = person_code(777)
    order = issuance.Order(
        type_code=demo.DRIVING_LICENCE,
        issuer_code=demo.issuer_for(demo.DRIVING_LICENCE).code,
        holder_code=holder,
        face=demo.sample_face(demo.DRIVING_LICENCE, holder_code=holder, holder_name="李四"),
    )
    for name, value in change.items():
        setattr(order, name, value)
    before = _count(licence_world)
    with pytest.raises(Problem) as caught:
        issuance.issue(licence_world.ctx, order, actor=ACTOR, requester=ACTOR)
    assert caught.value.extensions["code"] == code and 400 <= caught.value.status < 500
    assert _count(licence_world) == before


def test_states_change_with_reasons_and_stay_apart_from_errors(licence_world):
    licence = licence_world.issue(demo.FOOD_PERMIT, holder_name="示范市状态测试餐饮店")
    ctx = licence_world.ctx
    with ctx.sessions() as db, db.begin():
        lifecycle.change_state(db, licence.identifier, "suspend", reason="现场检查不合格，责令整改", actor="officer:1")
    with ctx.sessions() as db, db.begin(), pytest.raises(Problem) as caught:
        lifecycle.change_state(db, licence.identifier, "suspend", reason="again", actor="officer:1")
    assert caught.value.status == 409 and caught.value.extensions["state"] == "suspended"
    with ctx.sessions() as db, db.begin():
        lifecycle.change_state(db, licence.identifier, "resume", reason=None, actor="officer:1")
        lifecycle.change_state(db, licence.identifier, "revoke", reason="严重违法，依法吊销", actor="officer:2")
    with ctx.sessions() as db:
        row = db.get(Licence, licence.identifier)
        status = lifecycle.status(row)
        history = [(h.from_state, h.to_state, h.actor) for h in lifecycle.history(db, licence.identifier)]
        events = db.execute(select(func.count()).select_from(StateChange).where(StateChange.identifier == licence.identifier)).scalar()
    assert (status.state, status.national_code, status.usable) == ("revoked", "07", False)
    assert status.reason == "严重违法，依法吊销"
    assert history[1:] == [("valid", "suspended", "officer:1"), ("suspended", "valid", "officer:1"), ("valid", "revoked", "officer:2")]
    assert events == 4
    with ctx.sessions() as db, db.begin():
        with pytest.raises(Problem):
            lifecycle.change_state(db, licence.identifier, "resume", reason=None, actor="officer:1")  # revocation is final
        with pytest.raises(Problem) as caught:
            lifecycle.change_state(db, licence.identifier, "suspend", reason="", actor="officer:1")
    assert caught.value.status in (409, 422)


def test_a_licence_past_its_end_date_reads_as_expired(licence_world):
    holder = person_code(4242)
    order = issuance.Order(
        type_code=demo.DRIVING_LICENCE,
        issuer_code=demo.issuer_for(demo.DRIVING_LICENCE).code,
        holder_code=holder,
        face=demo.sample_face(demo.DRIVING_LICENCE, holder_code=holder, holder_name="赵六"),
        valid_from=date(2015, 3, 1),
        valid_until=date(2021, 2, 28),
    )
    licence = issuance.issue(licence_world.ctx, order, actor=ACTOR, requester=ACTOR)
    assert lifecycle.effective_state(licence) == "expired" and licence.state == "valid"
    assert lifecycle.status(licence).national_code == "05"


def test_renewal_makes_a_new_version_and_supersedes_the_old(licence_world):
    licence = licence_world.issue(demo.FOOD_PERMIT, holder_name="示范市续期测试餐饮店")
    ctx = licence_world.ctx
    renewed = issuance.next_version(ctx, licence.identifier, action="renew", actor="officer:1", reason=None)
    assert renewed.identifier.split(".")[-2] == "002" and renewed.predecessor == licence.identifier
    assert renewed.valid_from == licence.valid_until + timedelta(days=1)
    changed = issuance.next_version(
        ctx,
        renewed.identifier,
        action="change",
        actor="officer:1",
        reason="经营场所变更",
        face_changes={"premises": "示范市晋安区福新路8号"},
    )
    assert changed.identifier.split(".")[-2] == "003"
    with ctx.sessions() as db:
        old = db.get(Licence, licence.identifier)
        middle = db.get(Licence, renewed.identifier)
        face = library.describe(ctx, db, db.get(Licence, changed.identifier), face="full")["face"]
    assert (old.state, old.successor) == ("superseded", renewed.identifier)
    assert (middle.state, middle.successor) == ("superseded", changed.identifier)
    assert face["premises"] == "示范市晋安区福新路8号" and face["operator"] == "示范市续期测试餐饮店"
    with pytest.raises(Problem) as caught:
        issuance.next_version(ctx, licence.identifier, action="renew", actor="officer:1", reason=None)
    assert caught.value.status == 409


def test_no_resident_id_or_sensitive_field_in_clear_in_the_database_or_the_log(licence_world):
    holder = person_code(31337)
    licence = licence_world.issue(demo.TEACHER_QUALIFICATION, holder_code=holder, holder_name="钱七")
    with licence_world.ctx.sessions() as db:
        face = library.describe(licence_world.ctx, db, licence, face="full")["face"]
    assert face["resident_id"] == holder  # the library can read it back ...
    database = licence_world.instance / "hallmark.db"
    candidates = [p for p in licence_world.instance.iterdir() if p.suffix in (".db", ".sqlite", ".sqlite3")]
    assert candidates, list(licence_world.instance.iterdir())
    for path in candidates + sorted(licence_world.instance.glob("*.log")):
        data = path.read_bytes()
        assert holder.encode() not in data, f"{path.name} holds a resident ID in clear"  # ... but no file shows it
        assert json.dumps(holder).encode() not in data
    assert database.exists() or candidates


def test_a_revocation_while_a_renewal_is_being_sealed_wins(licence_world, monkeypatch):
    """The renewal seals its file outside any transaction; a revocation committed meanwhile must not be undone."""
    licence = licence_world.issue(demo.FOOD_PERMIT, holder_name="示范市竞态测试餐饮店")
    ctx = licence_world.ctx
    original = issuance.render_and_seal

    def seal_then_revoke(*args, **kwargs):
        sealed = original(*args, **kwargs)
        with ctx.sessions() as db, db.begin():  # another officer's penalty lands while the file was being sealed
            lifecycle.change_state(db, licence.identifier, "revoke", reason="依法吊销", actor="officer:2")
        return sealed

    monkeypatch.setattr(issuance, "render_and_seal", seal_then_revoke)
    with pytest.raises(Problem) as caught:
        issuance.next_version(ctx, licence.identifier, action="renew", actor="officer:1", reason=None)
    assert caught.value.status == 409 and caught.value.extensions["state"] == "revoked"
    with ctx.sessions() as db:
        row = db.get(Licence, licence.identifier)
        assert (row.state, row.successor) == ("revoked", None)


def test_a_suspended_licence_is_not_renewed(licence_world):
    licence = licence_world.issue(demo.FOOD_PERMIT, holder_name="示范市暂扣续期测试店")
    with licence_world.ctx.sessions() as db, db.begin():
        lifecycle.change_state(db, licence.identifier, "suspend", reason="责令整改", actor="officer:1")
    with pytest.raises(Problem) as caught:
        issuance.next_version(licence_world.ctx, licence.identifier, action="renew", actor="officer:1", reason=None)
    assert caught.value.status == 409 and caught.value.extensions["state"] == "suspended"
