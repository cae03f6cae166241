"""``hallmark sign ...`` and ``hallmark validate``: thin commands over the signing services.

The composition root puts the services on the root click context; ``service("signing")`` is ours.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from signing import seals
from signing.context import NAME, SigningContext
from signing.pdf import pades


def _sctx() -> SigningContext:
    return click.get_current_context().find_root().obj.service(NAME)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None


def _write(path: str, data: bytes) -> None:
    target = Path(path)
    temporary = target.with_name(f".{target.name}.part")
    try:
        temporary.write_bytes(data)
        temporary.replace(target)  # a half-written output file is never left behind
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None


@click.group(name="sign")
def sign():
    """Trusted electronic files: department seals and sealing PDFs."""


@sign.group(name="seal")
def seal():
    """Department seals: certificate + HSM key + image, and which clients may use them."""


@seal.command(name="add")
@click.option("--department", required=True, help="the department's name, as on the seal, e.g. 示范市市场监督管理局")
@click.option("--credit-code", required=True, help="the department's unified social credit code (GB 32100)")
@click.option("--name", help="the seal's name (default: the department's name)")
@click.option("--image", "image_path", type=click.Path(dir_okay=False), help="seal image, PNG or JPEG (default: a demo seal is drawn)")
def seal_add(department, credit_code, name, image_path):
    """Create a seal: a key in the HSM, a department-seal certificate from the services CA, the image."""
    image = _read(image_path) if image_path else None
    created = seals.add(_sctx().ca, department=department, credit_code=credit_code, name=name, image=image, actor="cli")
    click.echo(f"seal         {created.name}")
    click.echo(f"department   {created.department} ({created.credit_code})")
    click.echo(f"certificate  {created.certificate_serial}")
    click.echo(f"key          {created.key_uri}")
    click.echo(f"image        {'from ' + image_path if image_path else 'demo seal'}")
    click.echo(f"let a client use it:  hallmark sign seal grant CLIENT_ID {created.credit_code}")


@seal.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def seal_list(as_json):
    """List the seals with their certificate status."""
    rows = seals.list_seals(_sctx().ca)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], ensure_ascii=False))
        return
    if not rows:
        click.echo("no seals yet; add one with 'hallmark sign seal add --department ... --credit-code ...'")
    for row in rows:
        click.echo(
            f"{row.name}  [{row.status}, certificate {row.certificate_status} until {row.not_after[:10]}]  {row.department} {row.credit_code}"
        )


@seal.command(name="image")
@click.argument("name")
@click.argument("out", type=click.Path(dir_okay=False))
def seal_image(name, out):
    """Write a seal's image (PNG) to OUT."""
    ctx = _sctx().ca
    with ctx.sessions() as session:
        png = seals.get(session, name).image_png
    _write(out, png)


@seal.command(name="retire")
@click.argument("name")
@click.option("--reason", help="why, recorded in the audit trail")
@click.option("--revoke-certificate", is_flag=True, help="revoke its certificate too (reason cessationOfOperation)")
def seal_retire(name, reason, revoke_certificate):
    """Stop a seal from sealing, for good (without --revoke-certificate its certificate stays valid)."""
    retired = seals.retire(_sctx().ca, name, actor="cli", reason=reason, revoke_certificate=revoke_certificate)
    click.echo(f"seal {name} retired" + (f"; certificate {retired.certificate_serial} revoked" if revoke_certificate else ""))


@seal.command(name="grant")
@click.argument("client_id")
@click.argument("department")
def seal_grant(client_id, department):
    """Let CLIENT_ID (with scope sign:seal) use the seals of DEPARTMENT (credit code, or a seal's department name)."""
    row = seals.grant(_sctx().ca, client_id, department, actor="cli")
    click.echo(f"client {row.client_id} may use the seals of {row.credit_code}")


