"""W3C Bitstring Status Lists of licences, read the way an outside verifier would, and the expiry job.

The list is fetched over HTTP, its signature checked with ``cryptography`` from the
published JWK Set, and its bits decoded with a few lines that share nothing with
``licenses.statuslist`` (base64url, gunzip, most significant bit first).
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import threading
import uuid
from dataclasses import replace
from datetime import date, timedelta

import pytest
import requests
import zxingcpp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from PIL import Image
from sqlalchemy import func, select

from core import events
from core.db import utc_now
from licenses import demo, expiry, issuance, lifecycle, qrpayload, statuslist
from licenses.models import Issuer, Licence, StateChange
from tests.licenses.conftest import ACTOR, enterprise_code, person_code

DRIVING = demo.DRIVING_LICENCE


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verified(token: str, jwks: dict) -> tuple[dict, dict]:
    """(header, claims) of an ES256 compact JWS, checked with cryptography and the JWK Set alone."""
    head, body, signature = token.split(".")
    header = json.loads(_b64d(head))
    assert header["alg"] == "ES256"
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_b64d(jwk["x"]), "big"), int.from_bytes(_b64d(jwk["y"]), "big"), ec.SECP256R1()
    ).public_key()
    raw = _b64d(signature)
    der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{head}.{body}".encode("ascii"), ec.ECDSA(hashes.SHA256()))  # raises InvalidSignature
    return header, json.loads(_b64d(body))


def bit_at(encoded_list: str, index: int) -> int:
    """The spec's decoding: multibase 'u' + base64url without padding, GZIP, index 0 = first byte's top bit."""
    assert encoded_list.startswith("u")
    bits = gzip.decompress(_b64d(encoded_list[1:]))
    assert len(bits) * 8 >= 131072
    return (bits[index // 8] >> (7 - index % 8)) & 1


class Lists:
    def __init__(self, world):
        self.world = world
        self.base = world.serve()
        self.jwks = requests.get(self.base + "/api/licences/jwks", timeout=10).json()

    def url(self, licence: Licence, purpose: str) -> str:
        return f"{self.base}/licences/status/{licence.issuer_code}/{licence.status_list}/{purpose}"

    def fetch(self, licence: Licence, purpose: str, **headers) -> requests.Response:
        return requests.get(self.url(licence, purpose), headers=headers, timeout=10)

    def bit(self, licence: Licence, purpose: str) -> int:
        answer = self.fetch(licence, purpose)
        assert answer.status_code == 200, answer.text
        header, claims = verified(answer.text, self.jwks)
        subject = claims["credentialSubject"]
        assert subject["statusPurpose"] == purpose
        return bit_at(subject["encodedList"], licence.status_index)


@pytest.fixture(scope="module")
def lists(licence_world):
    return Lists(licence_world)


def _change(world, licence: Licence, action: str, reason: str | None = "test") -> None:
    with world.ctx.sessions() as db, db.begin():
        lifecycle.change_state(db, licence.identifier, action, reason=reason, actor=ACTOR)


def _unique_holder() -> str:
    return person_code(80000 + int(uuid.uuid4().hex[:5], 16) % 15000)


def test_the_list_is_a_signed_vc_jwt_and_flips_when_a_licence_is_revoked(licence_world, lists):
    licence = licence_world.issue(DRIVING, holder_code=_unique_holder())
    assert licence.status_list is not None and 0 <= licence.status_index < 131072
    answer = lists.fetch(licence, "revocation")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/vc+jwt")
    header, claims = verified(answer.text, lists.jwks)
    assert header["typ"] == "vc+jwt"
    assert claims["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]
    assert "https://www.w3.org/ns/credentials/v2" in claims["@context"]
    assert claims["id"] == lists.url(licence, "revocation")
    subject = claims["credentialSubject"]
    assert subject["type"] == "BitstringStatusList" and subject["id"] == claims["id"] + "#list"
    # ttl (milliseconds) and Cache-Control agree, so caches and verifiers keep it equally long.
    ttl = licence_world.ctx.settings.status_list_ttl_seconds
    assert answer.headers["Cache-Control"] == f"public, max-age={ttl}" and subject["ttl"] == ttl * 1000
    assert bit_at(subject["encodedList"], licence.status_index) == 0

    _change(licence_world, licence, "revoke", "吊销：测试")
    assert lists.bit(licence, "revocation") == 1
    assert lists.bit(licence, "suspension") == 0


def test_suspension_sets_and_resumption_clears_the_suspension_bit(licence_world, lists):
    licence = licence_world.issue(DRIVING, holder_code=_unique_holder())
    neighbour = licence_world.issue(DRIVING, holder_code=_unique_holder())
    _change(licence_world, licence, "suspend", "暂扣：测试")
    assert lists.bit(licence, "suspension") == 1
    assert lists.bit(licence, "revocation") == 0
    if neighbour.status_list == licence.status_list:
        assert lists.bit(neighbour, "suspension") == 0  # only this licence's bit
    _change(licence_world, licence, "resume", None)
    assert lists.bit(licence, "suspension") == 0
    # A renewal supersedes this version: superseded is final, so its revocation bit is set; the new version has its own entry.
    newer = issuance.next_version(licence_world.ctx, licence.identifier, action="renew", actor=ACTOR, reason="换证")
    assert lists.bit(licence, "revocation") == 1
    assert (newer.status_list, newer.status_index) != (licence.status_list, licence.status_index)
    assert lists.bit(newer, "revocation") == 0


def test_etag_names_the_version_and_if_none_match_gets_304(licence_world, lists):
    licence = licence_world.issue(DRIVING, holder_code=_unique_holder())
    first = lists.fetch(licence, "suspension")
    etag = first.headers["ETag"]
    again = lists.fetch(licence, "suspension", **{"If-None-Match": etag})
    assert again.status_code == 304 and not again.content and again.headers["ETag"] == etag
    _change(licence_world, licence, "suspend", "暂扣：测试")
    changed = lists.fetch(licence, "suspension", **{"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert bit_at(verified(changed.text, lists.jwks)[1]["credentialSubject"]["encodedList"], licence.status_index) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/licences/status/X/1/revocation",
        "/licences/status/{issuer}/999/revocation",
        "/licences/status/{issuer}/1/message",
        "/licences/status/{issuer}/one/revocation",
    ],
)
def test_unknown_lists_are_404_problems(licence_world, lists, path):
    answer = requests.get(
        lists.base + path.format(issuer=demo.issuer_for(DRIVING).code), headers={"Accept": "application/json"}, timeout=10
    )
    assert answer.status_code == 404
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.json()["code"] == "unknown_status_list"


def test_the_files_qr_code_names_the_licences_entry(licence_world, tmp_path):
    licence = licence_world.issue(DRIVING, holder_code=_unique_holder())
    with licence_world.ctx.sessions() as db:
        pdf = db.get(Licence, licence.identifier).pdf
    path = tmp_path / "licence.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "200", "-png", "-f", "1", "-l", "1", str(path), str(tmp_path / "page")], check=True, timeout=60)
    texts = [c.text for c in zxingcpp.read_barcodes(Image.open(next(tmp_path.glob("page*.png"))))]
    (text,) = [t for t in texts if t.startswith(licence_world.ctx.url(qrpayload.QR_PATH) + "#")]
    _, claims = verified(text.partition("#")[2], requests.get(licence_world.serve() + "/api/licences/jwks", timeout=10).json())
    assert (claims["sl"], claims["si"]) == (licence.status_list, licence.status_index)
    facts = qrpayload.read(licence_world.ctx, text)
    assert (facts["status_list"], facts["status_index"]) == (licence.status_list, licence.status_index)


def test_a_payload_without_an_entry_still_reads(licence_world):
    text = qrpayload.payload(
        licence_world.ctx,
        identifier="LEGACY-1",
        type_code=DRIVING,
        issuer_code=demo.issuer_for(DRIVING).code,
        holder_masked="350***********0011",
        holder_name="张*明",
        valid_from="2020-01-01",
        valid_until=None,
        kind="show",
        lifetime=timedelta(minutes=3),
    )
    facts = qrpayload.read(licence_world.ctx, text)
    assert facts["status_list"] is None and facts["status_index"] is None


def test_allocation_is_random_unique_and_moves_on_when_a_list_is_half_full(licence_world):
    code = enterprise_code(900000 + int(uuid.uuid4().hex[:4], 16))
    with licence_world.ctx.sessions() as db, db.begin():
        db.add(Issuer(credit_code=code, name="测试发证机关", seal_name="none", created_at=utc_now(), created_by=ACTOR))
    with licence_world.ctx.sessions() as db, db.begin():
        entries = statuslist.allocate_many(db, code, 70000)
    assert len(set(entries)) == 70000
    per_list: dict[int, list[int]] = {}
    for number, index in entries:
        per_list.setdefault(number, []).append(index)
    assert sorted(per_list) == [1, 2]
    assert len(per_list[1]) == 131072 // 2  # the threshold: at most half of a list is handed out
    assert all(0 <= i < 131072 for indexes in per_list.values() for i in indexes)
    # Random, not in order: the indexes of the first list are spread over the whole list.
    first = per_list[1][:1000]
    assert first != sorted(first) and max(per_list[1]) > 120000 and min(per_list[1]) < 10000
    with licence_world.ctx.sessions() as db, db.begin():
        number, index = statuslist.allocate(db, code)
    assert number == 2  # the newest list


def test_issued_licences_never_share_an_entry(licence_world):
    issuer = demo.issuer_for(DRIVING).code
    for _ in range(5):
        licence_world.issue(DRIVING, holder_code=_unique_holder())
    with licence_world.ctx.sessions() as db:
        rows = db.execute(
            select(Licence.status_list, Licence.status_index).where(Licence.issuer_code == issuer, Licence.status_list.is_not(None))
        ).all()
    assert len(rows) >= 5 and len(set(rows)) == len(rows)


def test_expiry_moves_a_licence_past_its_validity_and_sends_its_event(licence_world):
    seen = []

    def listen(session, licence, previous, action, actor, **_):
        seen.append((licence.identifier, previous, licence.state, action))

    n = licence_world.next_number()
    holder = person_code(n + 50000)
    face = demo.sample_face(DRIVING, holder_code=holder, holder_name="过期测试", seed=str(n))
    order = issuance.Order(
        type_code=DRIVING, issuer_code=demo.issuer_for(DRIVING).code, holder_code=holder, face=face,
        valid_from=date(2019, 1, 1), valid_until=date(2020, 12, 31),
    )  # fmt: skip
    old = issuance.issue(licence_world.ctx, order, actor=ACTOR, requester=ACTOR)
    suspended = issuance.issue(licence_world.ctx, replace(order), actor=ACTOR, requester=ACTOR)
    with licence_world.ctx.sessions() as db, db.begin():  # suspended while it was still valid (change_state refuses it now)
        db.get(Licence, suspended.identifier).state = lifecycle.SUSPENDED
    with licence_world.ctx.sessions() as db:
        events.of(db).subscribe(lifecycle.LICENCE_CHANGED, listen)
    # Two workers at once: each licence is expired once.
    counts = []
    workers = [
        threading.Thread(target=lambda: counts.append(expiry.expire(licence_world.ctx, today=date(2021, 1, 1), batch=1))) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with licence_world.ctx.sessions() as db:
        for licence in (old, suspended):
            assert db.get(Licence, licence.identifier).state == lifecycle.EXPIRED
            moves = db.scalar(
                select(func.count())
                .select_from(StateChange)
                .where(StateChange.identifier == licence.identifier, StateChange.to_state == lifecycle.EXPIRED)
            )
            assert moves == 1
    mine = [entry for entry in seen if entry[0] in (old.identifier, suspended.identifier)]
    assert sorted(mine) == sorted(
        [(old.identifier, "valid", "expired", "expire"), (suspended.identifier, "suspended", "expired", "expire")]
    )
    # Nothing left for that day: a second run moves none of them.
    assert expiry.expire(licence_world.ctx, today=date(2021, 1, 1)) == 0


def test_the_expire_command(licence_world):
    from tests.conftest import run_hallmark

    n = licence_world.next_number()
    holder = person_code(n + 60000)
    face = demo.sample_face(DRIVING, holder_code=holder, holder_name="命令过期", seed=str(n))
    order = issuance.Order(
        type_code=DRIVING, issuer_code=demo.issuer_for(DRIVING).code, holder_code=holder, face=face,
        valid_from=date(2018, 1, 1), valid_until=date(2018, 12, 31),
    )  # fmt: skip
    licence = issuance.issue(licence_world.ctx, order, actor=ACTOR, requester=ACTOR)
    bad = run_hallmark(licence_world.instance, "licences", "expire", "--today", "2019-13-01")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "not a date" in bad.stdout + bad.stderr
    done = run_hallmark(licence_world.instance, "licences", "expire", "--today", "2019-01-01")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "expired" in done.stdout
    with licence_world.ctx.sessions() as db:
        assert db.get(Licence, licence.identifier).state == lifecycle.EXPIRED


# -- on each database: concurrent changes of one list lose nothing -----------------------------------


def test_concurrent_bit_changes_and_list_creation_lose_nothing(migrated):
    from types import SimpleNamespace

    from core import db as core_db
    from licenses.models import StatusList

    _, factory = migrated
    code = enterprise_code(777)
    with core_db.transaction(factory) as session:
        session.add(Issuer(credit_code=code, name="并发测试机关", seal_name="none", created_at=utc_now(), created_by=ACTOR))
    # Two allocations at once both find no list and both make list 1: one makes it, the other uses it.
    barrier, numbers = threading.Barrier(4), []

    def allocate():
        barrier.wait()
        with core_db.transaction(factory) as session:
            numbers.append(statuslist.allocate(session, code)[0])

    threads = [threading.Thread(target=allocate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert numbers == [1, 1, 1, 1]
    # Eight revocations of eight licences of the same list at once: every bit set, version up by eight.
    indexes = [5, 77, 1000, 4096, 65535, 70000, 100001, 131071]
    barrier = threading.Barrier(len(indexes))

    def revoke(index):
        licence = SimpleNamespace(issuer_code=code, status_list=1, status_index=index, state=lifecycle.REVOKED)
        barrier.wait()
        with core_db.transaction(factory) as session:
            statuslist.on_licence_changed(session, licence, lifecycle.VALID, "revoke", ACTOR)

    threads = [threading.Thread(target=revoke, args=(i,)) for i in indexes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with factory() as session:
        row = session.get(StatusList, (code, 1, "revocation"))
        bits = row.bits
        assert row.version == 1 + len(indexes)
        assert session.get(StatusList, (code, 1, "suspension")).version == 1
    assert [i for i in range(131072) if bits[i // 8] >> (7 - i % 8) & 1] == indexes


@pytest.mark.parametrize(
    "changes", [{"status_list_size": 65536}, {"status_list_size": 131073}, {"status_list_ttl_seconds": 0}, {"expiry_seconds": -1}]
)
def test_bad_status_list_settings_are_refused(changes):
    from core.settings import ConfigError
    from licenses.settings import LicencesSettings

    with pytest.raises(ConfigError, match=next(iter(changes))):
        LicencesSettings(**changes)
    assert LicencesSettings(expiry_seconds=0).expiry_seconds == 0  # 0 turns the job off
