"""The staff console's pages under ``/admin``: thin views over ``admin.login``, ``admin.proposals``, ``admin.staffing``.

Every view but signing in and out is wrapped in :func:`admin.access.requires`
with the roles it serves; every POST carries the shared CSRF token (``core.web``).
Refusals from the service modules become the same page with the reason, in the
person's language, and the status that fits.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from flask import Blueprint, Response, g, redirect, render_template, request, stream_with_context
from flask_babel import format_datetime, gettext

from admin import access, charts, login, proposals, roles, staffing, supervision, trail
from admin.access import requires
from admin.context import current
from core import audit, web
from core import db as core_db
from core.web import N_, Refusal

bp = Blueprint("admin_pages", __name__, template_folder="templates", url_prefix="/admin")
web.pages(bp, csrf=True, form_action="'self'")
TRANSLATIONS = Path(__file__).parent / "translations"

NOTICES = {
    "proposed": N_("Proposed. It takes effect when a second person approves it."),
    "approved": N_("Approved and carried out."),
    "failed": N_("Approved, but carrying it out failed; see the outcome below."),
    "refused": N_("Refused."),
    "withdrawn": N_("Withdrawn."),
    "granted": N_("The role was given."),
    "revoked": N_("The role was taken back."),
    "reauthenticated": N_("You confirmed with your USB key. You may now go on with the critical action."),
}

# The console's sections: (path, title msgid, roles that see it).
SECTIONS = (
    ("/admin/proposals", N_("Approvals"), None),  # None: the roles of the four-eyes operations
    ("/admin/licences", N_("Licence desk"), (roles.LICENCE_OFFICER,)),
    ("/admin/seals", N_("Seals"), (roles.SEAL_KEEPER,)),
    ("/admin/pki", N_("PKI"), (roles.CA_OFFICER,)),
    ("/admin/counter", N_("Counter desk"), (roles.COUNTER_CLERK,)),
    ("/admin/clients", N_("Clients"), (roles.SYSTEM_ADMIN,)),
    ("/admin/matters", N_("Matters"), (roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN)),
    ("/admin/roles", N_("Staff roles"), (roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN)),
    ("/admin/audit", N_("Audit trail"), trail.READERS),
    ("/admin/supervision", N_("E-supervision"), supervision.VIEWERS),
)
# What each role does here, shown on the home page (msgids).
DUTIES = {
    roles.SYSTEM_ADMIN: N_(
        "Give and take back staff roles; propose and approve administrator roles; register clients; keep the matter catalogue."
    ),
    roles.DEPARTMENT_ADMIN: N_("Give and take back the working roles of your department; set the levels of its matters."),
    roles.LICENCE_OFFICER: N_(
        "Issue your department's licences, change their state, answer requests (索取) and follow bulk imports; "
        "propose and approve revocations."
    ),
    roles.COUNTER_CLERK: N_(
        "Find people by resident ID with a reason, verify them in person with a photo, unlock accounts and reset passwords."
    ),
    roles.CA_OFFICER: N_(
        "Issue and revoke certificates, watch CRL, OCSP and TSA health; propose and approve revoking CA certificates and new trust anchors."
    ),
    roles.SEAL_KEEPER: N_(
        "Look after your department's seals: propose and approve new seals and their rotation, let clients use them, retire them."
    ),
    roles.AUDITOR: N_("Search, export and verify the audit trail; read the e-supervision figures."),
}


@bp.record_once
def _on_register(setup):
    web.add_translations(setup.app, TRANSLATIONS)


def _section_roles(needed):
    return tuple(proposals.roles_involved()) if needed is None else needed


def _nav() -> list[dict]:
    person = g.get("staff")
    if person is None:
        return []
    items = [{"href": "/admin", "title": gettext("Home")}]
    for href, title, needed in SECTIONS:
        if person.has(*_section_roles(needed)):
            items.append({"href": href, "title": gettext(title)})
    return items


def _when(value) -> str:
    return format_datetime(value, "yyyy-MM-dd HH:mm") if value is not None else ""


@bp.app_context_processor
def _console_values():
    """What every console template needs, for the views here and the 403 page of admin.access alike."""
    if not request.path.startswith("/admin"):
        return {}
    notice = NOTICES.get(request.args.get("notice", ""))
    return {
        "nav": _nav(),
        "staff": g.get("staff"),
        "role_name": lambda role: gettext(roles.NAMES.get(role, role)),
        "when": _when,
        "notice": gettext(notice) if notice else None,
        "lang_links": web.language_links(request.path, {}),
    }


def render(template: str, status: int = 200, **values):
    return render_template(template, **values), status


def _local(path: str | None) -> str:
    """A place in the console to come back to; anything else is the console's home."""
    if not path or not path.startswith("/admin") or path.startswith("//") or "\\" in path or any(ord(c) < 0x21 for c in path):
        return "/admin"
    return path[:400]


