"""Cross-certification: our root vouches for an external CA, within limits.

The cross-certificate carries the external CA's own subject and public key, so every
certificate that CA issued chains to our root (external leaf -> cross-certificate
-> Hallmark root) for any relying party that trusts our root, openssl included.
What it may issue is limited by what we write into it (RFC 5280 4.2.1.9 and
4.2.1.10): a ``pathLenConstraint`` and, optionally, permitted name subtrees::

    dns:example.gov.cn      the domain and every name below it (a leading dot is dropped:
                            RFC 5280 dNSName constraints have none)
    dn:C=CN,O=Fujian CA     directory names under this DN (RFC 4514 syntax; the end holding
                            C= is the top, so "C=CN,O=Fujian CA" and "O=Fujian CA,C=CN" agree)
    email:.example.gov.cn   mailboxes in that domain (or a host, or one mailbox)
    ip:10.0.0.0/8           an address range
    uri:.example.gov.cn     URIs whose host is in that domain

The cross-certificate is stored, audited and put on the root's CRL like any
certificate of ours; the external CA is recorded in the trust store as
``cross-certified`` with the revocation policy for the certificates below it.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from sqlalchemy.exc import IntegrityError

from ca import issuance, trust
from ca.context import CAContext
from ca.models import Certificate, RecognisedCA
from core import audit
from core.db import utc_now
from core.problems import Problem

PROFILE = "cross-certificate"
MAX_YEARS = 5
MAX_PATH_LENGTH = 10
MAX_SUBTREES = 50
ANY_POLICY = x509.ObjectIdentifier("2.5.29.32.0")
_DNS_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _bad(detail: str) -> Problem:
    return Problem(400, "Bad Request", detail)


def parse_subtree(text: str) -> x509.GeneralName:
    """One ``kind:value`` permitted subtree as a GeneralName (400 problem when malformed)."""
    kind, sep, value = str(text).strip().partition(":")
    kind, value = kind.strip().lower(), value.strip()
    if not sep or not value:
        raise _bad(f"{text!r} is not a name constraint; write dns:, dn:, email:, ip: or uri: followed by the value")
    if kind == "dns":
        host = value.lower().lstrip(".")
        if not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")  # 政务.cn -> xn--...: certificates carry A-labels
            except UnicodeError:
                raise _bad(f"{value!r} is not a DNS domain for a name constraint") from None
        if not _DNS_DOMAIN.match(host):
            raise _bad(f"{value!r} is not a DNS domain for a name constraint")
        return x509.DNSName(host)
    if kind == "dn":
        try:
            name = x509.Name.from_rfc4514_string(value)
        except ValueError as exc:
            raise _bad(f"{value!r} is not an RFC 4514 distinguished name" + (f": {exc}" if str(exc) else "")) from None
        rdns = list(name.rdns)
        if not rdns:
            raise _bad("a dn: name constraint needs at least one attribute")

        # RFC 4514 text runs most specific first ("O=Fujian CA,C=CN"); people usually write
        # it top-down as openssl prints it ("C=CN,O=Fujian CA"). The country is always the
        # top of a DN, so the end that holds C= is read as the top, either way round.
        def is_country(rdn):
            return any(a.oid == NameOID.COUNTRY_NAME for a in rdn)

        if len(rdns) > 1 and is_country(rdns[-1]) and not is_country(rdns[0]):
            rdns.reverse()
        return x509.DirectoryName(x509.Name(rdns))
    if kind == "email":
        if not value.isascii() or any(c.isspace() for c in value) or value.count("@") > 1 or value.endswith("@"):
            raise _bad(f"{value!r} is not a mailbox, host or .domain for an email name constraint")
        return x509.RFC822Name(value.lower())
    if kind == "ip":
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise _bad(f"{value!r} is not an address range in CIDR form: {exc}") from None
        return x509.IPAddress(network)
    if kind == "uri":
        if not value.isascii() or any(c.isspace() for c in value) or "/" in value or ":" in value:
            raise _bad(f"{value!r} is not a host or .domain for a URI name constraint")
        return x509.UniformResourceIdentifier(value.lower())
    raise _bad(f"unknown name constraint kind {kind!r}; use dns, dn, email, ip or uri")


def describe_subtree(name: x509.GeneralName) -> str:
    """The ``kind:value`` text of a permitted subtree as it was written into the certificate."""
    if isinstance(name, x509.DirectoryName):
        return "dn:" + ",".join(rdn.rfc4514_string() for rdn in name.value.rdns)  # top first
    kind = {x509.DNSName: "dns", x509.RFC822Name: "email", x509.IPAddress: "ip", x509.UniformResourceIdentifier: "uri"}[type(name)]
    return f"{kind}:{name.value}"


def _name_constraints(values: list[str]) -> x509.NameConstraints | None:
    if len(values) > MAX_SUBTREES:
        raise _bad(f"at most {MAX_SUBTREES} permitted subtrees")
    subtrees = []
    for value in values:
        name = parse_subtree(value)
        if name not in subtrees:
            subtrees.append(name)
    return x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None) if subtrees else None


def _ski_of(certificate: x509.Certificate) -> x509.SubjectKeyIdentifier:
    # Copy theirs: the AKI of everything the external CA issued points at it.
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key())


def cross_certify(
    ctx: CAContext,
    data: bytes,
    *,
    path_length: int | None,
    permitted_subtrees: list[str],
    actor: str,
    revocation_policy: str = "hard",
    note: str = "",
) -> x509.Certificate:
    """Issue a cross-certificate from our root to the external CA in ``data`` (PEM or DER).

    ``revocation_policy`` governs certificates below the external CA (see
    :mod:`ca.validation`); the cross-certificate itself is checked against our root's CRL.
    """
    trust.check_policy(revocation_policy)
    note = trust.check_note(note)
    if path_length is not None and (
        isinstance(path_length, bool) or not isinstance(path_length, int) or not 0 <= path_length <= MAX_PATH_LENGTH
    ):
        raise _bad(f"path length must be a whole number from 0 to {MAX_PATH_LENGTH}")
    constraints = _name_constraints(list(permitted_subtrees or ()))
    facts = trust.inspect_ca_certificate(data)
    external = facts.certificate
    subject_text = external.subject.rfc4514_string()
    if not list(external.subject):
        raise Problem(422, "Unprocessable Content", "the external CA certificate has an empty subject; a cross-certificate needs its name")

    try:
        with ctx.sessions() as session, session.begin():
            return _issue(ctx, session, facts, constraints, path_length, actor, revocation_policy, note)
    except IntegrityError:
        # A concurrent cross-certification of the same CA inserted its trust-store row first.
        raise Problem(409, "Conflict", f"{subject_text} was cross-certified by someone else just now") from None


def _issue(ctx, session, facts, constraints, path_length, actor, revocation_policy, note) -> x509.Certificate:
    external = facts.certificate
    subject_text = external.subject.rfc4514_string()
    trust.refuse_our_own(session, external)
    existing = session.get(RecognisedCA, facts.fingerprint, with_for_update=True)
    if existing is not None and existing.how == "anchor":
        raise Problem(
            409,
            "Conflict",
            f"{subject_text} is recognised as a trust anchor already; remove it from the trust store before cross-certifying it",
        )
    now = utc_now()
    in_force = [c for c in trust.cross_certificates_for(session, external) if c.status == "valid" and c.not_after > now]
    if in_force:
        raise Problem(
            409,
            "Conflict",
            f"{subject_text} already has a cross-certificate in force (serial {in_force[0].serial}, until "
            f"{in_force[0].not_after:%Y-%m-%d}); revoke it before issuing another",
        )

    root = ctx.authority("root", session)
    not_after = min(external.not_valid_after_utc, root.certificate.not_valid_after_utc, now + timedelta(days=365 * MAX_YEARS + 1))
    root_ski = root.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(external.subject)
        .issuer_name(root.certificate.subject)
        .public_key(external.public_key())
        .serial_number(issuance.random_serial(session))
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(_ski_of(external), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(ctx.url("/pki/ca/root.crt"))
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([x509.UniformResourceIdentifier(ctx.url("/pki/crl/root.crl"))], None, None, None)]
            ),
            critical=False,
        )
        .add_extension(x509.CertificatePolicies([x509.PolicyInformation(ANY_POLICY, None)]), critical=False)
    )
    if constraints is not None:
        # RFC 5280 4.2.1.10: conforming CAs MUST mark this extension critical.
        builder = builder.add_extension(constraints, critical=True)
    signer = ctx.signer(root.key_uri)
    certificate = builder.sign(signer, issuance.signature_hash(signer))
    stored: Certificate = issuance.store(
        ctx, session, certificate, authority="root", profile=PROFILE, id_kind=None, id_value=None, actor=actor
    )

    summary = f"cross-certificate {stored.serial}"
    if path_length is not None:
        summary += f", path length {path_length}"
    if constraints is not None:
        summary += ", permitted " + " ".join(describe_subtree(n) for n in constraints.permitted_subtrees)
    full_note = f"{summary}; {note}" if note else summary
    if existing is None:
        session.add(
            RecognisedCA(
                fingerprint=facts.fingerprint,
                subject=subject_text[:400],
                der=external.public_bytes(serialization.Encoding.DER),
                how="cross-certified",
                revocation_policy=revocation_policy,
                added_at=now,
                added_by=actor[:200],
                note=full_note,
            )
        )
    else:
        # Re-certifying after the earlier cross-certificate was revoked or ran out.
        existing.revocation_policy = revocation_policy
        existing.added_at = now
        existing.added_by = actor[:200]
        existing.note = full_note
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="ca.trust.cross-certified",
        target=facts.fingerprint,
        details={
            "subject": subject_text[:400],
            "serial": stored.serial,
            "path_length": path_length,
            "permitted_subtrees": [describe_subtree(n) for n in constraints.permitted_subtrees] if constraints else [],
            "revocation_policy": revocation_policy,
            "not_after": not_after.isoformat(),
        },
    )
    return certificate
