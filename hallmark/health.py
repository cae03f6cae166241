"""``/healthz``: is the database answering, can the HSM token be used, and does every component say it is well?"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from core import component, db
from core.db import DatabaseUnavailable

bp = Blueprint("health", __name__)
CHECKS = "hallmark.health.checks"  # app.extensions: [(name, check, component name)] from the component list


def install(app, components) -> None:
    """Register ``/healthz`` with the health checks the components declare."""
    app.extensions[CHECKS] = [(check.name, check.check, c.name) for c in components for check in c.health]
    app.register_blueprint(bp)


@bp.get("/healthz")
def healthz():
    services = component.services()
    body = {"database": _database_status(services.engine), "hsm": services.keys.status().as_dict()}
    if body["database"]["status"] == "ok":  # the components' checks read the database
        for name, check, owner in current_app.extensions.get(CHECKS, ()):
            try:
                body[name] = check(services[owner])
            except Exception as exc:  # a check that fails is an unhealthy answer, not a 500
                body[name] = {"status": "error", "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
    ok = all(part["status"] == "ok" for part in body.values())
    body = {"status": "ok" if ok else "error", **body}
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