def _reauth(next_path: str):
    return redirect("/admin/reauth?next=" + quote(_local(next_path), safe=""), 303)


@bp.errorhandler(web.CSRFRefused)
def _csrf_refused(refusal):
    """A console form without this browser's CSRF token: refused (by core.web) and, here, recorded."""
    access.load()
    who = f"account:{g.staff.account_id}" if g.get("staff") is not None else "anonymous"
    with core_db.transaction(current().sessions) as db:
        audit.record(db, actor=who, action="admin.csrf_refused", target=request.path[:300], details={"method": request.method})
    return render("admin/refused.html", refusal.status, error=refusal.translated())


# -- signing in and out ------------------------------------------------------------------------------------


@bp.get("/login")
def login_start():
    ctx = current()
    with core_db.transaction(ctx.sessions) as db:
        start = login.begin(ctx, db, access.token(), next_path=_local(request.args.get("next")))
    response = redirect(start.location, 303)
    return access.set_cookie(response, start.token) if start.token else response


@bp.get("/reauth")
@requires()
def reauthenticate():
    """Before a critical action: a fresh USB-key login (acr level 3, max_age=0) for this session."""
    ctx = current()
    with core_db.transaction(ctx.sessions) as db:
        start = login.begin(ctx, db, access.token(), next_path=_local(request.args.get("next")), level=login.CRITICAL_LEVEL, fresh=True)
    return redirect(start.location, 303)


@bp.get("/callback")
def callback():
    if access.token() is None and not request.args.get("again"):
        # Arrived from another site's link: the Strict cookie was held back. Ask once more from this site.
        return render("admin/again.html", target=request.full_path + "&again=1")
    try:
        done = login.finish(current(), access.token(), request.args)
    except Refusal as refusal:
        return render("admin/login_failed.html", refusal.status, error=refusal.translated())
    location = done.next_path
    if location.startswith(("/admin/proposals/", "/admin/seals", "/admin/pki")) or location == "/admin/roles":
        location += ("&" if "?" in location else "?") + "notice=reauthenticated"
    return access.set_cookie(redirect(location, 303), done.token)


@bp.post("/logout")
def logout():
    ctx = current()
    ended = login.end(ctx, access.token())
    location = login.logout_location(ctx, ended.id_token if ended is not None else None)
    return access.clear_cookie(redirect(location, 303))


@bp.get("/signed-out")
def signed_out():
    return render("admin/signed_out.html", expired=False)


# -- home ------------------------------------------------------------------------------------------------------


@bp.get("")
@bp.get("/")
@requires()
def home():
    held = sorted(g.staff.grants, key=lambda grant: (roles.ROLES.index(grant[0]), grant[1] or ""))
    duties = [gettext(DUTIES[role]) for role in roles.ROLES if role in g.staff.roles]
    return render("admin/home.html", held=held, duties=duties, sections=_nav()[1:], session=g.staff_session)


# -- four eyes ------------------------------------------------------------------------------------------------


@bp.get("/proposals")
@requires(*proposals.roles_involved())
def proposal_list():
    ctx = current()
    with core_db.read_only(ctx.sessions) as db:
        rows = proposals.visible(db, g.staff)
        shown = [_proposal_view(row) for row in rows]
    return render("admin/proposals.html", proposals=shown)


