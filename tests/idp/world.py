"""A running Hallmark server with a way into its database, shared by tests that need residents and their sessions.

The tests of the device grant and of scan-to-login both make accounts (optionally real-name proofed) and signed-in
browsers directly, so that each test starts from the state it is about and not from a login dance.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import requests

from core import db as core_db
from core import settings as settings_module
from idp.models import Account, IdentityProofing
from idp.people import accounts, sessions

PASSWORD = "Lotus-pond 2026"


class ServerWorld:
    def __init__(self, instance, base, factory):
        self.instance, self.base, self.sessions = instance, base, factory
        self.key = settings_module.load(instance).secret_key.encode()

    def account(self, *, proofed: bool, name: str = "王小明") -> str:
        """A new active account with ``PASSWORD``; with ``proofed``, verified at a counter (real-name level)."""
        with core_db.transaction(self.sessions) as db:
            account = accounts.register(db, identifier="u" + uuid.uuid4().hex[:10], password=PASSWORD, display_name=name)
            if proofed:
                db.add(
                    IdentityProofing(
                        account_id=account.id,
                        resident_id_hash=uuid.uuid4().hex * 2,
                        resident_id_masked="110***********002X",
                        legal_name=name,
                        method="counter",
                        source="test",
                        verified_at=datetime.now(UTC),
                    )
                )
            return account.id

    def session_cookie(self, account_id: str, amr=("pwd",)) -> tuple[str, str]:
        """(sid, cookie value) of a new session of the account with ``amr`` (``hwk``: as after a USB-key login)."""
        with core_db.transaction(self.sessions) as db:
            row = sessions.start(db, db.get(Account, account_id), set(amr))
            return row.sid, sessions.cookie_value(self.key, row.sid, row.secret)

    def signed_in(self, account_id: str, amr=("pwd",)) -> requests.Session:
        """A resident's browser signed in with ``amr`` (a session as the login pages start it)."""
        browser = requests.Session()
        browser.cookies.set(sessions.COOKIE, self.session_cookie(account_id, amr)[1], domain="127.0.0.1", path="/")
        return browser
