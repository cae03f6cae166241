"""``hallmark ca ...``: thin commands over the CA's service modules.

The composition root puts an object with a ``ca()`` method (returning a
:class:`~ca.context.CAContext`) on the root click context.
"""

from __future__ import annotations

from pathlib import Path

import click

from ca import hierarchy, issuance, queries, revocation
from ca.context import CAContext


def _ctx() -> CAContext:
    return click.get_current_context().find_root().obj.ca()


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None


@click.group(name="ca")
def ca():
    """Certificate authority: hierarchy, issuance, revocation, trust."""


@ca.command()
def init():
    """Create the root, issuing CAs, OCSP responders and TSA where missing (keys in the HSM)."""
    report = hierarchy.init_hierarchy(_ctx(), actor="cli")
    for what, changed in report.steps:
        click.echo(f"  {'created ' if changed else 'exists  '} {what}")
    if not report.changed:
        click.echo("the CA hierarchy is complete; nothing changed")


@ca.command()
@click.option("--profile", required=True, help="certificate profile, e.g. person-auth")
@click.option("--csr", "csr_file", required=True, type=click.Path(dir_okay=False), help="PKCS#10 request, PEM or DER")
@click.option("--subject-id", help="resident ID or unified social credit code the certificate is for")
@click.option("--name", required=True, help="person, enterprise, department or organisation name")
@click.option("--san", multiple=True, help="DNS name or IP address (server-tls), repeatable")
@click.option("--out", type=click.Path(dir_okay=False), help="write the certificate (PEM) here instead of stdout")
def issue(profile, csr_file, subject_id, name, san, out):
    """Issue a certificate from a CSR for identity data you vouch for."""
    identity = issuance.Identity(name=name, subject_id=subject_id, sans=tuple(san))
    row, certificate = issuance.issue(_ctx(), profile, _read(csr_file), identity, actor="cli")
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = certificate.public_bytes(Encoding.PEM)
    if out:
        Path(out).write_bytes(pem)
        click.echo(f"issued {row.serial} ({row.profile}) for {row.subject}; written to {out}", err=True)
    else:
        click.echo(pem.decode(), nl=False)
        click.echo(f"issued {row.serial} ({row.profile}) for {row.subject}", err=True)


@ca.command(name="server-cert")
@click.option("--san", multiple=True, required=True, help="DNS name or IP address; repeatable, or several comma separated")
@click.option(
    "--dir", "folder", required=True, type=click.Path(file_okay=False), help="where server.key, fullchain.pem and root.pem are kept"
)
@click.option("--name", default="Hallmark", show_default=True, help="who the server belongs to (checked; not written into the certificate)")
@click.option("--renew-days", default=30, show_default=True, type=click.IntRange(1, 60), help="issue anew when fewer days are left")
def server_cert(san, folder, name, renew_days):
    """Keep a TLS server key and certificate (server-tls) from this CA in a folder, for the proxy in front of Hallmark.

    Issues a new one only when there is none or it is due (other names, revoked, another
    issuing CA, or fewer than --renew-days left); otherwise changes nothing. Reload the
    proxy after a new one is issued.
    """
    from ca import tlsserver

    outcome = tlsserver.ensure(_ctx(), Path(folder), san, name=name, renew_days=renew_days, actor="cli")
    names = ", ".join(outcome.sans)
    if outcome.issued:
        click.echo(f"issued {outcome.serial} for {names}, valid until {outcome.not_after:%Y-%m-%d %H:%M} UTC ({outcome.reason})")
        click.echo(f"  written to {folder}: {tlsserver.KEY_FILE}, {tlsserver.CHAIN_FILE}, {tlsserver.ROOT_FILE}")
    else:
        click.echo(f"kept {outcome.serial} for {names}, valid until {outcome.not_after:%Y-%m-%d %H:%M} UTC; nothing to do")


