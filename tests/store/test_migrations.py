"""The alembic migrations create exactly the schema the ORM models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from osteonode.store.db import Database
from osteonode.store.tables import Base


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    database = Database(database_url)
    try:
        assert database.current_revision() is None
        database.upgrade()
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == []
        assert database.is_up_to_date()
    finally:
        database.dispose()


def test_upgrade_twice_changes_nothing(database: Database) -> None:
    revision = database.current_revision()
    database.upgrade()
    assert database.current_revision() == revision
    tables = set(inspect(database.engine).get_table_names())
    assert {"instances", "jobs", "events", "results", "deliveries"} <= tables
