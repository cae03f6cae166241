"""core.web answers a part that is down for now (the database, the HSM token) with 503 and Retry-After, not 500.

A small Flask app with the shared web layer; the views raise what SQLAlchemy and the key manager raise when
PostgreSQL is restarting or the token is gone. The served behaviour under a real restart is in test_faults.py.
"""

from __future__ import annotations

import pytest
from flask import Blueprint, Flask
from sqlalchemy import exc as sql_errors

from core import web
from core.db import DatabaseUnavailable
from hsm import TokenNotFound, TokenUnavailable


class _DriverError(Exception):
    pass


RAISED = {
    "dropped": sql_errors.OperationalError("SELECT 1", {}, _DriverError("server closed the connection unexpectedly")),
    "refused": sql_errors.InterfaceError("connect", {}, _DriverError("connection refused")),
    "pool": sql_errors.TimeoutError("QueuePool limit of size 10 overflow 10 reached"),
    "unreachable": DatabaseUnavailable("cannot reach the database"),
    "token": TokenUnavailable("hallmark", "GeneralError"),
    "no_token": TokenNotFound("hallmark", []),
    "integrity": sql_errors.IntegrityError("INSERT", {}, _DriverError("duplicate key")),
}


@pytest.fixture
def client():
    app = Flask("unavailable-test")
    app.config["SECRET_KEY"] = "test"
    web.init_app(app)
    web.unavailable_when(app, TokenUnavailable, detail="the key store (HSM) is not available at the moment; try again shortly")
    api = Blueprint("api", __name__)
    pages = Blueprint("pages", __name__)
    web.pages(pages)

    @api.get("/api/raise/<what>")
    def raise_api(what):
        raise RAISED[what]

    @pages.get("/page/<what>")
    def raise_page(what):
        raise RAISED[what]

    app.register_blueprint(api)
    app.register_blueprint(pages)
    return app.test_client()


@pytest.mark.parametrize("what", ["dropped", "refused", "pool", "unreachable", "token", "no_token"])
def test_a_part_that_is_down_is_503_problem_json_with_retry_after(client, what):
    answer = client.get(f"/api/raise/{what}")
    assert answer.status_code == 503
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.headers["Retry-After"] == "5"
    body = answer.get_json()
    assert body["status"] == 503 and "try again" in body["detail"]
    assert "connection" not in body["detail"]  # the driver's words stay in the log


def test_a_page_says_it_in_chinese_first(client):
    answer = client.get("/page/dropped", headers={"Accept": "text/html"})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "服务暂不可用" in answer.get_data(as_text=True)


def test_other_database_errors_are_still_500(client):
    answer = client.get("/api/raise/integrity")
    assert answer.status_code == 500 and "Retry-After" not in answer.headers
