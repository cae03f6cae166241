"""Fixtures and outside judges for the signing tests: sample PDFs, pdfsig with an NSS database, qpdf.

``signing_world`` is one Hallmark instance whose public URL is fixed before
``hallmark init``, so the AIA and CRL URLs in its certificates point at the
server the tests start: pdfsig (NSS) asks that OCSP responder itself.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, run_hallmark, start_server, stop_server

DEPARTMENT = "示范市市场监督管理局"
DEPARTMENT_CODE = "91350100M000100Y43"
OTHER_DEPARTMENT = "示范市自然资源局"
OTHER_CODE = "11350100MB000000"  # 16 characters; valid_credit_code adds both check characters
ENTERPRISE = "示范科技有限公司"
ENTERPRISE_CODE_PREFIX = "91350100MA000000"


def valid_credit_code(first16: str) -> str:
    """A valid code from 16 characters: the organisation-code check, then the code's own check character."""
    from core.identifiers import generate_credit_code, organisation_code_check_char

    return generate_credit_code(first16 + organisation_code_check_char(first16[8:16]))


def make_pdf(text: str = "Hallmark test document", pages: int = 1) -> bytes:
    """A small PDF with a line of text on each page (Helvetica), written by pyHanko."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.writer import PdfFileWriter

    writer = PdfFileWriter()
    font = writer.add_object(
        generic.DictionaryObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/Font"),
                generic.NameObject("/Subtype"): generic.NameObject("/Type1"),
                generic.NameObject("/BaseFont"): generic.NameObject("/Helvetica"),
            }
        )
    )
    for number in range(pages):
        content = writer.add_object(generic.StreamObject(stream_data=f"BT /F1 14 Tf 72 760 Td ({text} - page {number + 1}) Tj ET".encode()))
        writer.insert_page(
            generic.DictionaryObject(
                {
                    generic.NameObject("/Type"): generic.NameObject("/Page"),
                    generic.NameObject("/MediaBox"): generic.ArrayObject([generic.NumberObject(n) for n in (0, 0, 595, 842)]),
                    generic.NameObject("/Contents"): content,
                    generic.NameObject("/Resources"): generic.DictionaryObject(
                        {
                            generic.NameObject("/Font"): generic.DictionaryObject({generic.NameObject("/F1"): font}),
                        }
                    ),
                }
            )
        )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_pdf() -> bytes:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.pdf_utils.writer import copy_into_new_writer

    writer = copy_into_new_writer(PdfFileReader(io.BytesIO(make_pdf("secret"))))
    writer.encrypt("owner-pass", "user-pass")
    out = io.BytesIO()
    writer.write(out)
    assert IncrementalPdfFileWriter  # the same library reads it back in the tests
    return out.getvalue()


def tamper(signed: bytes, old: bytes = b"Hallmark test document", new: bytes = b"Hallmark TEST document") -> bytes:
    """Change signed page text in place (same length), leaving the file's structure intact."""
    assert len(old) == len(new) and signed.count(old) >= 1
    return signed.replace(old, new, 1)


# -- outside judges -----------------------------------------------------------------------------


def nss_database(directory: Path, root_der: bytes) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{directory}", "--empty-password"], check=True, capture_output=True)
    (directory / "root.der").write_bytes(root_der)
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{directory}", "-n", "hallmark-root", "-t", "CT,C,C", "-i", directory / "root.der"],
        check=True,
        capture_output=True,
    )
    return f"sql:{directory}"


@dataclass
class PdfsigSignature:
    number: int
    lines: list[str]

    def value(self, key: str) -> str | None:
        for line in self.lines:
            stripped = line.strip().lstrip("- ")
            if stripped.startswith(key + ":"):
                return stripped.split(":", 1)[1].strip()
        return None

    @property
    def signature_valid(self) -> bool:
        return self.value("Signature Validation") == "Signature is Valid."

    @property
    def certificate_trusted(self) -> bool:
        return self.value("Certificate Validation") == "Certificate is Trusted."