@seal.command(name="revoke-grant")
@click.argument("client_id")
@click.argument("department")
def seal_revoke_grant(client_id, department):
    """Take away a client's use of a department's seals."""
    removed = seals.revoke_grant(_sctx().ca, client_id, department, actor="cli")
    click.echo("grant removed" if removed else "there was no such grant")


@seal.command(name="grants")
def seal_grants():
    """List which clients may use which departments' seals."""
    rows = seals.grants(_sctx().ca)
    if not rows:
        click.echo("no grants yet")
    for client_id, code in rows:
        click.echo(f"{client_id}  {code}")


@sign.command(name="pdf")
@click.argument("source", type=click.Path(dir_okay=False, exists=True))
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--seal", "seal_name", required=True, help="the seal's name")
@click.option("--level", type=click.Choice(pades.LEVELS, case_sensitive=False), default=pades.DEFAULT_LEVEL, show_default=True)
@click.option("--page", type=int, help="1-based page for the visible stamp (default: the last page)")
@click.option("--x", "x", type=float, help="stamp position from the left, in points")
@click.option("--y", "y", type=float, help="stamp position from the bottom, in points")
@click.option("--invisible", is_flag=True, help="no visible stamp")
@click.option("--reason", help="reason for sealing, recorded in the signature")
def sign_pdf(source, target, seal_name, level, page, x, y, invisible, reason):
    """Seal the PDF SOURCE with a department seal and write TARGET."""
    placement = pades.Placement(page=page, x=x, y=y, visible=not invisible)
    result = pades.seal_pdf(_sctx(), _read(source), seal_name=seal_name, level=level, placement=placement, reason=reason, actor="cli")
    _write(target, result.pdf)
    click.echo(f"sealed at PAdES {result.document.level}: {target}")
    click.echo(f"verification page: {result.verify_url}")


@sign.command(name="sample-pdf")
@click.argument("target", type=click.Path(dir_okay=False))
def sample_pdf(target):
    """Write a one-page sample PDF to TARGET, to try sealing on."""
    from signing.pdf.sample import sample_pdf as make

    _write(target, make())
    click.echo(f"wrote {target}; seal it with: hallmark sign pdf {target} sealed.pdf --seal NAME")


# The report's verdict on the whole file, in words (signing.report decides it; this only prints it).
VERDICTS = {"TOTAL_PASSED": "valid", "TOTAL_FAILED": "not valid", "INDETERMINATE": "cannot be confirmed"}


@click.command(name="validate")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="print the full report as JSON (identifiers in full)")
def validate(file, as_json):
    """Validate every signature in a PDF (ETSI simple-report style); exit 0 only if all pass."""
    sctx = _sctx()
    found = sctx.validate(_read(file))
    for entry in found["signatures"]:
        document_id = entry.pop("hallmark_document_id", None)
        if document_id:
            entry["hallmark_document"] = {"id": document_id, "verify_url": sctx.verify_url(document_id)}
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
    else:
        click.echo(f"{file}: {found['signatures_count']} signature(s), {found['valid_signatures_count']} passed")
        click.echo(f"verdict: {VERDICTS.get(found['indication'], 'no signature')}")
        for entry in found["signatures"]:
            signer = entry.get("signer") or {}
            identifier = signer.get("identifier") or {}
            sub = f"/{entry['sub_indication']}" if entry.get("sub_indication") else ""
            click.echo(f"  {entry['id']} {entry['indication']}{sub}  {signer.get('name', '?')} {identifier.get('masked', '')}")
            if entry.get("pades_level"):
                click.echo(
                    f"      level {entry['pades_level']}, signed {entry.get('signing_time')}, timestamp {(entry.get('timestamp') or {}).get('time')}"
                )
                changed = f"yes ({entry['modifications'].lower().replace('_', ' ')})" if entry["modified_after_signing"] else "no"
                click.echo(f"      revocation {entry['revocation']['status']}, modified after signing: {changed}")
            for line in entry.get("errors", []) + entry.get("warnings", []):
                click.echo(f"      - {line}")
    if found["indication"] != "TOTAL_PASSED":
        sys.exit(2)
