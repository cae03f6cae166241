"""The RFC 3161 time-stamping authority, judged by ``openssl ts`` and pyHanko's validator.

In-process tests run on SQLite and PostgreSQL (``ca_context``); the HTTP tests
talk to a running ``hallmark serve``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

from ca import hierarchy, issuance, profiles, revocation
from ca.models import Authority, Certificate
from ca.tsa import api as tsa_api
from ca.tsa import responder as tsa
from core import component, problems
from core.web import errors
from hsm import KeyAlgorithm

DATA = "书证一致：泉州市网上办事大厅 submission #42\n".encode()


# -- helpers ----------------------------------------------------------------------------------


def openssl(*args, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check:
        assert result.returncode == 0, f"openssl {' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


def pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def query(tmp_path: Path, *options, data: bytes = DATA) -> bytes:
    """A TimeStampReq made by openssl (``-cert`` asks for the certificates unless options say otherwise)."""
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    out = tmp_path / f"q-{uuid.uuid4().hex[:8]}.tsq"
    openssl("ts", "-query", "-data", source, *(options or ("-sha256", "-cert")), "-out", out)
    return out.read_bytes()


def handmade_query(algorithm: str = "sha256", digest: bytes | None = None, **fields) -> bytes:
    """A TimeStampReq openssl would refuse to make (odd algorithms, lengths, versions, extensions)."""
    digest = hashlib.sha256(DATA).digest() if digest is None else digest
    return tsp.TimeStampReq(
        {
            "version": fields.pop("version", "v1"),
            "message_imprint": {"hash_algorithm": {"algorithm": algorithm}, "hashed_message": digest},
            **fields,
        }
    ).dump()


def status(reply: bytes) -> tuple[str, set, str]:
    status_info = tsa.TimeStampResp.load(reply)["status"]
    return status_info["status"].native, set(status_info["fail_info"].native or ()), " ".join(status_info["status_string"].native or ())


def tst_info(reply: bytes) -> tsp.TSTInfo:
    return tsa.TimeStampResp.load(reply)["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed


def verify(tmp_path: Path, reply: bytes, root_der: bytes, untrusted: list[bytes] = (), data: bytes = DATA) -> str:
    """``openssl ts -verify`` against our root only; returns its output."""
    (tmp_path / "data.bin").write_bytes(data)
    (tmp_path / "r.tsr").write_bytes(reply)
    (tmp_path / "root.pem").write_bytes(pem(root_der))
    args = ["ts", "-verify", "-data", tmp_path / "data.bin", "-in", tmp_path / "r.tsr", "-CAfile", tmp_path / "root.pem"]
    if untrusted:
        (tmp_path / "untrusted.pem").write_bytes(b"".join(pem(der) for der in untrusted))
        args += ["-untrusted", tmp_path / "untrusted.pem"]
    result = openssl(*args, check=False)
    return result.stdout + result.stderr


def reply_text(tmp_path: Path, reply: bytes) -> str:
    (tmp_path / "r.tsr").write_bytes(reply)
    return openssl("ts", "-reply", "-in", tmp_path / "r.tsr", "-text").stdout


def tsa_row(ctx) -> Certificate:
    with ctx.sessions() as session:
        row = hierarchy.service_certificate(session, tsa.TSA_PROFILE, tsa.TSA_AUTHORITY)
        session.expunge(row)
        return row


@pytest.fixture
def tsa_ctx(ca_context):
    yield ca_context
    tsa.forget(ca_context)


# -- in process, SQLite and PostgreSQL --------------------------------------------------------


def test_granted_token_verifies_with_openssl_and_carries_what_was_asked(tsa_ctx, tmp_path):
    reply = tsa.respond(tsa_ctx, query(tmp_path, "-sha256", "-cert"))
    assert status(reply)[0] == "granted"
    assert "Verification: OK" in verify(tmp_path, reply, tsa_ctx.authority("root").der)

    text = reply_text(tmp_path, reply)
    assert f"Policy OID: {tsa.TSA_POLICY}" in text
    assert "Accuracy: 0x01 seconds" in text
    assert "Ordering: no" in text
    assert "Hallmark Time-Stamping Authority" in text  # the tsa field names the TSA certificate subject

    info = tst_info(reply)
    assert info["message_imprint"]["hashed_message"].native == hashlib.sha256(DATA).digest()
    assert abs(info["gen_time"].native - datetime.now(UTC)) < timedelta(seconds=5)
    signed = tsa.TimeStampResp.load(reply)["time_stamp_token"]["content"]
    signer = signed["signer_infos"][0]
    assert signer["signature_algorithm"]["algorithm"].native == "sha256_ecdsa"  # the TSA key is P-256 in the HSM
    # RFC 5816: ESSCertIDv2 with the SHA-256 hash of the TSA certificate and its issuer and serial.
    row = tsa_row(tsa_ctx)
    attributes = {a["type"].native: a["values"] for a in signer["signed_attrs"]}
    assert set(attributes) == {"content_type", "signing_time", "message_digest", "signing_certificate_v2"}
    assert attributes["content_type"][0].native == "tst_info"
    assert attributes["message_digest"][0].native == hashlib.sha256(signed["encap_content_info"]["content"].contents).digest()
    cert_id = attributes["signing_certificate_v2"][0]["certs"][0]
    assert cert_id["cert_hash"].native == hashlib.sha256(row.der).digest()
    assert cert_id["issuer_serial"]["serial_number"].native == int(row.serial, 16)
    assert {c.chosen.dump() for c in signed["certificates"]} == {row.der, tsa_ctx.authority("services").der}  # a SET: DER sorts it
    # The envelope is framed by hand from encoded parts: asn1crypto, re-encoding all of it, must get the same DER.
    assert tsa.TimeStampResp.load(reply).dump(force=True) == reply


def test_nonce_echoed_serials_unique_and_sha384_sha512_accepted(tsa_ctx, tmp_path):
    replies = [tsa.respond(tsa_ctx, query(tmp_path, algorithm, "-cert")) for algorithm in ("-sha256", "-sha384", "-sha512")]
    for reply in replies:
        assert status(reply)[0] == "granted"
        assert "Verification: OK" in verify(tmp_path, reply, tsa_ctx.authority("root").der)
    # openssl puts a random 64-bit nonce in every query; the reply must carry the same one.
    q = query(tmp_path, "-sha256", "-cert")
    nonce = tsp.TimeStampReq.load(q)["nonce"].native
    reply = tsa.respond(tsa_ctx, q)
    assert tst_info(reply)["nonce"].native == nonce
    shown = re.search(r"^Nonce: 0x([0-9A-F]+)$", reply_text(tmp_path, reply), re.M)
    assert shown and int(shown.group(1), 16) == nonce
    serials = {tst_info(r)["serial_number"].native for r in [*replies, reply]}
    assert len(serials) == 4 and all(0 < s < 2**159 for s in serials)

    no_nonce = tsa.respond(tsa_ctx, query(tmp_path, "-sha256", "-no_nonce"))
    assert status(no_nonce)[0] == "granted" and tst_info(no_nonce)["nonce"].native is None


def test_without_cert_req_the_token_has_no_certificates(tsa_ctx, tmp_path):
    reply = tsa.respond(tsa_ctx, query(tmp_path, "-sha256"))  # no -cert: certReq false
    assert status(reply)[0] == "granted"
    signed = tsa.TimeStampResp.load(reply)["time_stamp_token"]["content"]
    assert not signed["certificates"].native
    root = tsa_ctx.authority("root").der
    assert "Verification: OK" not in verify(tmp_path, reply, root)
    chain = [tsa_row(tsa_ctx).der, tsa_ctx.authority("services").der]
    assert "Verification: OK" in verify(tmp_path, reply, root, untrusted=chain)
    assert "Verification: FAILED" in verify(tmp_path, reply, root, untrusted=chain, data=DATA + b"tampered")


def test_our_policy_asked_for_explicitly_is_granted(tsa_ctx, tmp_path):
    reply = tsa.respond(tsa_ctx, query(tmp_path, "-sha256", "-cert", "-tspolicy", tsa.TSA_POLICY))
    assert status(reply)[0] == "granted"
    assert tst_info(reply)["policy"].dotted == tsa.TSA_POLICY


@pytest.mark.parametrize(
    "make, failure, words",
    [
        (lambda p: query(p, "-sha1", "-cert"), "bad_alg", "SHA-1"),
        (lambda p: query(p, "-md5", "-cert"), "bad_alg", "MD5"),
        (lambda p: handmade_query("1.2.156.10197.1.401"), "bad_alg", "SM3"),  # SM3
        (lambda p: handmade_query("1.3.6.1.4.1.99999.1"), "bad_alg", "not supported"),
        (lambda p: handmade_query("sha3_256", hashlib.sha3_256(DATA).digest()), "bad_alg", "not supported"),
        (lambda p: handmade_query("sha256", b"\x00" * 20), "bad_data_format", "32 bytes"),
        (lambda p: handmade_query("sha512", b"\x00" * 32), "bad_data_format", "64 bytes"),
        (lambda p: handmade_query(version=2), "bad_data_format", "version"),
        (lambda p: b"\x30\x03garbage", "bad_data_format", "TimeStampReq"),
        (lambda p: b"", "bad_data_format", "empty"),
        (lambda p: query(p, "-sha256") + b"\x00", "bad_data_format", "TimeStampReq"),  # trailing bytes
        (lambda p: query(p, "-sha256", "-tspolicy", "1.2.3.4"), "unaccepted_policy", tsa.TSA_POLICY),
        (lambda p: handmade_query(extensions=[{"extn_id": "1.2.3.4", "extn_value": b"\x05\x00"}]), "unaccepted_extensions", "extension"),
        (
            lambda p: handmade_query(extensions=[{"extn_id": "1.2.3.4", "critical": True, "extn_value": b"\x05\x00"}]),
            "unaccepted_extensions",
            "extension",
        ),
        (lambda p: b"\x30" * (tsa.MAX_REQUEST_BYTES + 1), "bad_data_format", "larger than"),
    ],
    ids=[
        "sha1",
        "md5",
        "sm3",
        "unknown-oid",
        "sha3",
        "short-imprint",
        "sha512-with-sha256-length",
        "version-2",
        "garbage",
        "empty",
        "trailing-bytes",
        "foreign-policy",
        "extension",
        "critical-extension",
        "oversized",
    ],
)
def test_refusals_carry_the_rfc_3161_failure_bit(tsa_ctx, tmp_path, make, failure, words):
    reply = tsa.respond(tsa_ctx, make(tmp_path))
    state, fail_info, text = status(reply)
    assert (state, fail_info) == ("rejection", {failure})
    assert words in text
    assert tsa.TimeStampResp.load(reply)["time_stamp_token"].native is None
    if failure == "bad_alg":
        # openssl reads our reply too, and names the failure
        assert "unrecognized or unsupported algorithm" in reply_text(tmp_path, reply)


def test_missing_certificate_or_unusable_key_is_system_failure(tsa_ctx, tmp_path):
    q = query(tmp_path, "-sha256", "-cert")
    row = tsa_row(tsa_ctx)
    with tsa_ctx.sessions() as session, session.begin():
        session.execute(
            update(Certificate)
            .where(Certificate.serial == row.serial)
            .values(key_uri="pkcs11:token=hallmark-test;id=%de%ad%be%ef;type=private")
        )
    tsa.forget(tsa_ctx)
    state, fail_info, text = status(tsa.respond(tsa_ctx, q))
    assert (state, fail_info) == ("rejection", {"system_failure"}) and "signing key is unavailable" in text

    with tsa_ctx.sessions() as session, session.begin():
        session.execute(update(Certificate).where(Certificate.serial == row.serial).values(key_uri=row.key_uri))
    revocation.revoke(tsa_ctx, row.serial, "keyCompromise", actor="test")
    tsa.forget(tsa_ctx)
    state, fail_info, text = status(tsa.respond(tsa_ctx, q))
    assert (state, fail_info) == ("rejection", {"system_failure"}) and "no valid certificate" in text


def test_rsa_tsa_key_signs_with_pkcs1_and_verifies(tsa_ctx, key_manager, tmp_path, monkeypatch):
    """The TSA does not assume its key type: a renewed TSA on an RSA key in the HSM works the same."""
    assert status(tsa.respond(tsa_ctx, query(tmp_path)))[0] == "granted"  # the P-256 TSA is loaded and cached now
    key = key_manager.create_key(f"tsa-rsa-{uuid.uuid4().hex[:10]}", KeyAlgorithm.RSA_2048)
    profile = profiles.get(tsa.TSA_PROFILE)
    subject, _, _ = issuance.subject_for(profile, issuance.Identity(name="Hallmark Time-Stamping Authority (RSA)"))
    revocation.revoke(tsa_ctx, tsa_row(tsa_ctx).serial, "superseded", actor="test")  # leave the RSA one the only valid one
    with tsa_ctx.sessions() as session, session.begin():
        issuer = tsa_ctx.authority(tsa.TSA_AUTHORITY, session)
        cert = issuance.build(tsa_ctx, profile, issuer, key.public_key, subject, serial=issuance.random_serial(session))
        issuance.store(
            tsa_ctx, session, cert, authority=issuer.name, profile=profile.name, id_kind=None, id_value=None, actor="test", key_uri=key.uri
        )
    monkeypatch.setattr(tsa, "RELOAD_SECONDS", 0)  # what a running process does after RELOAD_SECONDS, without the wait
    reply = tsa.respond(tsa_ctx, query(tmp_path, "-sha512", "-cert"))
    assert status(reply)[0] == "granted"
    signer = tsa.TimeStampResp.load(reply)["time_stamp_token"]["content"]["signer_infos"][0]
    assert signer["signature_algorithm"]["algorithm"].native == "sha256_rsa"
    assert "Verification: OK" in verify(tmp_path, reply, tsa_ctx.authority("root").der, data=DATA)


def test_threads_share_the_hsm_and_the_cache(tsa_ctx, tmp_path):
    queries = [query(tmp_path, "-sha256", "-cert") for _ in range(4)]
    replies: list[bytes] = []
    lock = threading.Lock()

    def work(q):
        for _ in range(25):
            reply = tsa.respond(tsa_ctx, q)
            with lock:
                replies.append(reply)

    granted_before = tsa.counts.granted
    threads = [threading.Thread(target=work, args=(q,)) for q in queries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status(r)[0] for r in replies] == ["granted"] * 100
    assert len({tst_info(r)["serial_number"].native for r in replies}) == 100
    assert tsa.counts.granted - granted_before == 100  # counted for the log, not audited one by one
    assert "Verification: OK" in verify(tmp_path, replies[-1], tsa_ctx.authority("root").der)


@pytest.fixture
def tsa_app(tsa_ctx):
    """Just the TSA blueprint in an app, as the composition root wires it, on this test's database."""
    app = Flask("tsa-test")
    errors.install(app)  # problem+json answers, as the web layer gives every app
    services = component.Services(settings=None, engine=None, sessions=tsa_ctx.sessions, keys=None)
    services.add("ca", tsa_ctx)
    component.install(app, services)
    app.register_blueprint(tsa_api.bp)
    return app


