"""The licence library's signing key, use receipts and QR payloads, judged by code we did not write.

Signatures are checked with ``cryptography`` alone from the published JWK (no JOSE
library of ours in the loop), the RFC 7638 thumbprint is recomputed by hand, QR
codes are read back by zxing-cpp. The key lives in the session's SoftHSM2 token.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import zxingcpp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from joserfc import jws as jose
from joserfc.jwk import ECKey, RSAKey
from PIL import Image, ImageDraw

from core import jws
from core.identifiers import generate_credit_code, mask_resident_id, organisation_code_check_char
from tests.conftest import ROOT, TOKEN_LABEL, USER_PIN

PUBLIC_URL = "https://zw.example.gov.cn"
ISSUER = generate_credit_code("11350100" + "MB012345" + organisation_code_check_char("MB012345"))
AUTHORITY = generate_credit_code("11100000" + "MB000001" + organisation_code_check_char("MB000001"))


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _context(keys):
    from ca.context import CAContext
    from licenses.context import LicencesContext
    from signing.context import SigningContext

    # Signing needs only the key manager: no database, no CA hierarchy behind these contexts.
    ca = CAContext(sessions=None, keys=keys, public_url=PUBLIC_URL, lookup_key=b"test-lookup-key-0123456789")
    return LicencesContext(signing=SigningContext(ca=ca, public_url=PUBLIC_URL), keys=keys, public_url=PUBLIC_URL, lookup_key=b"k" * 16)


@pytest.fixture
def ctx(key_manager):
    return _context(key_manager)


def _typical(**changes) -> dict:
    from licenses import identifiers

    identifier = str(identifiers.make(AUTHORITY + "001", ISSUER, "2026000123", 1))
    values = {
        "identifier": identifier,
        "type_code": AUTHORITY + "001",
        "issuer_code": ISSUER,
        "holder_masked": mask_resident_id("350102197001010011"),
        "holder_name": "张*明",
        "valid_from": date(2026, 3, 1),
        "valid_until": date(2036, 2, 28),
    }
    return {**values, **changes}


def verify_offline(token: str, jwks: dict) -> tuple[dict, dict]:
    """(header, claims) of an ES256 compact JWS, checked with ``cryptography`` and the JWK Set alone."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(_b64d(header_b64))
    assert header["alg"] == "ES256"
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and "d" not in jwk
    x, y = (int.from_bytes(_b64d(jwk[n]), "big") for n in ("x", "y"))
    public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    raw = _b64d(signature_b64)
    assert len(raw) == 64
    der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{header_b64}.{payload_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))  # raises InvalidSignature
    return header, json.loads(_b64d(payload_b64))


def _labelled(manager, label: str) -> list:
    return [k for k in manager.keys() if k.label == label]  # noqa: SIM118 - a key manager, not a dict


def rfc7638(jwk: dict) -> str:
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    return (
        base64.urlsafe_b64encode(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest())
        .rstrip(b"=")
        .decode()
    )


# -- core.jws with software keys -----------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "make"),
    [
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("ES384", lambda: ec.generate_private_key(ec.SECP384R1())),
        ("ES512", lambda: ec.generate_private_key(ec.SECP521R1())),
        ("RS256", lambda: rsa.generate_private_key(65537, 2048)),
    ],
)
def test_core_jws_tokens_and_jwks_agree_with_joserfc(alg, make):
    private = make()
    jwk = jws.public_jwk(private.public_key(), alg)
    imported = (ECKey if alg.startswith("ES") else RSAKey).import_key(private.public_key())
    assert {k: v for k, v in jwk.items() if k not in ("kid", "use", "alg")} == imported.as_dict(private=False)
    assert jwk["kid"] == jws.thumbprint(private.public_key()) == imported.thumbprint()
    token = jws.compact({"typ": "JWT", "kid": jwk["kid"]}, {"sub": "数", "n": 1}, private, alg)
    decoded = jose.deserialize_compact(token, (ECKey if alg.startswith("ES") else RSAKey).import_key(jwk), algorithms=[alg])
    assert json.loads(decoded.payload) == {"sub": "数", "n": 1} and decoded.headers()["alg"] == alg


def test_core_jws_refuses_a_key_that_does_not_fit_the_algorithm():
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="ES384 needs an EC key on secp384r1"):
        jws.compact({}, {}, p256, "ES384")
    with pytest.raises(ValueError, match="RS256 needs an RSA key"):
        jws.compact({}, {}, p256, "RS256")
    with pytest.raises(ValueError, match="unsupported JWS algorithm 'none'"):
        jws.compact({}, {}, p256, "none")
    with pytest.raises(ValueError, match="header says alg"):
        jws.compact({"alg": "RS256"}, {}, p256, "ES256")
    with pytest.raises(ValueError, match="cannot verify ES384"):
        jws.public_jwk(p256.public_key(), "ES384")


