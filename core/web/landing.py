"""The landing page at ``/``: what the service is, and the ways in that the packages registered."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from core.web.i18n import N_
from core.web.state import state

bp = Blueprint("web", __name__, template_folder="templates")

SECTIONS = (
    ("people", N_("For residents and enterprises")),
    ("documents", N_("Documents")),
    ("developers", N_("For halls and approval systems")),
)


@bp.get("/")
def landing():
    links = sorted(state(current_app).links, key=lambda link: (link.order, link.href))
    sections = [(key, heading, [link for link in links if link.section == key]) for key, heading in SECTIONS]
    return render_template("web/landing.html", sections=[s for s in sections if s[2]])
