"""``hallmark-key`` commands (thin: the work is in keyagent.token, .enrol, .agent, .pdf)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import pkcs11
from cryptography.hazmat.primitives import serialization

from keyagent import config as key_config
from keyagent import enrol as enrolment
from keyagent.token import TokenError, UsbKey, display_name, tokens, use_softhsm2_conf


def _module_option(f):
    return click.option(
        "--module",
        "module_path",
        default=None,
        show_default="config file, $HALLMARK_KEY_MODULE, or SoftHSM2 or OpenSC where installed",
        help="path of the USB key's PKCS#11 module",
    )(f)


def _common(f):
    """--config, --module, --token, --softhsm2-conf, --pin-file; merged into a KeyConfig."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="settings file (default ~/.config/hallmark-key/agent.toml or $HALLMARK_KEY_CONFIG)",
    )
    @_module_option
    @click.option("--token", "token_label", default=None, help="label of the token to use (needed when several are present)")
    @click.option("--softhsm2-conf", type=click.Path(dir_okay=False), default=None, help="SoftHSM2 only: its configuration file")
    @click.option(
        "--pin-file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="read the PIN from this file (tests and scripts; otherwise $HALLMARK_KEY_PIN or a prompt)",
    )
    @functools.wraps(f)
    def wrapped(config_path, module_path, token_label, softhsm2_conf, pin_file, **kwargs):
        try:
            settings = key_config.load(config_path)
        except key_config.ConfigError as exc:
            _fail(str(exc))
        settings.module = module_path or settings.module
        settings.token = token_label or settings.token
        settings.softhsm2_conf = softhsm2_conf or settings.softhsm2_conf
        if pin_file:
            settings.pin = Path(pin_file).read_text(encoding="utf-8").strip("\r\n")
        use_softhsm2_conf(settings.softhsm2_conf)
        return f(settings=settings, **kwargs)

    return wrapped


def _fail(message: str, code: int = 1):
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _pin_source(settings: key_config.KeyConfig, label_of):
    """The PIN from settings, or asked for once (never echoed) and kept for this process."""
    asked: list[str] = []

    def pin() -> str:
        if settings.pin:
            return settings.pin
        if not asked:
            asked.append(click.prompt(f"PIN of USB key {label_of()!r}", hide_input=True, err=True))
        return asked[0]

    return pin


def _open(settings: key_config.KeyConfig) -> UsbKey:
    holder: list[UsbKey] = []
    usb = UsbKey(settings.module_path, settings.token, _pin_source(settings, lambda: holder[0].label if holder else "?"))
    holder.append(usb)
    return usb


@click.group()
def main():
    """Use a USB key (any PKCS#11 token) with Hallmark: enrol a certificate, run the local signing agent."""
    # A library's warning (pyHanko's, when a PDF command loads it) goes to the log, not to the terminal.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(logging.NullHandler())


# -- list -----------------------------------------------------------------------------------


def _describe(usb: UsbKey, with_private: bool) -> dict:
    certificates = usb.certificates()
    keys = usb.private_keys() if with_private else usb.public_keys()
    key_ids = {k.key_id for k in keys}
    by_id = {c.key_id: c for c in certificates if not c.is_ca}
    now = datetime.now(UTC)
    return {
        "label": usb.label,
        "manufacturer": usb.summary.manufacturer,
        "model": usb.summary.model,
        "serial": usb.summary.serial,
        "certificates": [
            {
                "id": c.id,
                "label": c.label,
                "subject": c.subject,
                "issuer": display_name(c.certificate.issuer),
                "not_after": c.certificate.not_valid_after_utc.isoformat(),
                "expired": c.certificate.not_valid_after_utc < now,
                "ca": c.is_ca,
                "fingerprint": c.fingerprint,
                "has_key": c.key_id in key_ids,
            }
            for c in certificates
        ],
        "keys": [
            {"id": k.id, "label": k.label, "algorithm": k.algorithm, "certificate": by_id[k.key_id].subject if k.key_id in by_id else None}
            for k in keys
        ],
        "keys_seen": "private" if with_private else "public",
    }


