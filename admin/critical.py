"""What a critical (four-eyes) operation is, as data: ``admin.operations`` lists them, ``admin.proposals`` runs them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.db import utc_now
from core.web.i18n import Refusal

if TYPE_CHECKING:
    from admin.context import AdminContext
    from admin.roles import Staff


class ProposalRefusal(Refusal):
    status = 409


@dataclass(frozen=True)
class Checked:
    parameters: dict  # what is stored and executed
    department: str | None  # whose operation it is (None: province-wide)


@dataclass(frozen=True)
class Operation:
    kind: str
    title: str  # msgid
    description: str  # msgid with %(name)s placeholders filled from the parameters
    propose_roles: tuple[str, ...]
    approve_roles: tuple[str, ...]
    check: Callable[[Any, Any, dict], Checked]  # (ctx, db session, parameters); raises a Refusal when not acceptable
    execute: Callable[[Any, dict, str], dict]  # (ctx, parameters, actor) -> what it did (JSON-able)
    # (ctx, db session, stored parameters), at approval before the proposal is claimed: raises a Refusal when what
    # was proposed can no longer be done (the approval is refused, the proposal stays pending to be refused).
    recheck: Callable[[Any, Any, dict], None] | None = None


@dataclass(frozen=True)
class Signer:
    """Who acts, with what their console session proved: roles, the level of its last login and when."""

    person: Staff
    acr: int
    auth_time: datetime | None


def fresh_at(ctx: AdminContext, signer: Signer, now: datetime) -> bool:
    """Whether the session logged in with a USB key (level 3) recently enough, at ``now``, for a critical action."""
    return (
        signer.acr >= 3 and signer.auth_time is not None and now - signer.auth_time <= timedelta(minutes=ctx.settings.admin_reauth_minutes)
    )


def fresh(ctx: AdminContext, signer: Signer) -> bool:
    """Whether the session logged in with a USB key (level 3) recently enough for a critical action."""
    return fresh_at(ctx, signer, utc_now())