# -- the HSM key, receipts ------------------------------------------------------------------


def test_a_receipt_verifies_with_cryptography_and_the_published_key_alone(ctx):
    from licenses import signer

    claims = {
        "iss": PUBLIC_URL,
        "jti": str(uuid.uuid4()),
        "licence": _typical()["identifier"],
        "purpose": "核验营业执照",
        "iat": 1_790_000_000,
    }
    token = signer.sign(ctx, claims, typ="licence-receipt+jwt")
    published = json.loads(json.dumps(signer.jwks(ctx)))  # what a verifier downloads
    header, got = verify_offline(token, published)
    assert got == claims
    assert header == {"alg": "ES256", "kid": signer.kid(ctx), "typ": "licence-receipt+jwt"}
    assert rfc7638(published["keys"][0]) == header["kid"]
    assert published["keys"][0]["use"] == "sig" and published["keys"][0]["alg"] == "ES256"
    # The key is the labelled one in the token, and only its public half is published.
    (info,) = _labelled(ctx.keys, signer.LABEL)
    assert jws.thumbprint(info.public_key) == header["kid"]
    assert signer.verify(ctx, token, typ="licence-receipt+jwt") == claims


def test_a_changed_receipt_fails_the_independent_check_and_ours(ctx):
    from licenses import signer

    token = signer.sign(ctx, {"licence": "A", "result": "match"}, typ="licence-receipt+jwt")
    head, _, signature = token.split(".")
    changed = f"{head}.{jws.b64url(json.dumps({'licence': 'A', 'result': 'no-match'}).encode())}.{signature}"
    with pytest.raises(InvalidSignature):
        verify_offline(changed, signer.jwks(ctx))
    with pytest.raises(signer.Forged, match="signature does not match"):
        signer.verify(ctx, changed, typ="licence-receipt+jwt")


def test_verify_tells_forged_wrong_kind_expired_and_malformed_apart(ctx):
    from licenses import signer

    now = datetime.now(UTC)
    genuine = signer.sign(ctx, {"exp": int(now.timestamp()) + 60}, typ="licence-receipt+jwt")
    # A key of someone else's, claiming to be ours (same kid).
    impostor = jws.compact(
        {"kid": signer.kid(ctx), "typ": "licence-receipt+jwt"}, {"exp": 2**31}, ec.generate_private_key(ec.SECP256R1()), "ES256"
    )
    with pytest.raises(signer.Forged) as forged:
        signer.verify(ctx, impostor, typ="licence-receipt+jwt")
    assert forged.value.code == "forged_token" and forged.value.problem().status == 422
    # Unknown kid: also forged, not an error.
    stranger = jws.compact({"kid": "not-ours", "typ": "licence-receipt+jwt"}, {}, ec.generate_private_key(ec.SECP256R1()), "ES256")
    with pytest.raises(signer.Forged):
        signer.verify(ctx, stranger, typ="licence-receipt+jwt")
    # HS256 with the public key as the secret, the classic confusion: refused.
    head = jws.b64url(json.dumps({"alg": "HS256", "kid": signer.kid(ctx), "typ": "licence-receipt+jwt"}).encode())
    with pytest.raises(signer.Forged, match="ES256"):
        signer.verify(ctx, f"{head}.{jws.b64url(b'{}')}.{jws.b64url(b'x' * 32)}", typ="licence-receipt+jwt")
    with pytest.raises(signer.WrongType) as wrong:
        signer.verify(ctx, genuine, typ="licence-qr+jwt")
    assert wrong.value.code == "wrong_token_type"
    assert signer.verify(ctx, genuine, typ="application/LICENCE-RECEIPT+JWT")  # RFC 7515: case-insensitive, prefix optional
    with pytest.raises(signer.Expired) as expired:
        signer.verify(ctx, genuine, typ="licence-receipt+jwt", now=now + timedelta(minutes=5))
    assert expired.value.code == "expired_token" and "genuine but expired" in str(expired.value)
    for junk in ("", "abc", "a.b.c", "x" * 10_000, genuine.replace(".", "..", 1)):
        with pytest.raises(signer.Malformed):
            signer.verify(ctx, junk, typ="licence-receipt+jwt")


