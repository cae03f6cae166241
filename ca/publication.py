"""What must be re-published when a certificate's status changes.

One place that says: a new certificate gets a pre-signed OCSP response; a
revocation re-signs that response at once and publishes a new CRL; a new
authority publishes its first CRL. Called inside the changing transaction, so the
published status never disagrees with the stored one.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ca import crl, ocsp
from ca.context import CAContext
from ca.models import Certificate


def certificate_issued(ctx: CAContext, session: Session, certificate: Certificate) -> None:
    ocsp.presign(ctx, session, certificate)


def certificate_revoked(ctx: CAContext, session: Session, certificate: Certificate) -> None:
    ocsp.presign(ctx, session, certificate)
    crl.publish(ctx, session, certificate.authority)


def authority_created(ctx: CAContext, session: Session, authority: str) -> None:
    crl.publish(ctx, session, authority)
