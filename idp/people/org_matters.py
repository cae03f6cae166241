"""``org_matters``: which agents may act for which matters of an enterprise, for its legal representative.

One row per matter of the catalogue (and per matter named in an authorisation but
not, or no longer, in the catalogue), with the agents whose authorisation in force
covers it: named for the matter, or for every matter. The representative may act
for every matter; they are not listed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from core.db import utc_now
from idp import levels
from idp.models import Account
from idp.people import accounts, enterprises


def org_matters(db: Session, credit_code: str, *, now: datetime | None = None) -> dict:
    """``{"matters": [{code, name, level, department, known, agents: [{label, expires_at, all}]}], "all": [...]}``."""
    now = now or utc_now()
    in_force = [row for row in enterprises.authorisations_of(db, credit_code) if enterprises.state_of(row, now) == "active"]
    labels = {}
    for row in in_force:
        if row.agent_id not in labels:
            agent = db.get(Account, row.agent_id)
            labels[row.agent_id] = accounts.label(agent) if agent else row.agent_id[:8]

    def agent(row, every: bool) -> dict:
        return {"label": labels[row.agent_id], "expires_at": row.expires_at, "all": every}

    catalogue = {m.code: m for m in levels.all_matters(db)}
    named = {code for row in in_force if row.matters != enterprises.ALL_MATTERS for code in row.matters.split()}
    every = [row for row in in_force if row.matters == enterprises.ALL_MATTERS]
    matters = []
    for code in sorted(set(catalogue) | named):
        matter = catalogue.get(code)
        covering = [agent(row, True) for row in every] + [
            agent(row, False) for row in in_force if row.matters != enterprises.ALL_MATTERS and code in row.matters.split()
        ]
        matters.append(
            {
                "code": code,
                "name": matter.name if matter else code,
                "level": matter.level if matter else None,
                "department": matter.department if matter else "",
                "known": matter is not None,
                "agents": sorted(covering, key=lambda a: (not a["all"], a["label"])),
            }
        )
    return {"matters": matters, "all": [agent(row, True) for row in every]}
