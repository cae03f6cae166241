"""What must be re-published when a certificate's status changes.

One place that says: a new certificate gets a pre-signed OCSP response; a
revocation re-signs that response at once and publishes a new CRL; a new
authority publishes its first CRL. Issuance, revocation and the hierarchy do not
import this module: they emit events (``core.events``) and :func:`subscribe`
puts these handlers on the hook list when the CA's services are built. The
handlers run inside the changing transaction, so the published status never
disagrees with the stored one.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ca.context import CAContext
from ca.models import Certificate
from ca.status import crl, ocsp
from core import events


def certificate_issued(ctx: CAContext, session: Session, certificate: Certificate) -> None:
    ocsp.presign(ctx, session, certificate)


def certificate_revoked(ctx: CAContext, session: Session, certificate: Certificate) -> None:
    ocsp.presign(ctx, session, certificate)
    crl.publish(ctx, session, certificate.authority)


def authority_created(ctx: CAContext, session: Session, authority: str) -> None:
    crl.publish(ctx, session, authority)


def subscribe(hooks: events.Hooks) -> None:
    """Publish on every issuance, revocation and new authority emitted on ``hooks``."""
    hooks.subscribe(events.CERTIFICATE_ISSUED, _on_issued)
    hooks.subscribe(events.CERTIFICATE_REVOKED, _on_revoked)
    hooks.subscribe(events.AUTHORITY_CREATED, _on_authority)


def _on_issued(*, ctx: CAContext, session: Session, certificate: Certificate) -> None:
    certificate_issued(ctx, session, certificate)


def _on_revoked(*, ctx: CAContext, session: Session, certificate: Certificate) -> None:
    certificate_revoked(ctx, session, certificate)


def _on_authority(*, ctx: CAContext, session: Session, authority: str) -> None:
    authority_created(ctx, session, authority)
