"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL, from one head."""

from __future__ import annotations

import importlib

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core import db
from core.db import Base

MODEL_MODULES = ("core.models", "ca.models", "idp.models", "signing.models")


def test_one_head():
    assert len(db.head_revisions()) == 1, "parallel branches must be joined by a merge revision"


def test_migrated_schema_equals_the_models(migrated):
    for name in MODEL_MODULES:
        importlib.import_module(name)
    engine, _ = migrated
    assert db.current_revisions(engine) == db.head_revisions()
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
