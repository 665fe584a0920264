"""The database opens either back-end from a URL, keeps commits durable and times in UTC."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import StatementError

from osteonode.store.db import Database, normalize_database_url
from osteonode.store.queue import record_event
from osteonode.store.tables import Event, EventKind


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://node@db.example:5432/osteonode", "postgresql+psycopg"),
        ("postgres://node@db.example/osteonode", "postgresql+psycopg"),
        ("postgresql+psycopg://node@db.example/osteonode", "postgresql+psycopg"),
        ("sqlite:///var/osteonode.db", "sqlite"),
    ],
)
def test_database_urls_map_to_the_supported_drivers(given: str, driver: str) -> None:
    assert normalize_database_url(given).drivername == driver


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "mysql://node@db/osteonode", "not a url"]
)
def test_unsupported_database_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        normalize_database_url(url)


def test_sqlite_file_gets_its_directory_and_durable_settings(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'var' / 'deep' / 'osteonode.db'}")
    try:
        with database.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (tmp_path / "var" / "deep").is_dir()
    finally:
        database.dispose()


def test_session_rolls_back_on_error_and_commits_on_success(database: Database) -> None:
    with pytest.raises(RuntimeError), database.session() as session:
        record_event(session, EventKind.REFUSED, "rolled back")
        raise RuntimeError("handler failed")
    with database.session() as session:
        event = record_event(session, EventKind.REFUSED, "kept")
    assert event.message == "kept"  # still readable once the session is closed
    with database.session() as session:
        assert session.scalars(select(Event.message)).all() == ["kept"]


def test_times_come_back_as_utc_whatever_zone_went_in(database: Database) -> None:
    tokyo = timezone(timedelta(hours=9))
    moment = datetime(2026, 1, 2, 12, 0, tzinfo=tokyo)
    with database.session() as session:
        event = record_event(session, EventKind.REFUSED, "zone")
        event.at = moment
    with database.session() as session:
        stored = session.scalars(select(Event.at)).one()
    assert stored == moment
    assert stored.tzinfo == UTC


def test_naive_times_are_refused(database: Database) -> None:
    with pytest.raises(StatementError, match="naive"), database.session() as session:
        event = record_event(session, EventKind.REFUSED, "naive")
        event.at = datetime(2026, 1, 2, 12, 0)
        session.flush()


def test_processes_upgrading_at_once_do_not_collide(database_url: str) -> None:
    databases = [Database(database_url) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(databases))

    def upgrade(database: Database) -> None:
        try:
            barrier.wait()
            database.upgrade()
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=upgrade, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert all(database.is_up_to_date() for database in databases)
        with databases[0].engine.connect() as connection:
            versions = connection.execute(text("SELECT count(*) FROM alembic_version")).scalar()
        assert versions == 1
    finally:
        for database in databases:
            database.dispose()


def test_foreign_keys_are_enforced(database: Database) -> None:
    with pytest.raises(Exception, match="(?i)foreign key"), database.session() as session:
        session.add(
            Event(instance_id=999_999, at=datetime.now(UTC), kind=EventKind.REFUSED,
                  message="dangling", details={})
        )
        session.flush()
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0