def test_view_speaks_rfc_3161_over_http_and_refuses_the_rest(tsa_app, tsa_ctx, tmp_path):
    client = tsa_app.test_client()
    q = query(tmp_path, "-sha256", "-cert")
    response = client.post("/pki/tsa", data=q, content_type="application/timestamp-query")
    assert response.status_code == 200 and response.mimetype == "application/timestamp-reply"
    assert "Verification: OK" in verify(tmp_path, response.data, tsa_ctx.authority("root").der)

    response = client.post("/pki/tsa", data=q, content_type="application/octet-stream")
    assert response.status_code == 415 and response.mimetype == problems.MEDIA_TYPE
    assert "application/timestamp-query" in response.json["detail"]
    response = client.get("/pki/tsa")
    assert response.status_code == 405 and response.mimetype == problems.MEDIA_TYPE and "POST" in response.headers["Allow"]

    big = client.post("/pki/tsa", data=b"\x30" * (64 * 1024), content_type="application/timestamp-query")
    assert big.status_code == 200 and status(big.data)[:2] == ("rejection", {"bad_data_format"})
    garbage = client.post("/pki/tsa", data=os.urandom(300), content_type="application/timestamp-query")
    assert garbage.status_code == 200 and status(garbage.data)[:2] == ("rejection", {"bad_data_format"})