def _proposal_view(row) -> dict:
    message, values = proposals.describe(row)
    values = {k: (gettext(roles.NAMES[v]) if k == "role" and v in roles.NAMES else v) for k, v in values.items()}
    status = proposals.status_of(row)
    return {
        "id": row.id,
        "title": gettext(proposals.operation(row.kind).title),
        "what": gettext(message, **values),
        "department": row.department,
        "reason": row.reason,
        "proposed_by": _name(row.proposed_by),
        "own": row.proposed_by == g.staff.account_id,
        "created": _when(row.created_at),
        "expires": _when(row.expires_at),
        "status": status,
        "status_name": gettext(proposals.STATUS_NAMES[status]),
        "decided_by": _name(row.decided_by) if row.decided_by else None,
        "decided": _when(row.decided_at),
        "decision_reason": row.decision_reason,
        "result": row.result,
        "may_decide": status == proposals.PENDING and proposals.may_decide(g.staff, row),
        "may_withdraw": status == proposals.PENDING and row.proposed_by == g.staff.account_id,
    }


def _name(account_id: str | None) -> str:
    from idp.models import Account

    cache = g.setdefault("admin_names", {})
    if account_id not in cache:
        with core_db.read_only(current().sessions) as db:
            account = db.get(Account, account_id)
            cache[account_id] = (account.display_name or account.username or account_id[:8]) if account else (account_id or "")[:8]
    return cache[account_id]


def _show_proposal(proposal_id: str, status: int = 200, error: str | None = None):
    ctx = current()
    with core_db.read_only(ctx.sessions) as db:
        try:
            row = proposals.get(db, proposal_id)
        except Refusal as refusal:
            return render("admin/proposal.html", refusal.status, proposal=None, error=refusal.translated())
        if not proposals.may_see(g.staff, row):
            return access.forbidden(tuple(proposals.roles_involved()))
        shown = _proposal_view(row)
    return render("admin/proposal.html", status, proposal=shown, error=error)


@bp.get("/proposals/<proposal_id>")
@requires(*proposals.roles_involved())
def proposal_page(proposal_id):
    return _show_proposal(proposal_id)


@bp.post("/proposals/<proposal_id>/approve")
@requires(*proposals.roles_involved())
def proposal_approve(proposal_id):
    try:
        row = proposals.approve(current(), access.signer(), proposal_id, request.form.get("reason", "")[:1000])
    except proposals.NotFresh:
        return _reauth(f"/admin/proposals/{proposal_id}")
    except Refusal as refusal:
        return _show_proposal(proposal_id, refusal.status, refusal.translated())
    notice = "approved" if row.status == proposals.DONE else "failed"
    return redirect(f"/admin/proposals/{row.id}?notice={notice}", 303)


@bp.post("/proposals/<proposal_id>/refuse")
@requires(*proposals.roles_involved())
def proposal_refuse(proposal_id):
    try:
        row = proposals.refuse(current(), access.signer(), proposal_id, request.form.get("reason", "")[:1000])
    except Refusal as refusal:
        return _show_proposal(proposal_id, refusal.status, refusal.translated())
    return redirect(f"/admin/proposals/{row.id}?notice={row.status}", 303)


# -- staff roles --------------------------------------------------------------------------------------------------


def _roles_page(status: int = 200, error: str | None = None, form: dict | None = None):
    ctx = current()
    with core_db.read_only(ctx.sessions) as db:
        rows = roles.all_grants(db, scope=g.staff)
        shown = [
            {"id": row.id, "name": _name(row.account_id), "role": row.role, "department": row.department, "granted": _when(row.granted_at)}
            for row in rows
        ]
    offered = staffing.offered(g.staff)
    departments = sorted(g.staff.departments(roles.DEPARTMENT_ADMIN))
    return render(
        "admin/roles.html",
        status,
        grants=shown,
        offered=offered,
        departments=departments,
        error=error,
        form=form or {},
        admin_roles=roles.ADMINISTRATOR_ROLES,
    )


@bp.get("/roles")
@requires(roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN)
def role_list():
    return _roles_page()