def pdfsig(path: Path, nssdir: str) -> list[PdfsigSignature]:
    """poppler's verdict per signature (its exit status says nothing, so its output is read)."""
    result = subprocess.run(["pdfsig", "-nssdir", nssdir, str(path)], capture_output=True, text=True, timeout=120)
    signatures: list[PdfsigSignature] = []
    for line in result.stdout.splitlines():
        match = re.match(r"^Signature #(\d+):", line)
        if match:
            signatures.append(PdfsigSignature(int(match.group(1)), []))
        elif signatures:
            signatures[-1].lines.append(line)
    return signatures


def qpdf_clean(path: Path) -> tuple[bool, str]:
    result = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True, timeout=120)
    text = result.stdout + result.stderr
    return result.returncode == 0 and "No syntax or stream encoding errors found" in text, text


def pyhanko_ades(pdf: bytes, root_der: bytes, intermediates_der: list[bytes], crls_der: list[bytes]) -> list[tuple[str, str | None]]:
    """pyHanko's own ETSI validation, set up here independently of signing/: (status, sub-indication) per signature."""
    import asyncio

    from asn1crypto import crl as asn1_crl
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.ades.report import AdESStatus
    from pyhanko.sign.validation import ades
    from pyhanko.sign.validation.ades import _dss_to_local_knowledge  # pyHanko's own reading of the DSS
    from pyhanko.sign.validation.policy_decl import (
        LocalKnowledge,
        PdfSignatureValidationSpec,
        RevinfoOnlineFetchingRule,
        RevocationInfoGatheringSpec,
        SignatureValidationSpec,
    )
    from pyhanko.sign.validation.settings import KeyUsageConstraints
    from pyhanko.sign.validation.status import PdfSignatureStatus
    from pyhanko_certvalidator.context import CertValidationPolicySpec
    from pyhanko_certvalidator.ltv.poe import KnownPOE, POEType, digest_for_poe
    from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy, RevocationCheckingRule
    from pyhanko_certvalidator.registry import SimpleTrustManager
    from pyhanko_certvalidator.revinfo.archival import CRLContainer

    root = asn1_x509.Certificate.load(root_der)
    intermediates = [asn1_x509.Certificate.load(d) for d in intermediates_der]
    reader = PdfFileReader(io.BytesIO(pdf))
    dss = _dss_to_local_knowledge(reader)
    rule = RevocationCheckingRule.CRL_OR_OCSP_REQUIRED
    spec = SignatureValidationSpec(
        cert_validation_policy=CertValidationPolicySpec(
            trust_manager=SimpleTrustManager.build(trust_roots=[root]),
            revinfo_policy=CertRevTrustPolicy(RevocationCheckingPolicy(rule, rule)),
        ),
        revinfo_gathering_policy=RevocationInfoGatheringSpec(online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY),
        local_knowledge=LocalKnowledge(
            known_certs=intermediates + dss.known_certs,
            known_ocsps=dss.known_ocsps,
            known_crls=dss.known_crls + [CRLContainer(asn1_crl.CertificateList.load(d)) for d in crls_der],
            known_poes=[KnownPOE(POEType.PROVIDED, digest_for_poe(c.dump()), c.not_valid_before) for c in [root, *intermediates]],
        ),
        key_usage_settings=KeyUsageConstraints(key_usage={"non_repudiation", "digital_signature"}),
    )
    verdicts = []
    embedded = list(reader.embedded_signatures)
    for signature in embedded:
        if signature.sig_object_type == "/DocTimeStamp":
            continue
        signature.compute_integrity_info()
        later_timestamps = any(s.sig_object_type == "/DocTimeStamp" and s.signed_revision > signature.signed_revision for s in embedded)
        if later_timestamps:
            result = asyncio.run(ades.ades_lta_validation(signature, PdfSignatureValidationSpec(spec)))
        else:
            timestamped = any(a["type"].native == "signature_time_stamp_token" for a in (signature.signer_info["unsigned_attrs"] or []))
            function = ades.ades_with_time_validation if timestamped else ades.ades_basic_validation
            kwargs = {"raw_digest": signature.compute_digest()}
            if timestamped:
                kwargs.update(extra_status_kwargs=signature.summarise_integrity_info(), status_cls=PdfSignatureStatus)
            result = asyncio.run(function(signature.signed_data, spec, **kwargs))
        status = result.ades_subindic.status
        verdicts.append((status.name, None if status is AdESStatus.PASSED else result.ades_subindic.name))
    return verdicts


