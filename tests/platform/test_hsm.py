"""The key manager against a real SoftHSM2 token."""

from __future__ import annotations

import ctypes
import datetime as dt
import io
import multiprocessing
import subprocess
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from hsm import (
    KeyAlgorithm,
    KeyNotFound,
    MalformedURI,
    ModuleNotLoadable,
    PinIncorrect,
    PKCS11KeyManager,
    TokenNotFound,
)
from hsm.errors import HSMError, KeyExists
from hsm.softhsm import default_module
from tests.conftest import TOKEN_LABEL, USER_PIN

_keys: dict[KeyAlgorithm, str] = {}


def key_uri(key_manager, algorithm: KeyAlgorithm) -> str:
    """One key per algorithm for the whole module (RSA generation is slow)."""
    if algorithm not in _keys:
        _keys[algorithm] = key_manager.create_key(f"test-{algorithm.value}", algorithm).uri
    return _keys[algorithm]


def verify(public_key, signature: bytes, data: bytes) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    else:
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))


def sign(signer, data: bytes) -> bytes:
    if isinstance(signer, rsa.RSAPrivateKey):
        return signer.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return signer.sign(data, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_key_generated_in_token_signs_and_cryptography_verifies(key_manager, algorithm):
    uri = key_uri(key_manager, algorithm)
    assert uri.startswith(f"pkcs11:token={TOKEN_LABEL};object=test-{algorithm.value};id=%")
    signer = key_manager.signer(uri)
    public_key = key_manager.public_key(uri)
    assert public_key.public_numbers() == signer.public_key().public_numbers()
    assert public_key.key_size == algorithm.bits
    data = b"\xe7\xbd\x91\xe4\xb8\x8a\xe5\x8a\x9e\xe4\xba\x8b"  # any bytes
    verify(public_key, sign(signer, data), data)
    from cryptography.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):
        verify(public_key, sign(signer, data), data + b"!")


def test_rsa_pss_and_prehashed(key_manager):
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    signer = key_manager.signer(key_uri(key_manager, KeyAlgorithm.RSA_3072))
    public = signer.public_key()
    data = b"pss"
    pss = padding.PSS(padding.MGF1(hashes.SHA384()), padding.PSS.DIGEST_LENGTH)
    public.verify(signer.sign(data, pss, hashes.SHA384()), data, pss, hashes.SHA384())
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    prehashed = signer.sign(digest.finalize(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    public.verify(prehashed, data, padding.PKCS1v15(), hashes.SHA256())


def test_private_key_cannot_be_exported(key_manager):
    signer = key_manager.signer(key_uri(key_manager, KeyAlgorithm.EC_P256))
    with pytest.raises(HSMError, match="never leave"):
        signer.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(HSMError):
        signer.private_numbers()


def test_key_found_by_label_only_and_listed(key_manager):
    uri = key_uri(key_manager, KeyAlgorithm.EC_P384)
    by_label = key_manager.signer(f"pkcs11:token={TOKEN_LABEL};object=test-ec-p384")
    assert by_label.public_key().public_numbers() == key_manager.public_key(uri).public_numbers()
    listed = {k.label: k for k in key_manager.keys()}  # noqa: SIM118 - a key manager, not a dict
    assert listed["test-ec-p384"].uri == uri and listed["test-ec-p384"].algorithm == "ec-p384"


def test_duplicate_label_refused(key_manager):
    key_uri(key_manager, KeyAlgorithm.EC_P256)
    with pytest.raises(KeyExists):
        key_manager.create_key("test-ec-p256", KeyAlgorithm.EC_P256)


def test_certificate_signed_in_hsm_passes_openssl_verify(key_manager, tmp_path):
    """cryptography builds a root and a leaf; the root's key stays in the token."""
    root_key = key_manager.signer(key_uri(key_manager, KeyAlgorithm.EC_P384))
    now = dt.datetime.now(dt.UTC)
    root_name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), x509.NameAttribute(NameOID.COMMON_NAME, "Hallmark Test Root")])
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(root_ski, critical=False)
        .sign(root_key, hashes.SHA384())
    )
    leaf_key = key_manager.signer(key_uri(key_manager, KeyAlgorithm.RSA_2048))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf.example")]))
        .issuer_name(root_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA384())
    )
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", tmp_path / "root.pem", tmp_path / "leaf.pem"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stdout + result.stderr
    # A certificate whose signature is not the root's is refused by the same judge.
    tampered = bytearray(leaf.public_bytes(serialization.Encoding.DER))
    tampered[-5] ^= 0xFF
    (tmp_path / "bad.pem").write_bytes(x509.load_der_x509_certificate(bytes(tampered)).public_bytes(serialization.Encoding.PEM))
    bad = subprocess.run(["openssl", "verify", "-CAfile", tmp_path / "root.pem", tmp_path / "bad.pem"], capture_output=True, text=True)
    assert bad.returncode != 0


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_2048, KeyAlgorithm.EC_P256])
def test_threads_sign_at_the_same_time(key_manager, algorithm):
    signer = key_manager.signer(key_uri(key_manager, algorithm))
    public = signer.public_key()
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(n):
        try:
            start.wait()
            for i in range(60):
                data = f"thread {n} message {i}".encode()
                verify(public, sign(signer, data), data)
        except BaseException as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]


