"""PAdES-B-T seals per second through our API against a bare pyHanko PKCS#11 signing loop; the same for validation.

Setup: a fresh instance by ``hallmark init`` in a temp dir (public URL fixed first,
so the certificates point at the server started here), one department seal
(``hallmark sign seal add``), a client_credentials client granted its department,
and ``hallmark serve`` with 2 workers on a free 127.0.0.1 port.

Sealing, the same key (the seal's HSM key in the instance's SoftHSM2 token) and
the same one-page PDF on both sides:

* bare pyHanko: one process, the loop a pyHanko user writes: ``open_pkcs11_session``
  on the token, ``PKCS11Signer`` with the seal certificate (raw ECDSA, as SoftHSM2
  needs), ``HTTPTimeStamper`` against our ``/pki/tsa``, and per document
  ``PdfSigner(...).sign_pdf(IncrementalPdfFileWriter(pdf))``: PAdES, invisible;
* ours: ``POST /api/sign/pdf?level=B-T`` with a bearer token, driven by ``wrk``
  (1 thread, 4 connections, a Lua script posting the PDF); each answer is a PDF
  with a visible stamp (seal image and QR code), recorded and audited.

Validation of one B-T sealed PDF:

* bare pyHanko: ``ades_with_time_validation`` (ETSI EN 319 102-1 5.5, the process
  our report uses for B-T), with a validation spec built once (our root as anchor,
  our issuing CAs, our CRLs), per document: read, integrity and diff analysis,
  validation;
* ours: ``POST /api/validate`` driven by ``wrk`` the same way.

Before timing, one output of each side is checked: pyHanko's validator must pass
the bare side's PDF and our report must pass ours. Rounds of S seconds alternate
(bare, ours; ours, bare; ...). The client shares the 2 CPUs with the server.

Usage: python bench/sign.py [--rounds R] [--seconds S] [--quick]
Last two lines: ``sign-ratio=<ours / bare pyHanko>`` and ``validate-ratio=<ours / bare pyHanko>``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OtherLoad, Server, free_port, median, table, wrk

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEPARTMENT, CREDIT_CODE, CLIENT = "示范市市场监督管理局", "91350100M000100Y43", "bench-approval"


def hallmark(instance: Path, base: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLMARK_") and k != "SOFTHSM2_CONF"}
    env.update(HALLMARK_INSTANCE=str(instance), HALLMARK_PUBLIC_URL=base)
    result = subprocess.run([sys.executable, "-m", "hallmark.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        sys.exit(f"hallmark {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def sample_pdf() -> bytes:
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
    content = writer.add_object(generic.StreamObject(stream_data=b"BT /F1 14 Tf 72 760 Td (Certificate of registration) Tj ET"))
    writer.insert_page(
        generic.DictionaryObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/Page"),
                generic.NameObject("/MediaBox"): generic.ArrayObject([generic.NumberObject(n) for n in (0, 0, 595, 842)]),
                generic.NameObject("/Contents"): content,
                generic.NameObject("/Resources"): generic.DictionaryObject(
                    {generic.NameObject("/Font"): generic.DictionaryObject({generic.NameObject("/F1"): font})}
                ),
            }
        )
    )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def lua_post(path: Path, target: str, body_file: Path, token: str) -> Path:
    path.write_text(
        f'local f = io.open("{body_file}", "rb")\n'
        'wrk.method = "POST"\n'
        'wrk.body = f:read("*all")\n'
        "f:close()\n"
        'wrk.headers["Content-Type"] = "application/pdf"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        f'wrk.path = "{target}"\n'
    )
    return path


def post(url: str, body: bytes, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/pdf", "Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, response.read()


class Bare:
    """What a pyHanko user writes: PKCS#11 signer on the token, HTTP TSA, sign and validate in a loop."""

    def __init__(self, instance: Path, base: str, pdf: bytes):
        os.environ["SOFTHSM2_CONF"] = str(instance / "softhsm" / "softhsm2.conf")  # before the module is loaded
        from asn1crypto import crl as asn1_crl
        from asn1crypto import x509 as asn1_x509
        from pyhanko.config.pkcs11 import TokenCriteria
        from pyhanko.sign.pkcs11 import PKCS11Signer, open_pkcs11_session
        from pyhanko.sign.timestamps import HTTPTimeStamper

        from hsm.softhsm import default_module

        settings = (instance / "hallmark.toml").read_text()
        label = next(
            (line.split("=", 1)[1].strip().strip('"') for line in settings.splitlines() if line.startswith("token_label")), "hallmark"
        )
        pin = json.loads((instance / "hsm-pins.json").read_text())["user_pin"]
        with sqlite3.connect(instance / "hallmark.db") as db:
            key_uri, seal_der = db.execute(
                "select s.key_uri, c.der from signing_seals s join ca_certificates c on c.serial = s.certificate_serial"
            ).fetchone()
            services_der = db.execute("select certificate from ca_authorities where name = 'services'").fetchone()[0]
            self.root_der = db.execute("select certificate from ca_authorities where name = 'root'").fetchone()[0]
            people_der = db.execute("select certificate from ca_authorities where name = 'people'").fetchone()[0]
        key_id = bytes.fromhex(key_uri.split("id=", 1)[1].replace("%", ""))
        self.session = open_pkcs11_session(default_module(), token_criteria=TokenCriteria(label=label), user_pin=pin)
        self.signer = PKCS11Signer(
            self.session,
            key_id=key_id,
            signing_cert=asn1_x509.Certificate.load(seal_der),
            ca_chain=[asn1_x509.Certificate.load(services_der)],
            use_raw_mechanism=True,
            other_certs_to_pull=None,
        )
        self.timestamper = HTTPTimeStamper(base + "/pki/tsa")
        self.pdf = pdf
        crls = [urllib.request.urlopen(f"{base}/pki/crl/{name}.crl", timeout=10).read() for name in ("root", "services", "people")]
        self.intermediates = [asn1_x509.Certificate.load(services_der), asn1_x509.Certificate.load(people_der)]
        self.crls = [asn1_crl.CertificateList.load(d) for d in crls]
        self.spec = self._spec()

    def sign(self) -> bytes:
        from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
        from pyhanko.sign import fields, signers

        meta = signers.PdfSignatureMetadata(field_name="Signature", md_algorithm="sha256", subfilter=fields.SigSeedSubFilter.PADES)
        pdf_signer = signers.PdfSigner(meta, self.signer, timestamper=self.timestamper)
        return pdf_signer.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(self.pdf))).getvalue()

    def _spec(self):
        from asn1crypto import x509 as asn1_x509
        from pyhanko.sign.validation.policy_decl import (
            LocalKnowledge,
            RevinfoOnlineFetchingRule,
            RevocationInfoGatheringSpec,
            SignatureValidationSpec,
        )
        from pyhanko.sign.validation.settings import KeyUsageConstraints
        from pyhanko_certvalidator.context import CertValidationPolicySpec
        from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy, RevocationCheckingRule
        from pyhanko_certvalidator.registry import SimpleTrustManager
        from pyhanko_certvalidator.revinfo.archival import CRLContainer

        rule = RevocationCheckingRule.CRL_OR_OCSP_REQUIRED
        return SignatureValidationSpec(
            cert_validation_policy=CertValidationPolicySpec(
                trust_manager=SimpleTrustManager.build(trust_roots=[asn1_x509.Certificate.load(self.root_der)]),
                revinfo_policy=CertRevTrustPolicy(RevocationCheckingPolicy(rule, rule)),
            ),
            revinfo_gathering_policy=RevocationInfoGatheringSpec(online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY),
            local_knowledge=LocalKnowledge(known_certs=self.intermediates, known_crls=[CRLContainer(c) for c in self.crls]),
            key_usage_settings=KeyUsageConstraints(key_usage={"non_repudiation"}),
        )

    def validate(self, pdf: bytes) -> str:
        from pyhanko.pdf_utils.reader import PdfFileReader
        from pyhanko.sign.validation import ades
        from pyhanko.sign.validation.status import PdfSignatureStatus

        signature = PdfFileReader(io.BytesIO(pdf)).embedded_signatures[0]
        signature.compute_integrity_info()
        result = asyncio.run(
            ades.ades_with_time_validation(
                signature.signed_data,
                self.spec,
                raw_digest=signature.compute_digest(),
                extra_status_kwargs=signature.summarise_integrity_info(),
                status_cls=PdfSignatureStatus,
            )
        )
        return result.ades_subindic.status.name


