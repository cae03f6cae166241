"""``/healthz``: is the database answering, and can the HSM token be used?"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from core import db
from core.db import DatabaseUnavailable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    services = current_app.extensions["hallmark.services"]
    database = _database_status(services.engine)
    hsm = services.keys.status().as_dict()
    ok = database["status"] == "ok" and hsm["status"] == "ok"
    body = {"status": "ok" if ok else "error", "database": database, "hsm": hsm}
    response = jsonify(body)
    response.status_code = 200 if ok else 503
    response.headers["Cache-Control"] = "no-store"
    return response


def _database_status(engine) -> dict:
    try:
        db.check(engine)
        return {"status": "ok", "dialect": engine.dialect.name}
    except DatabaseUnavailable as exc:
        return {"status": "error", "dialect": engine.dialect.name, "detail": str(exc)}