# -- against a running server -----------------------------------------------------------------


@pytest.fixture(scope="session")
def instance_chain(initialised_instance) -> dict[str, bytes]:
    """The CA certificates and the TSA certificate of the served instance, read from its database."""
    from core import settings as settings_module

    engine = create_engine(settings_module.load(initialised_instance, environ={}).database_url)
    try:
        with Session(engine) as session:
            chain = {a.name: a.certificate for a in session.scalars(select(Authority))}
            chain["tsa"] = hierarchy.service_certificate(session, tsa.TSA_PROFILE, tsa.TSA_AUTHORITY).der
            return chain
    finally:
        engine.dispose()


def post(url: str, body: bytes, content_type: str = "application/timestamp-query", method: str = "POST"):
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), error.read()


@pytest.fixture(scope="session")
def tsa_url(running_server):
    """``/pki/tsa`` on the running ``hallmark serve``."""
    return running_server + "/pki/tsa"


def test_openssl_query_over_http_verifies_against_the_root(tsa_url, instance_chain, tmp_path):
    code, content_type, reply = post(tsa_url, query(tmp_path, "-sha256", "-cert"))
    assert (code, content_type) == (200, "application/timestamp-reply")
    assert "Verification: OK" in verify(tmp_path, reply, instance_chain["root"])
    info = tst_info(reply)
    assert info["policy"].dotted == tsa.TSA_POLICY
    assert abs(info["gen_time"].native - datetime.now(UTC)) < timedelta(seconds=5)

    code, _, second = post(tsa_url, query(tmp_path, "-sha512"))  # no -cert: the client brings the chain
    assert code == 200 and tst_info(second)["serial_number"].native != info["serial_number"].native
    assert not tsa.TimeStampResp.load(second)["time_stamp_token"]["content"]["certificates"].native
    chain = [instance_chain["tsa"], instance_chain["services"]]
    assert "Verification: OK" in verify(tmp_path, second, instance_chain["root"], untrusted=chain)


