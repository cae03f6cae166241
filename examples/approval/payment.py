"""A stand-in for the payment platform: it takes a fee only on a fee notice it has checked itself.

``POST /payments`` with ``{"case", "amount", "notice": base64 PDF}``. Before "taking" the
money it asks Hallmark to validate the notice (``/api/validate``, with its own client
credentials token), and accepts it only when

* the file's verdict is TOTAL_PASSED and nothing was changed after sealing,
* the seal is the department's (its credit code, PAYMENT_DEPARTMENT), and
* the case and amount it is asked to collect are the ones written in the sealed revision
  (the ``/HallmarkFee`` entry before the signature's byte range ends).

It answers 201 with a payment number (its report back to the approval system), or 422 saying
why not. Configuration: PAYMENT_CLIENT_ID, PAYMENT_CLIENT_SECRET, PAYMENT_PORT, PAYMENT_IDP,
PAYMENT_DEPARTMENT, PAYMENT_HOST (127.0.0.1).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets

import requests
from flask import Flask, request

BYTE_RANGE = re.compile(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]")
FEE = re.compile(rb"/HallmarkFee\s*\((\S+) ([0-9]+\.[0-9]{2})\)")


def create_app(*, client_id: str, client_secret: str, idp: str, department: str) -> Flask:
    app = Flask(__name__)
    idp = idp.rstrip("/")
    taken: dict[str, dict] = {}
    app.extensions["payments"] = taken

    def token() -> str:
        answer = requests.post(
            idp + "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "sign:validate", "resource": idp + "/api/sign"},
            auth=(client_id, client_secret),
            timeout=10,
        )
        answer.raise_for_status()
        return answer.json()["access_token"]

    def refuse(reason: str):
        return {"status": "refused", "reason": reason}, 422

    @app.post("/payments")
    def pay():
        body = request.get_json(silent=True) or {}
        try:
            pdf = base64.b64decode(str(body.get("notice", "")), validate=True)
        except binascii.Error:
            return refuse("the notice is not base64")
        report = requests.post(
            idp + "/api/validate",
            data=pdf,
            headers={"Authorization": "Bearer " + token(), "Content-Type": "application/pdf"},
            timeout=60,
        )
        if report.status_code != 200:
            return refuse(f"Hallmark could not validate the notice ({report.status_code})")
        report = report.json()
        seal = (report.get("signatures") or [{}])[0]
        signer = ((seal.get("signer") or {}).get("identifier") or {}).get("value")
        if report.get("indication") != "TOTAL_PASSED" or seal.get("modified_after_signing"):
            return refuse(f"the seal does not validate: {report.get('indication')} {seal.get('sub_indication') or ''}")
        if signer != department:
            return refuse("the notice is not sealed by the department")
        signed = BYTE_RANGE.search(pdf)
        fee = FEE.search(pdf[: int(signed.group(2))]) if signed else None  # only what the seal covers
        if fee is None or fee.group(1).decode() != body.get("case") or fee.group(2).decode() != body.get("amount"):
            return refuse("the case or amount is not the one on the sealed notice")
        payment = "PAY" + secrets.token_hex(6).upper()
        taken[payment] = {"case": body["case"], "amount": body["amount"], "document": (seal.get("hallmark_document") or {}).get("id")}
        return {"status": "paid", "payment": payment, **taken[payment]}, 201

    return app


def main() -> None:
    from werkzeug.serving import make_server

    port = int(os.environ.get("PAYMENT_PORT", "8005"))
    app = create_app(
        client_id=os.environ["PAYMENT_CLIENT_ID"],
        client_secret=os.environ["PAYMENT_CLIENT_SECRET"],
        idp=os.environ.get("PAYMENT_IDP", "http://127.0.0.1:8000"),
        department=os.environ["PAYMENT_DEPARTMENT"],
    )
    server = make_server(os.environ.get("PAYMENT_HOST", "127.0.0.1"), port, app, threaded=True)
    print(f"payment service on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