# -- a running Hallmark with a seal and a client ------------------------------------------------


@dataclass
class SigningWorld:
    instance: Path
    base: str
    client_id: str
    client_secret: str
    other_client_id: str
    other_client_secret: str
    nssdir: str
    root_der: bytes
    process: subprocess.Popen

    def token(self, scope: str = "sign:seal sign:validate sign:remote", other: bool = False) -> str:
        client, secret = (self.other_client_id, self.other_client_secret) if other else (self.client_id, self.client_secret)
        meta = requests.get(self.base + "/.well-known/openid-configuration", timeout=10).json()
        answer = requests.post(
            meta["token_endpoint"], data={"grant_type": "client_credentials", "scope": scope}, auth=(client, secret), timeout=10
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def hallmark(self, *args, **kwargs):
        return run_hallmark(self.instance, *args, HALLMARK_PUBLIC_URL=self.base, **kwargs)

    def crls_der(self) -> list[bytes]:
        """The CRLs the server publishes, for an outside validator."""
        return [requests.get(f"{self.base}/pki/crl/{name}.crl", timeout=10).content for name in ("root", "services", "people")]

    def intermediates_der(self) -> list[bytes]:
        """The issuing CAs' certificates the server publishes, as DER."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        found = []
        for name in ("services", "people"):
            data = requests.get(f"{self.base}/pki/ca/{name}.crt", timeout=10).content
            found.append(data if data[:1] == b"\x30" else x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER))
        return found


def start_world(tmp_path_factory) -> SigningWorld:
    instance = tmp_path_factory.mktemp("signing-instance")
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def hallmark(*args):
        result = run_hallmark(instance, *args, HALLMARK_PUBLIC_URL=base)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    hallmark("init")
    hallmark("sign", "seal", "add", "--department", DEPARTMENT, "--credit-code", DEPARTMENT_CODE)
    hallmark("sign", "seal", "add", "--department", OTHER_DEPARTMENT, "--credit-code", valid_credit_code(OTHER_CODE))
    added = json.loads(
        hallmark(
            "idp",
            "client",
            "add",
            "--name",
            "市场监管审批系统",
            "--client-id",
            "market-approval",
            "--grant",
            "client_credentials",
            "--scope",
            "sign:seal sign:validate sign:remote",
            "--json",
        ).stdout
    )
    other = json.loads(
        hallmark(
            "idp",
            "client",
            "add",
            "--name",
            "自然资源审批系统",
            "--client-id",
            "land-approval",
            "--grant",
            "client_credentials",
            "--scope",
            "sign:seal sign:validate sign:remote",
            "--json",
        ).stdout
    )
    hallmark("sign", "seal", "grant", "market-approval", DEPARTMENT_CODE)
    hallmark("sign", "seal", "grant", "land-approval", OTHER_DEPARTMENT)
    process, _ = start_server(instance, workers=2, port=port, log=instance / "server.log", HALLMARK_PUBLIC_URL=base)
    root_der = requests.get(base + "/pki/ca/root.crt", timeout=10).content
    if root_der.startswith(b"-----"):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        root_der = x509.load_pem_x509_certificate(root_der).public_bytes(Encoding.DER)
    nssdir = nss_database(tmp_path_factory.mktemp("nss"), root_der)
    return SigningWorld(
        instance, base, added["client_id"], added["client_secret"], other["client_id"], other["client_secret"], nssdir, root_der, process
    )


@pytest.fixture(scope="session")
def signing_world(tmp_path_factory):
    world = start_world(tmp_path_factory)
    yield world
    stop_server(world.process)
