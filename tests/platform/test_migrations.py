"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL, one history per package."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from core import db
from hallmark import components


def _script() -> ScriptDirectory:
    return ScriptDirectory(str(db.MIGRATIONS), version_locations=[str(p) for p in components.migration_locations()])


def test_one_head_per_package():
    """Each component's branch (labelled with its name) has one head, and there is no head outside a branch."""
    script = _script()
    heads = script.get_heads()
    labelled = {c.name: script.get_revisions(f"{c.name}@head") for c in components.COMPONENTS if c.migrations is not None}
    assert all(len(found) == 1 for found in labelled.values()), labelled
    assert sorted(heads) == sorted(found[0].revision for found in labelled.values()), "a revision must continue its package's branch"


def test_each_package_keeps_its_revisions_in_its_own_folder():
    for component in components.COMPONENTS:
        if component.migrations is None:
            continue
        own = [path.name for path in component.migrations.glob("*.py")]
        assert own, f"{component.name} has no migrations in {component.migrations}"
        assert any(name.startswith(f"{component.name}_") for name in own), f"{component.name}'s branch point is missing"


def test_migrated_schema_equals_the_models(migrated):
    metadata = None
    for component in components.COMPONENTS:
        metadata = component.metadata  # imports every component's models
    engine, _ = migrated
    assert db.current_revisions(engine) == components.head_revisions()
    assert components.pending_revisions(engine) == frozenset()
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []
