"""``/dev/sms``: the development SMS inbox (core.sms.EmbeddedInbox), for browsers on this machine only.

It shows the codes that open accounts, so it answers only requests from a loopback
address (the client address as the app sees it, after ``trusted_proxies``), and only
while no gateway is configured; anyone else gets a 404, as if it did not exist.
"""

from __future__ import annotations

import ipaddress
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, render_template, request

from core import db as core_db
from core import outbox, sms
from core.web import pages

bp = Blueprint("core_sms", __name__)
pages(bp)
CHINA = ZoneInfo("Asia/Shanghai")
SESSIONS = "core.sms.sessions"  # app.extensions: the session factory whose outbox sends the texts


def install(app, sessions) -> None:
    """Give the page its session factory (core's component does, with the outbox's)."""
    app.extensions[SESSIONS] = sessions


def _local_client() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


@bp.get("/dev/sms")
def inbox():
    sessions = current_app.extensions[SESSIONS]
    inbox = outbox.senders(sessions).get(sms.KIND)
    if inbox is None or not isinstance(inbox.send, sms.EmbeddedInbox) or not _local_client():
        abort(404)  # texts really go to a gateway (or nowhere): there is no inbox to show
    with core_db.read_only(sessions) as db:
        texts = sms.inbox(db)
    response = current_app.make_response(render_template("web/sms_inbox.html", texts=texts, sign_name=inbox.send.sign_name, zone=CHINA))
    response.headers["Cache-Control"] = "no-store"
    return response