@main.command(name="list")
@_common
@click.option("--login", is_flag=True, help="log in to list private keys too (asks for the PIN)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_tokens(settings, login, as_json):
    """Show the tokens present, their certificates and keys, and which key has a certificate."""
    try:
        present = tokens(settings.module_path)
        labels = [t.label for t in present if settings.token in (None, t.label)]
        described = []
        for label in labels:
            with UsbKey(settings.module_path, label, _pin_source(settings, lambda label=label: label)) as usb:
                described.append(_describe(usb, with_private=login))
    except (TokenError, pkcs11.PKCS11Error) as exc:
        _fail(str(exc) or type(exc).__name__)
    if as_json:
        click.echo(json.dumps({"module": settings.module_path, "tokens": described}, ensure_ascii=False))
        return
    if not described:
        click.echo("no token present" if not settings.token else f"no token labelled {settings.token!r}")
        return
    for token in described:
        click.echo(f"token {token['label']!r}  ({token['manufacturer']} {token['model']}, serial {token['serial']})")
        for c in token["certificates"]:
            if c["ca"]:
                continue
            state = "EXPIRED" if c["expired"] else f"valid until {c['not_after'][:10]}"
            key = "key on token" if c["has_key"] else ("NO KEY on token" if login or token["keys"] else "key not checked")
            click.echo(f"  certificate {c['label']!r}: {c['subject']}, {state}, id {c['id']}, {key}")
        for c in token["certificates"]:
            if c["ca"]:
                click.echo(f"  CA certificate {c['subject']}")
        for k in token["keys"]:
            has = f"certificate: {k['certificate']}" if k["certificate"] else "no certificate"
            click.echo(f"  {'key pair' if login else 'public key'} {k['label']!r}: {k['algorithm']}, id {k['id']}, {has}")
        if not token["certificates"] and not token["keys"]:
            click.echo("  (empty)")


# -- enrolment ------------------------------------------------------------------------------


@main.command(name="enroll")
@_common
@click.option("--profile", type=click.Choice(enrolment.PROFILES), required=True)
@click.option("--name", required=True, help="your legal name (person-auth) or the enterprise's registered name")
@click.option("--resident-id", default=None, help="person-auth: your resident ID number")
@click.option("--credit-code", default=None, help="enterprise-auth: the unified social credit code")
@click.option("--idp", "idp_url", default=None, help="the Hallmark server (default from the config file, or http://127.0.0.1:8000)")
@click.option("--access-token", default=None, help="use this access token instead of logging in through the browser (scripts, tests)")
@click.option("--no-browser", is_flag=True, help="only print the login URL, do not open a browser")
def enroll(settings, profile, name, resident_id, credit_code, idp_url, access_token, no_browser):
    """Generate a key pair on the USB key, have Hallmark certify it, and store the certificate there."""
    if profile == "person-auth" and (not resident_id or credit_code):
        _fail("person-auth needs --resident-id (and no --credit-code)", 2)
    if profile == "enterprise-auth" and (not credit_code or resident_id):
        _fail("enterprise-auth needs --credit-code (and no --resident-id)", 2)
    idp_url = idp_url or settings.idp
    access_token = access_token or os.environ.get("HALLMARK_KEY_ACCESS_TOKEN")
    try:
        enrolment.check_server_url(idp_url)
        with _open(settings) as usb:
            usb.login()  # ask for the PIN before the browser round trip, and fail early on a wrong one
            if not access_token:
                from keyagent import oauth

                access_token = oauth.obtain_access_token(idp_url, say=click.echo, open_browser=not no_browser)
            done = enrolment.enrol(
                usb,
                profile=profile,
                name=name,
                idp_url=idp_url,
                access_token=access_token,
                resident_id=resident_id,
                credit_code=credit_code,
            )
    except enrolment.EnrolmentFailed as exc:
        _fail(f"{exc} (nothing was stored on the USB key)")
    except (TokenError, pkcs11.PKCS11Error) as exc:
        _fail(str(exc) or type(exc).__name__)
    click.echo(f"generated an EC P-256 key pair inside token {done.token!r} (label {done.key_label!r}, id {done.key_id.hex()})")
    click.echo(f"enrolled {profile} certificate {done.serial}")
    click.echo(f"  subject     {display_name(done.certificate.subject)}")
    click.echo(f"  valid until {done.certificate.not_valid_after_utc:%Y-%m-%d}")
    click.echo(f"stored it on the token with {len(done.chain)} CA certificate(s) of its chain")


@main.command(name="request")
@_common
@click.option("--profile", type=click.Choice(enrolment.PROFILES), required=True)
@click.option("--name", required=True, help="the name to put in the request (the CA takes the subject from the proofed identity)")
def request_csr(settings, profile, name):
    """Generate a key pair on the USB key and print a CSR for it (enrolment at a counter)."""
    try:
        with _open(settings) as usb:
            key_id, label, csr = enrolment.make_key_and_csr(usb, profile, name)
    except (enrolment.EnrolmentFailed, TokenError, pkcs11.PKCS11Error) as exc:
        _fail(str(exc) or type(exc).__name__)
    click.echo(f"generated key {label!r} (id {key_id.hex()}) on token {usb.label!r}", err=True)
    click.echo(csr.public_bytes(serialization.Encoding.PEM).decode(), nl=False)


@main.command(name="import-certificate")
@_common
@click.argument("bundle", type=click.File("rb"))
def import_certificate(settings, bundle):
    """Store a certificate (PEM, followed by its CA chain) beside the key it certifies."""
    from cryptography import x509

    data = bundle.read(1024 * 1024)
    try:
        leaf = x509.load_pem_x509_certificates(data)[0]
        with _open(settings) as usb:
            found = enrolment.key_for_certificate(usb, leaf)
            if found is None:
                _fail("no key on the USB key matches this certificate")
            key_id, label = found
            leaf, chain = enrolment.store(usb, key_id, label, data)
    except ValueError:
        _fail("the input is not a PEM certificate")
    except (enrolment.EnrolmentFailed, TokenError, pkcs11.PKCS11Error) as exc:
        _fail(str(exc) or type(exc).__name__)
    click.echo(f"stored {display_name(leaf.subject)} with key {label!r} (id {key_id.hex()}) and {len(chain)} CA certificate(s)")


# -- the local agent ------------------------------------------------------------------------


@main.command(name="serve")
@_common
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="port on 127.0.0.1 (default 17443 or the config file's)")
@click.option(
    "--allow-origin", "origins", multiple=True, help="a hall origin allowed to ask for signatures (repeatable; added to the config file's)"
)
@click.option(
    "--request-lifetime",
    type=click.IntRange(1, 600),
    default=None,
    hidden=True,
    help="seconds a signing request waits for the holder's confirmation (default 120; tests)",
)
def serve(settings, port, origins, request_lifetime):
    """Run the local signing agent on 127.0.0.1 for the configured hall origins."""
    from keyagent import agent as local_agent
    from keyagent import approval

    logging.basicConfig(level=logging.INFO, format="%(asctime)s hallmark-key: %(message)s", stream=sys.stderr)
    try:
        allowed = list(dict.fromkeys([*settings.allowed_origins, *(key_config.normalise_origin(o) for o in origins)]))
    except key_config.ConfigError as exc:
        _fail(str(exc), 2)
    if not allowed:
        _fail("no hall origin is allowed: add allowed_origins to the config file or pass --allow-origin https://hall.example", 2)
    port = port or settings.port
    try:
        usb = _open(settings)
        usb.login()  # the PIN is asked for now, once, and a wrong one stops the agent here
        identities = usb.identities()
        agent = local_agent.Agent(usb, allowed, port, request_lifetime=request_lifetime or approval.LIFETIME)
    except (TokenError, pkcs11.PKCS11Error) as exc:
        _fail(str(exc) or type(exc).__name__)

    def ready(server):
        click.echo(
            f"hallmark-key agent listening on http://127.0.0.1:{server.server_port} (token {usb.label!r}, "
            f"{len(identities)} certificate(s)); allowed origins: {', '.join(allowed)}; "
            f"every signature waits for your confirmation on http://127.0.0.1:{server.server_port}/confirm/...",
            err=True,
        )
        click.echo(f"ready http://127.0.0.1:{server.server_port}")
        sys.stdout.flush()

    try:
        local_agent.serve(agent, on_ready=ready)
    except OSError as exc:
        _fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass
    finally:
        usb.close()