@bp.post("/roles/grant")
@requires(roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN)
def role_grant():
    form = {k: request.form.get(k, "")[:200] for k in ("account", "role", "department", "reason")}
    try:
        outcome = staffing.grant(current(), access.signer(), form["account"], form["role"], form["department"] or None, form["reason"])
    except proposals.NotFresh:
        return _reauth("/admin/roles")
    except Refusal as refusal:
        return _roles_page(refusal.status, refusal.translated(), form)
    if outcome.proposal is not None:
        return redirect(f"/admin/proposals/{outcome.proposal.id}?notice=proposed", 303)
    return redirect("/admin/roles?notice=granted", 303)


@bp.post("/roles/revoke")
@requires(roles.SYSTEM_ADMIN, roles.DEPARTMENT_ADMIN)
def role_revoke():
    grant_id = request.form.get("grant", "")
    try:
        staffing.revoke(current(), access.signer(), int(grant_id) if grant_id.isdigit() and len(grant_id) < 12 else -1)
    except Refusal as refusal:
        return _roles_page(refusal.status, refusal.translated())
    return redirect("/admin/roles?notice=revoked", 303)


# -- audit trail --------------------------------------------------------------------------------------------------


def _who() -> str:
    return f"account:{g.staff.account_id}"


def _search_or_refusal(db):
    try:
        return trail.parse(db, request.args), None
    except Refusal as refusal:
        return trail.Search(typed=tuple((k, request.args.get(k, "")[:300]) for k in ("actor", "subject", "action", "from", "to"))), refusal


def _event_time(stored: str) -> str:
    """A stored time (UTC) as pages show times: China Standard Time, to the second."""
    try:
        return format_datetime(datetime.fromisoformat(stored.replace("Z", "+00:00")), "yyyy-MM-dd HH:mm:ss")
    except ValueError:
        return stored


@bp.get("/audit")
@requires(*trail.READERS)
def audit_search():
    ctx = current()
    before = request.args.get("before", "")
    before = int(before) if before.isdigit() and len(before) < 16 else None
    with core_db.transaction(ctx.sessions) as db:
        search, refusal = _search_or_refusal(db)
        if refusal is not None:
            return render(
                "admin/audit.html",
                refusal.status,
                search=search,
                form=dict(search.typed),
                events=[],
                older=None,
                error=refusal.translated(),
            )
        found = trail.page(db, search, before)
        trail.record_search(db, _who(), search, before=before, shown=len(found.events))
    links = search.described()
    return render(
        "admin/audit.html",
        search=search,
        form=dict(search.typed),
        events=[{"time": _event_time(event.occurred_at), "event": event} for event in found.events],
        older=({**links, "before": found.older} if found.older else None),
        first_page=links if before else None,
        export=links,
        paged=before is not None,
    )


