"""``hallmark-key`` commands."""

from __future__ import annotations

import os
import sys

import click
import pkcs11
from cryptography import x509
from pkcs11 import Attribute, ObjectClass

from hsm import HSMError
from hsm import module as pkcs11_module
from hsm.softhsm import default_module


def _module_option(f):
    return click.option(
        "--module",
        "module_path",
        default=lambda: os.environ.get("HALLMARK_KEY_MODULE") or default_module(),
        show_default="$HALLMARK_KEY_MODULE or SoftHSM2",
        help="path of the USB key's PKCS#11 module",
    )(f)


@click.group()
def main():
    """Use a USB key (any PKCS#11 token) with Hallmark."""


@main.command(name="list")
@_module_option
def list_tokens(module_path):
    """Show the tokens present, with their certificates and public keys (no PIN needed)."""
    try:
        lib = pkcs11_module.load(module_path)
        slots = lib.get_slots(token_present=True)
    except (HSMError, pkcs11.PKCS11Error) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    if not slots:
        click.echo("no token present")
        return
    for slot in slots:
        token = slot.get_token()
        click.echo(f"token {token.label!r}  ({token.manufacturer_id} {token.model}, serial {token.serial.decode(errors='replace') if isinstance(token.serial, bytes) else token.serial})")
        with token.open() as session:
            certificates = list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}))
            public_keys = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY}))
            for obj in certificates:
                cert = x509.load_der_x509_certificate(obj[Attribute.VALUE])
                click.echo(
                    f"  certificate {obj[Attribute.LABEL]!r}: {cert.subject.rfc4514_string()}, "
                    f"valid until {cert.not_valid_after_utc:%Y-%m-%d}, id {obj[Attribute.ID].hex()}"
                )
            for obj in public_keys:
                click.echo(f"  key {obj.label!r}: {obj.key_type.name}, id {obj[Attribute.ID].hex()}")
            if not certificates and not public_keys:
                click.echo("  (empty)")


if __name__ == "__main__":
    main()