# -- signing PDFs with the USB key (keyagent/pdf.py) ----------------------------------------


def _pdf_signer(settings):
    from keyagent import pdf as key_pdf

    pin = _pin_source(settings, lambda: settings.token or "USB key")()
    session = key_pdf.open_token(settings.module_path, settings.token, pin)
    identity = key_pdf.find_identity(session)
    return session, identity, key_pdf.pkcs11_signer(session, identity)


def _write_pdf(target: str, data: bytes) -> None:
    path = Path(target)
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    partial.replace(path)


@main.command(name="sign-pdf")
@_common
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--level", type=click.Choice(["B-B", "B-T"]), default="B-B", show_default=True)
@click.option("--tsa", "tsa_url", default=None, help="RFC 3161 time-stamping URL for B-T, e.g. https://hallmark.example/pki/tsa")
@click.option("--reason", default=None)
def sign_pdf(settings, source, target, level, tsa_url, reason):
    """Sign the PDF SOURCE on the USB key, offline (pyHanko over PKCS#11), and write TARGET."""
    from keyagent import pdf as key_pdf

    try:
        session, identity, signer = _pdf_signer(settings)
        try:
            signed = key_pdf.sign_pdf(Path(source).read_bytes(), signer, level=level, tsa_url=tsa_url, reason=reason)
        finally:
            session.close()
    except key_pdf.SigningFailed as exc:
        _fail(str(exc))
    _write_pdf(target, signed)
    click.echo(f"signed by {identity.certificate.subject.human_friendly} at PAdES {level}: {target}")