def test_the_key_id_is_the_same_in_another_process(ctx):
    from licenses import signer

    here = signer.kid(ctx)
    # Not importing this module there: tests.conftest would make a token of its own.
    script = (
        "from ca.context import CAContext\n"
        "from hsm import PKCS11KeyManager, softhsm\n"
        "from licenses import signer\n"
        "from licenses.context import LicencesContext\n"
        "from signing.context import SigningContext\n"
        f"keys = PKCS11KeyManager(softhsm.default_module(), {TOKEN_LABEL!r}, {USER_PIN!r})\n"
        f"ca = CAContext(sessions=None, keys=keys, public_url={PUBLIC_URL!r}, lookup_key=b'x' * 16)\n"
        f"ctx = LicencesContext(SigningContext(ca, {PUBLIC_URL!r}), keys, {PUBLIC_URL!r}, b'x' * 16)\n"
        "print(signer.kid(ctx))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == here


def test_two_processes_making_the_key_at_once_end_up_with_one_kid(key_manager, monkeypatch):
    """Two key managers (as two worker processes would have) find no key and race to make it."""
    from hsm import PKCS11KeyManager, softhsm
    from licenses import signer

    monkeypatch.setattr(signer, "LABEL", f"hallmark-licences-race-{uuid.uuid4().hex[:8]}")
    managers = [PKCS11KeyManager(softhsm.default_module(), TOKEN_LABEL, USER_PIN) for _ in range(2)]
    contexts = [_context(m) for m in managers]
    start = threading.Barrier(2)
    kids, errors = [None, None], []

    def run(i):
        try:
            start.wait()
            kids[i] = signer.kid(contexts[i])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        assert kids[0] == kids[1]
        labelled = _labelled(key_manager, signer.LABEL)
        assert labelled, "no key was made"
        assert all({k["kid"] for k in signer.jwks(c)["keys"]} >= {kids[0]} for c in contexts)
        # Whatever the race gave, a token signed by one process verifies in the other.
        token = signer.sign(contexts[0], {"n": 1}, typ="t")
        assert signer.verify(contexts[1], token, typ="t") == {"n": 1}
    finally:
        for m in managers:
            m.close()


# -- QR payloads -----------------------------------------------------------------------------


def _decode_png(png: bytes) -> str:
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(found) == 1 and found[0].format == zxingcpp.BarcodeFormat.QRCode
    return found[0].text


def test_a_file_qr_decoded_by_zxing_verifies_offline(ctx):
    from licenses import qrpayload, signer

    values = _typical()
    text = qrpayload.payload(ctx, **values, kind="file", lifetime=timedelta(days=3650))
    assert text.startswith(f"{PUBLIC_URL}/licences/v#")
    scanned = _decode_png(qrpayload.qr_png(text))
    assert scanned == text
    header, claims = verify_offline(scanned.split("#", 1)[1], json.loads(json.dumps(signer.jwks(ctx))))
    assert header["typ"] == "licence-qr+jwt"
    assert claims["id"] == values["identifier"]
    assert claims["h"] == "350***********0011" and claims["n"] == "张*明"
    assert (claims["vf"], claims["vu"], claims["k"], claims["v"]) == ("2026-03-01", "2036-02-28", "file", 1)
    # Left out to keep the code small: the identifier holds type and issuer, and the status page is the default one.
    assert not {"t", "i", "st"} & set(claims)
    read = qrpayload.read(ctx, scanned)
    assert read["identifier"] == values["identifier"] and read["kind"] == "file" and read["valid_until"] == "2036-02-28"
    assert (read["type_code"], read["issuer_code"]) == (values["type_code"], ISSUER)
    assert read["status_url"] == f"{PUBLIC_URL}/licences/verify/{values['identifier']}"
    assert read["expires_at"] == claims["exp"]
    # A bare JWS (an offline verifier's input) reads the same.
    assert qrpayload.read(ctx, scanned.split("#", 1)[1]) == read
    print(f"\ntypical licence QR text: {len(text)} characters, QR version {_version(text)}")


def _version(text: str) -> int:
    import qrcode

    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(text.encode())
    code.make(fit=True)
    return code.version


def test_a_typical_qr_stays_small_enough_for_a_phone_camera(ctx):
    from licenses import qrpayload

    enterprise = _typical(holder_masked="91350100MA********", holder_name="福州市鼓楼区示例餐饮管理有限公司", valid_until=None)
    for values, kind, lifetime in ((_typical(), "show", timedelta(minutes=3)), (enterprise, "file", timedelta(days=3650))):
        text = qrpayload.payload(ctx, **values, kind=kind, lifetime=lifetime)
        # Version 20 at level M is 97 x 97 modules: 0.3 mm modules on a 30 mm square of a printed file.
        assert _version(text) <= 20, (len(text), _version(text))
        print(f"\n{kind} QR for {values['holder_name']}: {len(text)} characters, version {_version(text)}")


def test_a_forged_qr_and_an_expired_qr_are_refused_with_distinct_errors(ctx):
    from licenses import qrpayload, signer

    now = datetime.now(UTC)
    text = qrpayload.payload(ctx, **_typical(), kind="show", lifetime=timedelta(minutes=3), now=now)
    prefix, _, token = text.partition("#")
    head, body, signature = token.split(".")
    claims = json.loads(_b64d(body))
    claims["vu"] = "2046-02-28"  # a holder stretching the validity
    forged = f"{prefix}#{head}.{jws.b64url(json.dumps(claims, separators=(',', ':'), ensure_ascii=False).encode())}.{signature}"
    with pytest.raises(signer.Forged) as refused:
        qrpayload.read(ctx, forged)
    assert refused.value.code == "forged_token"
    with pytest.raises(InvalidSignature):
        verify_offline(forged.partition("#")[2], signer.jwks(ctx))
    # The same code ten minutes later: genuine, but the 亮证 code has run out.
    later = now + timedelta(minutes=10)
    with pytest.raises(signer.Expired) as expired:
        qrpayload.read(ctx, text, now=later)
    assert expired.value.code == "expired_token" and expired.value.expired_at == claims["exp"]
    assert type(refused.value) is not type(expired.value)
    # Forged and expired at once: forged is what matters.
    with pytest.raises(signer.Forged):
        qrpayload.read(ctx, forged, now=later)
    # A genuine receipt is not a QR payload.
    with pytest.raises(signer.WrongType):
        qrpayload.read(ctx, signer.sign(ctx, {"v": 1}, typ="licence-receipt+jwt"))
    assert qrpayload.read(ctx, text, now=now + timedelta(minutes=2))["kind"] == "show"


def test_a_payload_for_another_kind_of_identifier_carries_type_issuer_and_status(ctx):
    from licenses import qrpayload, signer

    values = _typical(identifier="LEGACY-2019-0042", valid_until="2029-12-31", status_url="https://old.example.gov.cn/status/0042")
    text = qrpayload.payload(ctx, **values, kind="file", lifetime=timedelta(days=1))
    _, claims = verify_offline(text.partition("#")[2], signer.jwks(ctx))
    assert (claims["t"], claims["i"], claims["st"]) == (values["type_code"], ISSUER, values["status_url"])
    read = qrpayload.read(ctx, text)
    assert (read["identifier"], read["type_code"], read["status_url"]) == ("LEGACY-2019-0042", values["type_code"], values["status_url"])


def test_payload_refuses_bad_values(ctx):
    from licenses import qrpayload

    with pytest.raises(ValueError, match="kind"):
        qrpayload.payload(ctx, **_typical(), kind="poster", lifetime=timedelta(minutes=3))
    with pytest.raises(ValueError, match="lifetime"):
        qrpayload.payload(ctx, **_typical(), kind="show", lifetime=timedelta(0))
    with pytest.raises(ValueError, match="valid_from must be a date"):
        qrpayload.payload(ctx, **_typical(valid_from="2026-13-01"), kind="show", lifetime=timedelta(minutes=3))


def test_the_inline_svg_draws_the_same_code(ctx):
    """Rasterise the SVG's path by hand and let zxing read it: the page shows what the PNG shows."""
    from licenses import qrpayload

    text = qrpayload.payload(ctx, **_typical(), kind="show", lifetime=timedelta(minutes=3))
    svg = qrpayload.qr_svg(text, label="亮证二维码 <QR>")
    assert svg.startswith("<svg ") and "<script" not in svg and "href" not in svg
    assert 'aria-label="亮证二维码 &lt;QR&gt;"' in svg
    size = int(re.search(r'viewBox="0 0 (\d+) \1"', svg).group(1))
    scale = 4
    image = Image.new("L", (size * scale, size * scale), 255)
    draw = ImageDraw.Draw(image)
    for x, y, width in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\3z", svg):
        x, y, width = int(x), int(y), int(width)
        draw.rectangle([x * scale, y * scale, (x + width) * scale - 1, (y + 1) * scale - 1], fill=0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    assert _decode_png(out.getvalue()) == text
    assert 'aria-hidden="true"' in qrpayload.qr_svg("x")