def _sign_in_child(signer, conn):
    try:
        conn.send(("ok", sign(signer, b"from the child")))
    except BaseException as exc:
        conn.send(("error", repr(exc)))


def test_forked_worker_signs(key_manager):
    signer = key_manager.signer(key_uri(key_manager, KeyAlgorithm.EC_P256))
    sign(signer, b"parent first, so the child inherits an initialised module")
    parent_end, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_sign_in_child, args=(signer, child_end))
    child.start()
    assert parent_end.poll(60), "the child did not answer"
    status, payload = parent_end.recv()
    child.join(30)
    assert status == "ok", payload
    verify(signer.public_key(), payload, b"from the child")
    # And the parent still signs afterwards.
    verify(signer.public_key(), sign(signer, b"parent again"), b"parent again")


def test_recovers_when_token_sessions_become_invalid(key_manager):
    signer = key_manager.signer(key_uri(key_manager, KeyAlgorithm.EC_P256))
    sign(signer, b"warm")
    # What a reinserted token or restarted HSM looks like: every session (and the login) gone.
    lib = ctypes.CDLL(default_module())
    slot = key_manager._current_pool().token.slot.slot_id
    assert lib.C_CloseAllSessions(ctypes.c_ulong(slot)) == 0
    verify(signer.public_key(), sign(signer, b"after"), b"after")
    assert key_manager.status().ok


def test_pyhanko_signs_a_pdf_with_an_hsm_key(key_manager):
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.pdf_utils.writer import PdfFileWriter
    from pyhanko.sign import signers
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    from hsm.pyhanko_signer import HSMSigner

    key = key_manager.signer(key_uri(key_manager, KeyAlgorithm.EC_P256))
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Seal Test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    writer = PdfFileWriter()
    writer.insert_page(
        generic.DictionaryObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/Page"),
                generic.NameObject("/MediaBox"): generic.ArrayObject([generic.NumberObject(n) for n in (0, 0, 595, 842)]),
            }
        )
    )
    blank = io.BytesIO()
    writer.write(blank)
    blank.seek(0)
    signed = signers.sign_pdf(
        IncrementalPdfFileWriter(blank),
        signers.PdfSignatureMetadata(field_name="Seal"),
        signer=HSMSigner(key, cert),
    )
    trust = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    status = validate_pdf_signature(
        PdfFileReader(signed).embedded_signatures[0], ValidationContext(trust_roots=[trust], allow_fetching=False)
    )
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()


# -- clear errors ---------------------------------------------------------------------------


def test_unknown_key(key_manager):
    with pytest.raises(KeyNotFound, match="no private key in the token matches"):
        key_manager.signer(f"pkcs11:token={TOKEN_LABEL};id=%DE%AD%BE%EF")
    with pytest.raises(KeyNotFound):
        key_manager.signer("pkcs11:token=another-token;object=test-ec-p256")


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("file:///etc/passwd", "must start with 'pkcs11:'"),
        ("pkcs11:object=a;object=b", "appears twice"),
        ("pkcs11:colour=red", "unknown path attribute"),
        ("pkcs11:id=%G1", "two hex digits"),
        ("pkcs11:type=weird", "type must be one of"),
        ("pkcs11:object", "name=value"),
    ],
)
def test_malformed_uri(key_manager, uri, reason):
    with pytest.raises(MalformedURI, match=reason):
        key_manager.signer(uri)


def test_missing_module():
    manager = PKCS11KeyManager("/nonexistent/libpkcs11.so", TOKEN_LABEL, USER_PIN)
    with pytest.raises(ModuleNotLoadable, match="no such file"):
        manager.keys()
    assert not manager.status().ok


def test_file_that_is_not_a_pkcs11_module():
    manager = PKCS11KeyManager("/usr/lib/x86_64-linux-gnu/libc.so.6", TOKEN_LABEL, USER_PIN)
    with pytest.raises(ModuleNotLoadable, match="C_GetFunctionList"):
        manager.keys()


def test_unknown_token():
    manager = PKCS11KeyManager(default_module(), "no-such-token", USER_PIN)
    with pytest.raises(TokenNotFound, match=f"no token labelled 'no-such-token'.*'{TOKEN_LABEL}'"):
        manager.keys()
    assert "no-such-token" in manager.status().detail


def test_wrong_pin_in_a_fresh_process(tmp_path):
    """Login state is per process, so a wrong PIN is tried where nothing is logged in yet."""
    code = (
        "from hsm import PKCS11KeyManager, PinIncorrect\n"
        "from hsm.softhsm import default_module\n"
        f"m = PKCS11KeyManager(default_module(), {TOKEN_LABEL!r}, '99999999')\n"
        "try:\n    m.keys()\nexcept PinIncorrect as e:\n    print('refused:', e)\n"
    )
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "refused: the token 'hallmark-test' refused the user PIN (wrong PIN)" in result.stdout
    assert "99999999" not in result.stdout + result.stderr
    assert PinIncorrect  # the class the message came from is public API