@main.command(name="sign-remote")
@_common
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--server", default=None, help="the Hallmark server (default from the config file)")
@click.option(
    "--access-token",
    envvar="HALLMARK_KEY_ACCESS_TOKEN",
    required=True,
    help="bearer token with scope sign:remote (or $HALLMARK_KEY_ACCESS_TOKEN)",
)
@click.option("--level", type=click.Choice(["B-B", "B-T", "B-LT", "B-LTA"]), default="B-LT", show_default=True)
@click.option("--expect", "expected", default=None, help="refuse unless the certificate states this resident ID / credit code")
@click.option("--reason", default=None)
def sign_remote(settings, source, target, server, access_token, level, expected, reason):
    """Sign SOURCE with the USB key through the server (timestamp and revocation data added there); write TARGET."""
    from keyagent import pdf as key_pdf

    try:
        session, identity, signer = _pdf_signer(settings)
        try:
            finished = key_pdf.sign_remote(
                server or settings.idp,
                access_token,
                Path(source).read_bytes(),
                signer,
                identity,
                level=level,
                expected_identifier=expected,
                reason=reason,
            )
        finally:
            session.close()
    except key_pdf.SigningFailed as exc:
        _fail(str(exc))
    _write_pdf(target, finished["pdf"])
    signer_info = finished["signer"]
    click.echo(f"signed at PAdES {finished['level']}: {target}")
    click.echo(f"signer: {signer_info['name']} ({signer_info['identifier_kind']} {signer_info['identifier_masked']})")
    click.echo(f"verification page: {finished['verify_url']}")


if __name__ == "__main__":
    main()