@bp.get("/audit/export.<fmt>")
@requires(*trail.READERS)
def audit_export(fmt):
    if fmt not in ("csv", "json"):
        return render("admin/refused.html", 404, error=gettext("Exports are CSV or JSON."))
    ctx = current()
    with core_db.transaction(ctx.sessions) as db:
        search, refusal = _search_or_refusal(db)
        if refusal is not None:
            return render("admin/refused.html", refusal.status, error=refusal.translated())
        trail.record_export(db, _who(), search, fmt)
    stamp = core_db.utc_now().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":
        body, mimetype = trail.csv_lines(ctx.sessions, search), "text/csv; charset=utf-8"
    else:
        body, mimetype = trail.json_chunks(ctx.sessions, search), "application/json"
    response = Response(stream_with_context(body), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/audit/verify")
@requires(*trail.READERS)
def audit_verify():
    """One step of a verification run; while the run goes on, the answer asks the browser for the next step (Refresh)."""
    ctx = current()
    args = request.args
    if "first" not in args and "last" not in args and "at" not in args:
        return render("admin/audit_verify.html", step=None, form={})
    form = {"first": args.get("first", "")[:16], "last": args.get("last", "")[:16]}
    try:
        with core_db.transaction(ctx.sessions) as db:
            if "at" not in args:  # the run starts: fix its range
                first, last, to_newest = trail.verify_bounds(db, args.get("first"), args.get("last"))
                at = first
                audit.record(
                    db, actor=_who(), action="admin.audit.verify_started", target="audit_events", details={"first": first, "last": last}
                )
            else:
                first, last = trail.seq_param(args.get("first"), 1), trail.seq_param(args.get("last"), 1)
                at, to_newest = trail.seq_param(args.get("at"), first), args.get("newest") == "1"
            step = trail.verify_step(db, first, last, at, to_newest=to_newest, step=trail.VERIFY_STEP)
            if step.next is None:
                trail.record_verification(db, _who(), step)
    except Refusal as refusal:
        return render("admin/audit_verify.html", refusal.status, step=None, form=form, error=refusal.translated())
    broken = None
    if not step.ok:
        message, values = trail.explained(step)
        broken = gettext(message, **values)
    next_url = None
    if step.next is not None:
        next_url = f"/admin/audit/verify?first={first}&last={last}&at={step.next}&newest={int(to_newest)}"
    form = {"first": first if first != 1 else "", "last": "" if to_newest else last}  # a run to the newest: again to the newest
    html, status = render("admin/audit_verify.html", step=step, form=form, broken=broken, next_url=next_url)
    response = Response(html, status)
    if next_url:
        response.headers["Refresh"] = f"0; url={next_url}"
    return response


# -- e-supervision ------------------------------------------------------------------------------------------------


def _charts(report) -> list[dict]:
    """Each figure: its chart (SVG) and the numbers beside it."""
    labels = [week.label for week in report.weeks]
    week_axis = gettext("ISO week")
    figures = [
        {
            "id": "issued",
            "title": gettext("Licences issued"),
            "series": [charts.Series(gettext("Licences issued"), [w.issued for w in report.weeks])],
            "y": gettext("Licences"),
        },
        {
            "id": "turnaround",
            "title": gettext("Time from a request (索取) to its licence"),
            "series": [
                charts.Series(gettext("Median (hours)"), [w.median_hours for w in report.weeks]),
                charts.Series(gettext("90th percentile (hours)"), [w.p90_hours for w in report.weeks]),
            ],
            "y": gettext("Hours"),
        },
        {
            "id": "overdue",
            "title": gettext("Overdue requests (索取), by the week of their deadline"),
            "series": [charts.Series(gettext("Open past the deadline"), [w.overdue for w in report.weeks])],
            "y": gettext("Requests"),
        },
    ]
    if report.province:
        figures += [
            {
                "id": "logins",
                "title": gettext("Logins by level"),
                "series": [
                    charts.Series(gettext("Level %(level)s", level=level), [w.logins[level] for w in report.weeks])
                    for level in supervision.LEVELS
                ],
                "y": gettext("Logins"),
            },
            {
                "id": "failed",
                "title": gettext("Failed logins"),
                "series": [charts.Series(gettext("Failed logins"), [w.failed for w in report.weeks])],
                "y": gettext("Attempts"),
            },
        ]
    for figure in figures:
        summary = "; ".join(
            f"{label}: " + ", ".join(f"{s.name} {'—' if s.values[n] is None else s.values[n]}" for s in figure["series"])
            for n, label in enumerate(labels)
        )
        figure["svg"] = charts.bar_chart(
            f"chart-{figure['id']}", figure["title"], summary, labels, figure["series"], y_label=figure["y"], x_label=week_axis
        )
    return figures


@bp.get("/supervision")
@requires(*supervision.VIEWERS)
def supervision_page():
    ctx = current()
    department = request.args.get("department", "")[:18] or None
    with core_db.read_only(ctx.sessions) as db:
        choices = supervision.departments(db, g.staff)
        try:
            report = supervision.report(db, g.staff, weeks=request.args.get("weeks"), department=department)
        except Refusal as refusal:
            if refusal.status == 403:
                return access.forbidden(supervision.VIEWERS)
            return render("admin/supervision.html", refusal.status, report=None, choices=choices, error=refusal.translated())
    return render("admin/supervision.html", report=report, choices=choices, figures=_charts(report))