def test_pyhanko_timestamps_over_http_and_validates_against_our_root(tsa_url, instance_chain):
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign.timestamps import HTTPTimeStamper
    from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
    from pyhanko.sign.validation.status import TimestampSignatureStatus
    from pyhanko_certvalidator import ValidationContext

    digest = hashlib.sha256(DATA).digest()

    async def stamp_and_validate():
        token = await HTTPTimeStamper(tsa_url).async_timestamp(digest, "sha256")  # checks our nonce echo too
        context = ValidationContext(
            trust_roots=[asn1_x509.Certificate.load(instance_chain["root"])],
            # The instance's certificates point at the port 'hallmark init' assumed, not this server's.
            allow_fetching=False,
            revocation_mode="soft-fail",
        )
        kwargs = await validate_tst_signed_data(token["content"], context, lambda algorithm: hashlib.new(algorithm, DATA).digest())
        return TimestampSignatureStatus(**kwargs)

    result = asyncio.run(stamp_and_validate())
    assert result.intact and result.valid and result.trusted, result.describe_timestamp_trust()
    assert result.signing_cert.subject.native["common_name"] == "Hallmark Time-Stamping Authority"
    assert abs(result.timestamp - datetime.now(UTC)) < timedelta(seconds=5)


def test_bad_requests_over_http_get_an_answer_never_a_500(tsa_url, tmp_path):
    code, content_type, reply = post(tsa_url, query(tmp_path, "-sha1", "-cert"))
    assert (code, content_type) == (200, "application/timestamp-reply") and status(reply)[:2] == ("rejection", {"bad_alg"})
    code, _, reply = post(tsa_url, os.urandom(500))
    assert code == 200 and status(reply)[:2] == ("rejection", {"bad_data_format"})
    code, _, reply = post(tsa_url, query(tmp_path, "-sha256", "-tspolicy", "1.2.3.4"))
    assert code == 200 and status(reply)[:2] == ("rejection", {"unaccepted_policy"})
    code, _, reply = post(tsa_url, b"\x30" * (tsa.MAX_REQUEST_BYTES + 100))
    assert code == 200 and status(reply)[:2] == ("rejection", {"bad_data_format"})
    code, content_type, _ = post(tsa_url, query(tmp_path), content_type="application/json")
    assert (code, content_type) == (415, problems.MEDIA_TYPE)
    code, content_type, _ = post(tsa_url, b"", method="GET")
    assert (code, content_type) == (405, problems.MEDIA_TYPE)
