"""Per-client limits on the CA's signing endpoints (issue 18 item 5), on SQLite and PostgreSQL.

* OCSP: only what the responder must sign for the request (a nonce, a serial we
  never issued, several CertIDs) counts against ``ocsp_signed``; a pre-signed answer
  (the hot path, bench/ocsp.py's) is never counted nor refused. Past the limit:
  the protocol's ``tryLater`` with HTTP 429 and ``Retry-After``.
* TSA: every time-stamp (an HSM signature) counts against ``tsa``; past it a
  timestamp-reply rejecting the request, with HTTP 429 and ``Retry-After``.
* A certificate validation (a USB-key login) that waits for an external CA's CRL
  ends at its time bound, not after every fetch has run out.

Two apps, each with the CA's blueprints, its own responder and its own caches (two
CA contexts on one database) play two workers: a limit holds across them.
"""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from cryptography.x509 import ocsp as x509_ocsp
from flask import Flask

from ca import trust, validation
from ca.settings import CASettings
from ca.status import api as pki_api
from ca.tsa import api as tsa_api
from ca.tsa import responder as tsa
from core import component
from core.web import errors
from tests.ca.test_ca_crl_ocsp import issue, ocsp_request
from tests.ca.test_ca_tsa import query, status

LIMITS = CASettings(ocsp_signed_burst=3, ocsp_signed_per_minute=0.01, tsa_burst=3, tsa_per_minute=0.01)  # no refill during a test


def worker(ctx):
    """One worker's app: the CA's PKI and TSA blueprints (with the OCSP fast path) on a CA context of its own."""
    own = replace(ctx, settings=LIMITS, cache={}, _signers={}, _authorities={})
    app = Flask("ca-limits")
    errors.install(app)
    services = component.Services(settings=None, engine=None, sessions=own.sessions, keys=None)
    services.add("ca", own)
    component.install(app, services)
    app.register_blueprint(pki_api.bp)
    app.register_blueprint(tsa_api.bp)
    return app


@pytest.fixture
def workers(ca_context):
    yield worker(ca_context), worker(ca_context)
    tsa.forget(ca_context)


def post(app, address: str, path: str, body: bytes, content_type: str):
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    return browser.post(path, data=body, content_type=content_type)


def ocsp(app, address: str, body: bytes):
    return post(app, address, "/pki/ocsp", body, "application/ocsp-request")


def response_status(answer) -> x509_ocsp.OCSPResponseStatus:
    return x509_ocsp.load_der_ocsp_response(answer.data).response_status


def test_ocsp_limits_signed_answers_per_address_across_workers_and_never_the_presigned(ca_context, workers):
    a, b = workers
    _, cert = issue(ca_context)
    people = ca_context.authority("people").certificate
    presigned = ocsp_request(cert, people)
    for n in range(10):  # the hot path: never counted
        answer = ocsp(workers[n % 2], "192.0.2.10", presigned)
        assert answer.status_code == 200 and response_status(answer) is x509_ocsp.OCSPResponseStatus.SUCCESSFUL
    for n in range(3):  # answers signed for the request: one allowance for both workers
        answer = ocsp(workers[n % 2], "192.0.2.10", ocsp_request(cert, people, nonce=bytes([n + 1]) * 16))
        assert answer.status_code == 200 and response_status(answer) is x509_ocsp.OCSPResponseStatus.SUCCESSFUL
    for app in (a, b):
        limited = ocsp(app, "192.0.2.10", ocsp_request(cert, people, nonce=b"\x09" * 16))
        assert limited.status_code == 429 and limited.mimetype == "application/ocsp-response"
        assert int(limited.headers["Retry-After"]) >= 1 and limited.headers["Cache-Control"] == "no-store"
        assert response_status(limited) is x509_ocsp.OCSPResponseStatus.TRY_LATER
        # the same client still gets pre-signed answers
        assert ocsp(app, "192.0.2.10", presigned).status_code == 200
    # Another address is not affected.
    other = ocsp(b, "192.0.2.11", ocsp_request(cert, people, nonce=b"\x0a" * 16))
    assert other.status_code == 200 and response_status(other) is x509_ocsp.OCSPResponseStatus.SUCCESSFUL


def test_tsa_is_limited_per_address_across_workers(workers, tmp_path):
    a, b = workers
    q = query(tmp_path, "-sha256", "-cert")
    for n in range(3):
        granted = post(workers[n % 2], "198.51.100.30", "/pki/tsa", q, "application/timestamp-query")
        assert granted.status_code == 200 and status(granted.data)[0] == "granted"
    for app in (a, b):
        limited = post(app, "198.51.100.30", "/pki/tsa", q, "application/timestamp-query")
        assert limited.status_code == 429 and limited.mimetype == "application/timestamp-reply"
        assert int(limited.headers["Retry-After"]) >= 1
        state, failures, text = status(limited.data)
        assert (state, failures) == ("rejection", {"system_failure"}) and "try again in" in text
    other = post(b, "198.51.100.31", "/pki/tsa", q, "application/timestamp-query")
    assert other.status_code == 200 and status(other.data)[0] == "granted"


def test_a_validation_waiting_for_a_silent_crl_server_ends_at_its_time_bound(ca_context):
    from tests.ca.test_ca_trust import ExternalCA, _pem

    silent = socket.create_server(("127.0.0.1", 0))  # takes connections (the kernel's backlog), never answers
    try:
        other = ExternalCA("Silent Test Root CA")
        trust.add_anchor(ca_context, _pem(other.certificate), actor="test", note="its CRL server never answers")
        leaf = other.leaf(crl_url=f"http://127.0.0.1:{silent.getsockname()[1]}/root.crl")
        result = validation.validate(ca_context, leaf, timeout=1)
        assert (result.ok, result.status) == (False, "revocation_unknown")
        assert "within 1 seconds" in result.reason
    finally:
        silent.close()