@ca.command()
@click.argument("serial")
@click.option("--reason", default="unspecified", show_default=True, type=click.Choice(list(revocation.REASONS)))
def revoke(serial, reason):
    """Revoke a certificate; the CRL and OCSP answer change at once."""
    row = revocation.revoke(_ctx(), serial, reason, actor="cli")
    click.echo(f"revoked {row.serial} ({reason}) at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


@ca.command(name="list")
@click.option("--subject-id", help="resident ID or credit code")
@click.option("--status", type=click.Choice(queries.STATUSES))
@click.option("--profile")
@click.option("--limit", default=50, show_default=True)
def list_certificates(subject_id, status, profile, limit):
    """List issued certificates, newest first (identifiers masked)."""
    rows = queries.search(_ctx(), subject_id=subject_id, status=status, profile=profile, limit=limit)
    if not rows:
        click.echo("no certificates match")
    for row in rows:
        click.echo(f"{row.serial:<40} {queries.status_of(row):<8} {row.profile:<16} {row.not_after:%Y-%m-%d} {row.subject}")


@ca.command()
@click.argument("serial")
def show(serial):
    """Show one certificate as PEM with its status."""
    body = queries.as_json(queries.get(_ctx(), serial), include_pem=True)
    pem = body.pop("certificate")
    for key, value in body.items():
        click.echo(f"{key:<20} {value}")
    click.echo(pem, nl=False)


@ca.command()
def refresh():
    """Publish CRLs and re-sign OCSP responses that are due (what the scheduler does)."""
    from ca.status import crl, ocsp

    context = _ctx()
    published = crl.publish_due(context)
    refreshed = ocsp.refresh_due(context)
    click.echo(f"published {published} CRL(s), re-signed {refreshed} OCSP response(s)")


@ca.group()
def trust():
    """Recognised external CAs (trust anchors)."""


@trust.command(name="add")
@click.argument("certificate_file", type=click.Path(dir_okay=False))
@click.option(
    "--revocation",
    type=click.Choice(["hard", "soft"]),
    default="hard",
    show_default=True,
    help="hard: refuse when its revocation status cannot be fetched; soft: accept then",
)
@click.option("--note", default="", help="why this CA is recognised")
def trust_add(certificate_file, revocation, note):
    """Recognise an external CA certificate as a trust anchor."""
    from ca import trust as trust_store

    anchor = trust_store.add_anchor(_ctx(), _read(certificate_file), actor="cli", revocation_policy=revocation, note=note)
    click.echo(f"recognised {anchor.subject} (SHA-256 {anchor.fingerprint})")
    click.echo(f"  {trust_store.anchor_kind(anchor)}; revocation policy {anchor.revocation_policy}", err=True)


@trust.command(name="remove")
@click.argument("fingerprint")
def trust_remove(fingerprint):
    """Stop recognising an external CA (SHA-256 fingerprint, or its first 16+ hex digits)."""
    from ca import trust as trust_store

    removed = trust_store.remove_anchor(_ctx(), fingerprint, actor="cli")
    extra = "; its cross-certificates were revoked" if removed.how == "cross-certified" else ""
    click.echo(f"no longer recognised: {removed.subject}{extra}")


@trust.command(name="list")
def trust_list():
    """List the recognised external CAs."""
    from ca import trust as trust_store

    anchors = trust_store.list_anchors(_ctx())
    if not anchors:
        click.echo("no external CAs are recognised")
    for anchor in anchors:
        click.echo(f"{anchor.fingerprint[:16]}  {anchor.how:<16} {anchor.revocation_policy:<5} {anchor.subject}")


@ca.command(name="cross-certify")
@click.argument("certificate_file", type=click.Path(dir_okay=False))
@click.option("--path-length", type=click.IntRange(0, 10), default=None, help="basicConstraints pathLenConstraint")
@click.option("--permitted-subtree", multiple=True, help="name constraint, e.g. 'dns:.gov.cn' or 'dn:C=CN,O=Fujian CA' (repeatable)")
@click.option(
    "--revocation",
    type=click.Choice(["hard", "soft"]),
    default="hard",
    show_default=True,
    help="for certificates below the external CA: hard refuses when their revocation status cannot be fetched",
)
@click.option("--note", default="", help="why this CA is cross-certified")
@click.option("--out", type=click.Path(dir_okay=False), help="write the cross-certificate (PEM) here")
def cross_certify(certificate_file, path_length, permitted_subtree, revocation, note, out):
    """Issue a cross-certificate from our root to an external CA."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ca import crosscert

    certificate = crosscert.cross_certify(
        _ctx(),
        _read(certificate_file),
        path_length=path_length,
        permitted_subtrees=list(permitted_subtree),
        actor="cli",
        revocation_policy=revocation,
        note=note,
    )
    pem = certificate.public_bytes(Encoding.PEM)
    if out:
        Path(out).write_bytes(pem)
    else:
        click.echo(pem.decode(), nl=False)
    click.echo(f"cross-certified {certificate.subject.rfc4514_string()} (serial {certificate.serial_number:x})", err=True)
