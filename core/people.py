"""Who is signed in, and which holder codes a person or a token stands for: an interface packages above ``idp`` use.

The identity provider knows accounts, proofed resident IDs and enterprises; the
licence library (above it in another column of the layer table) must not import
it, yet needs to know whose licences a page or a consent token may show. This
module is the meeting point: the identity provider offers a :class:`PeopleDirectory`
under the service name :data:`NAME`, and the packages above ask for it with
``core.component.service(NAME)``.

A holder is named as GB/T 36903 names it: a code type (``111`` resident ID,
``001`` unified social credit code) and the keyed lookup hash of the code
(:func:`core.identifiers.lookup_hash` with the instance's lookup key), so nothing
above learns a full resident ID it was not given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

NAME = "people"  # the service name under which the identity provider offers its directory

RESIDENT_ID = "111"  # GB/T 36903 Annex A holder code types
CREDIT_CODE = "001"
HOLDER_CODE_TYPES = {RESIDENT_ID: "resident_id", CREDIT_CODE: "credit_code"}  # -> core.identifiers.lookup_hash kind


@dataclass(frozen=True)
class HolderRef:
    """One holder a person may act as: themself (``111``) or an enterprise they represent (``001``)."""

    code_type: str
    lookup_hash: str
    masked: str  # the code masked for display
    name: str  # the person's or enterprise's name


@dataclass(frozen=True)
class SignedIn:
    """The person behind the current browser session."""

    account_id: str
    display_name: str
    acr: str  # urn:hallmark:loa:N reached in this session
    holders: tuple[HolderRef, ...]  # empty until the account is real-name verified


class PeopleDirectory(Protocol):
    def signed_in(self) -> SignedIn | None:
        """The person signed in to this browser (inside a Flask request), or None."""

    def login_url(self, next_url: str, acr: str | None = None) -> str:
        """Where to send a browser to sign in (at least at ``acr``) and come back to ``next_url``."""

    def holders_of_token(self, claims: dict) -> tuple[HolderRef, ...]:
        """The holder an access token was granted for: the enterprise it acts for (``org_id``), else its person."""

    def token_inactive(self, claims: dict) -> str | None:
        """Why an unexpired access token no longer counts (revoked, session ended, client removed), or None."""

    def client_names(self, client_ids: list[str]) -> dict[str, str]:
        """The display names of registered clients (halls, approval systems) by client id; unknown ids are left out."""