def timed_loop(work, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        work()
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 3

    with tempfile.TemporaryDirectory(prefix="hallmark-bench-sign-") as tmp:
        tmp = Path(tmp)
        instance, port = tmp / "instance", free_port()
        base = f"http://127.0.0.1:{port}"
        print(f"setting up an instance in {instance} ...", flush=True)
        hallmark(instance, base, "init")
        hallmark(instance, base, "sign", "seal", "add", "--department", DEPARTMENT, "--credit-code", CREDIT_CODE)
        client = json.loads(
            hallmark(
                instance,
                base,
                "idp",
                "client",
                "add",
                "--name",
                "bench",
                "--client-id",
                CLIENT,
                "--grant",
                "client_credentials",
                "--scope",
                "sign:seal sign:validate",
                "--json",
            )
        )
        hallmark(instance, base, "sign", "seal", "grant", CLIENT, CREDIT_CODE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALLMARK_") and k != "SOFTHSM2_CONF"}
        env.update(HALLMARK_INSTANCE=str(instance), HALLMARK_PUBLIC_URL=base, HALLMARK_CA_UPKEEP_SECONDS="0")
        server = Server(
            "hallmark",
            [sys.executable, "-m", "hallmark.cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            port,
            env=env,
            cwd=str(ROOT),
            log_dir=tmp,
        )
        with server:
            server.start("/healthz")
            meta = json.loads(urllib.request.urlopen(base + "/.well-known/openid-configuration", timeout=10).read())
            token_request = urllib.request.Request(
                meta["token_endpoint"], data=b"grant_type=client_credentials&scope=sign%3Aseal+sign%3Avalidate", method="POST"
            )
            import base64

            token_request.add_header("Authorization", "Basic " + base64.b64encode(f"{CLIENT}:{client['client_secret']}".encode()).decode())
            token_request.add_header("Content-Type", "application/x-www-form-urlencoded")
            token = json.loads(urllib.request.urlopen(token_request, timeout=10).read())["access_token"]

            pdf = sample_pdf()
            (tmp / "plain.pdf").write_bytes(pdf)
            bare = Bare(instance, base, pdf)

            # Both sides checked once before timing.
            from pyhanko.pdf_utils.reader import PdfFileReader

            bare_signed = bare.sign()
            assert bare.validate(bare_signed) == "PASSED", "bare pyHanko's own output does not validate"
            status, ours_signed = post(base + "/api/sign/pdf?level=B-T", pdf, token)
            assert status == 200 and len(PdfFileReader(io.BytesIO(ours_signed)).embedded_signatures) == 1
            status, body = post(base + "/api/validate", ours_signed, token)
            report = json.loads(body)
            assert report["signatures"][0]["indication"] == "TOTAL_PASSED", report
            assert bare.validate(ours_signed) == "PASSED"
            (tmp / "sealed.pdf").write_bytes(ours_signed)
            sign_lua = lua_post(tmp / "sign.lua", "/api/sign/pdf?level=B-T", tmp / "plain.pdf", token)
            validate_lua = lua_post(tmp / "validate.lua", "/api/validate", tmp / "sealed.pdf", token)

            # Warm-up: both sides, a second each.
            timed_loop(bare.sign, 1)
            wrk(base + "/api/sign/pdf", threads=1, connections=4, seconds=1, script=str(sign_lua))
            timed_loop(lambda: bare.validate(ours_signed), 1)
            wrk(base + "/api/validate", threads=1, connections=4, seconds=1, script=str(validate_lua))

            rows, sign_ratios, validate_ratios = [], [], []
            with OtherLoad() as load:
                for index in range(args.rounds):
                    order = ("bare", "ours") if index % 2 == 0 else ("ours", "bare")
                    rates, notes = {}, []
                    for side in order:
                        if side == "bare":
                            rates["sign bare"] = timed_loop(bare.sign, args.seconds)
                        else:
                            rates["sign ours"], note = wrk(
                                base + "/api/sign/pdf", threads=1, connections=4, seconds=args.seconds, script=str(sign_lua)
                            )
                            notes.append(note)
                    for side in order:
                        if side == "bare":
                            rates["validate bare"] = timed_loop(lambda: bare.validate(ours_signed), args.seconds)
                        else:
                            rates["validate ours"], note = wrk(
                                base + "/api/validate", threads=1, connections=4, seconds=args.seconds, script=str(validate_lua)
                            )
                            notes.append(note)
                    if any(notes):
                        sys.exit(f"errors from wrk in round {index + 1}: {'; '.join(n for n in notes if n)}; see {server.log_path}")
                    sign_ratios.append(rates["sign ours"] / rates["sign bare"])
                    validate_ratios.append(rates["validate ours"] / rates["validate bare"])
                    rows.append(
                        [
                            index + 1,
                            f"{rates['sign bare']:.1f}",
                            f"{rates['sign ours']:.1f}",
                            f"{sign_ratios[-1]:.2f}",
                            f"{rates['validate bare']:.1f}",
                            f"{rates['validate ours']:.1f}",
                            f"{validate_ratios[-1]:.2f}",
                        ]
                    )
            print()
            print(table(["round", "seal/s bare", "seal/s ours", "ratio", "validate/s bare", "validate/s ours", "ratio"], rows))
            print(f"\nother processes used {load.cpus:.2f} CPUs during the run")
            print(f"sign-ratio={median(sign_ratios):.2f}")
            print(f"validate-ratio={median(validate_ratios):.2f}")


if __name__ == "__main__":
    main()
