"""The alembic migrations create exactly the schema the ORM models describe."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from osteonode.store.db import SCHEMA_REVISION, Database, _alembic_config
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


def test_the_revision_a_started_node_expects_is_the_newest_migration() -> None:
    # The node skips alembic when the database is at SCHEMA_REVISION: a migration added without
    # moving it would never run.
    assert SCHEMA_REVISION == ScriptDirectory.from_config(_alembic_config()).get_current_head()


def test_a_database_at_an_older_revision_is_upgraded_on_start(database_url: str) -> None:
    database = Database(database_url)
    try:
        database.upgrade("0001")
        database.upgrade()
        assert database.current_revision() == SCHEMA_REVISION
        assert "worker_heartbeats" in inspect(database.engine).get_table_names()
    finally:
        database.dispose()


def test_upgrade_twice_changes_nothing(database: Database) -> None:
    revision = database.current_revision()
    database.upgrade()
    assert database.current_revision() == revision
    tables = set(inspect(database.engine).get_table_names())
    assert {"instances", "jobs", "events", "results", "deliveries"} <= tables


def test_unconfirmed_deliveries_migration_keeps_existing_rows_and_downgrades(
    database_url: str,
) -> None:
    database = Database(database_url)
    at = "2026-12-01 10:00:00+00:00"
    try:
        database.upgrade("0001")
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO instances (id, sop_instance_uid, sop_class_uid, transfer_syntax_uid,"
                    " spool_path, size_bytes, calling_ae, called_ae, received_at, last_received_at,"
                    " receipt_count) VALUES (1, '1.2.3', '1.2', '1.2.840.10008.1.2.1', 'a.dcm', 1,"
                    " 'MODALITY', 'OSTEONODE', :at, :at, 1)"
                ),
                {"at": at},
            )
            connection.execute(
                text(
                    "INSERT INTO jobs (id, instance_id, state, attempts, max_attempts, created_at,"
                    " updated_at) VALUES (1, 1, 'done', 1, 3, :at, :at)"
                ),
                {"at": at},
            )
            connection.execute(
                text(
                    "INSERT INTO results (id, job_id, instance_id, pipeline, payload, created_at)"
                    " VALUES (1, 1, 1, 'lumbar', '{}', :at)"
                ),
                {"at": at},
            )
            for delivery_id, state in ((1, "failed"), (2, "dead")):
                connection.execute(
                    text(
                        "INSERT INTO deliveries (id, result_id, destination, sop_instance_uid,"
                        " sop_class_uid, spool_path, state, attempts, created_at) VALUES"
                        " (:id, 1, 'pacs', :uid, '1.2', 'out.dcm', :state, 2, :at)"
                    ),
                    {"id": delivery_id, "uid": f"1.2.3.{delivery_id}", "state": state, "at": at},
                )

        database.upgrade()
        with database.engine.begin() as connection:
            rows = connection.execute(
                text("SELECT state, unconfirmed_at FROM deliveries ORDER BY id")
            ).all()
            assert [tuple(row) for row in rows] == [("failed", None), ("dead", None)]
            connection.execute(
                text("UPDATE deliveries SET state = 'unconfirmed', unconfirmed_at = :at WHERE id = 1"),
                {"at": at},
            )
            connection.execute(
                text("UPDATE deliveries SET state = 'maybe_sent', unconfirmed_at = :at WHERE id = 2"),
                {"at": at},
            )

        config = _alembic_config()
        with database.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
        columns = {column["name"] for column in inspect(database.engine).get_columns("deliveries")}
        with database.engine.connect() as connection:
            states = connection.execute(text("SELECT state FROM deliveries ORDER BY id")).scalars().all()
        assert "unconfirmed_at" not in columns
        assert states == ["failed", "dead"]
    finally:
        database.dispose()
