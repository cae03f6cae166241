"""The enterprise page for its legal representative: which agents may act for which matters (``org_matters``)."""

from __future__ import annotations

from flask import Blueprint

from core import db as core_db
from core import web
from idp import pages
from idp.i18n import N_, Refusal
from idp.models import Enterprise
from idp.people import enterprises
from idp.people.org_matters import org_matters

bp = Blueprint("idp_enterprise_pages", __name__, template_folder="templates")
web.pages(bp, csrf=True)


@bp.errorhandler(Refusal)
def _refused(exc: Refusal):
    return pages.refused(exc)


@bp.get("/account/enterprises/<handle>/matters")
def matters(handle):
    ctx = pages._ctx()
    with core_db.read_only(ctx.sessions) as db:
        live = pages._live(db)
        if live is None:
            return pages._to_login("/account#enterprises")
        represented = enterprises.account_summary(db, live[1].id)["represented"]
        code = pages._code_of(handle, [e.credit_code for e in represented])
        if code is None:
            raise enterprises.EnterpriseRefusal(
                N_("Only the enterprise's legal representative may see who acts for it."), code="not_representative", status=403
            )
        enterprise = db.get(Enterprise, code)
        view = org_matters(db, code)
    return pages.render("idp/org_matters.html", enterprise=enterprise, view=view, level_names=pages.LEVEL_NAMES)
