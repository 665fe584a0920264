"""The node's database: engine, sessions and the schema migration shipped inside the package.

Two back-ends share one code path:

* SQLite (the embedded default, ``sqlite:///var/osteonode.db``): write-ahead log,
  ``synchronous=FULL`` so a commit is on disk before it returns, foreign keys on, and every transaction opened with
  ``BEGIN IMMEDIATE``. SQLite allows one writer at a time; taking the write lock at the start of a
  transaction makes concurrent sessions wait (``busy_timeout``) instead of failing half-way when a
  read transaction tries to become a write transaction. Keep sessions short: never hold one open
  while decoding or running a model.
* PostgreSQL (``postgresql+psycopg://...``; ``postgresql://`` and ``postgres://`` are mapped to the
  psycopg 3 driver): the shared database and job queue of a multi-host installation.

The schema is created and upgraded by alembic (:meth:`Database.upgrade`), driven programmatically
from the migrations in ``osteonode/store/migrations``; no ``alembic.ini`` is needed. A database
already at :data:`SCHEMA_REVISION` is recognised with one query, without importing alembic (a
tenth of a second of the receiver's start-up).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from osteonode.store.wakeups import PostgresListener, Wakeups, take_committed_wakeups

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "SCHEMA_REVISION",
    "Database",
    "DatabaseError",
    "DatabaseNotCreated",
    "normalize_database_url",
]

log = structlog.get_logger(__name__)

#: How long an SQLite connection waits for another writer before it gives up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Key of the PostgreSQL advisory lock that serialises schema upgrades of several processes.
UPGRADE_ADVISORY_LOCK_KEY = int.from_bytes(b"osteonod", "big")
_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg"}
#: The newest shipped migration (alembic's head; a test holds the two together). A database at it
#: needs no upgrade, which is known without loading alembic and its migration scripts.
SCHEMA_REVISION = "0003"
#: The table in which alembic records a database's revision.
_VERSION_TABLE = "alembic_version"


class DatabaseError(RuntimeError):
    """The database cannot be used as configured."""


class DatabaseNotCreated(DatabaseError):
    """The configured database does not exist yet: the node creates it when it first starts."""


def normalize_database_url(url: str | URL) -> URL:
    """Return the SQLAlchemy URL the node uses for a configured database URL.

    Parameters
    ----------
    url: str | sqlalchemy.engine.URL
        ``sqlite:///path/to/file.db`` or ``postgresql[+psycopg]://user@host:port/db``
        (``postgres://`` is accepted too).

    Returns
    -------
    sqlalchemy.engine.URL
        The URL with PostgreSQL mapped to the psycopg 3 driver.

    Raises
    ------
    ValueError
        If the URL cannot be parsed, names another back-end or driver, or is an in-memory SQLite
        database (the node's threads need one shared database file).
    """
    if not isinstance(url, (str, URL)):
        raise TypeError(f"database URL must be a str, got {type(url).__name__}")
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise ValueError(f"cannot parse database URL {str(url)!r}: {error}") from None
    if parsed.drivername in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in {"sqlite", "sqlite+pysqlite"}:
        if parsed.database in (None, "", ":memory:"):
            raise ValueError(
                "in-memory SQLite is not supported: give a file, e.g. sqlite:///var/osteonode.db"
            )
        return parsed
    raise ValueError(
        f"unsupported database {parsed.drivername!r}: use sqlite:///<file> or "
        "postgresql+psycopg://<user>@<host>/<database>"
    )


def _enable_write_ahead_log(cursor: sqlite3.Cursor) -> None:
    """Switch the database file to WAL mode, waiting for other connections that hold it.

    Changing the journal mode needs the file to itself, and SQLite answers "database is locked" at
    once instead of calling the busy handler while another connection (for instance another
    process opening a fresh database) has it open; so retry within the busy timeout. The mode is
    persistent: once one connection has switched it, the others find it set.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal":
                return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        else:
            if time.monotonic() > deadline:
                raise DatabaseError("SQLite refused to switch the database to WAL mode")
        time.sleep(0.05)


def _configure_sqlite(engine: Engine) -> None:
    """Set SQLite pragmas on new connections and begin transactions with ``BEGIN IMMEDIATE``."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _enable_write_ahead_log(cursor)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The node's database.

    Parameters
    ----------
    url: str | sqlalchemy.engine.URL
        Database URL (see :func:`normalize_database_url`). For SQLite the directory of the file is
        created if missing.
    echo: bool
        Log every SQL statement (debugging only).
    create: bool
        For SQLite, create the file's directory if missing (the node does so when it starts).
        Commands that only read use :meth:`open_existing`, which creates nothing.

    Raises
    ------
    ValueError
        If the URL is not usable (see :func:`normalize_database_url`).
    """

    def __init__(self, url: str | URL, *, echo: bool = False, create: bool = True) -> None:
        self.url = normalize_database_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if create:
                Path(self.url.database or "").parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(self.url, echo=echo)
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(self.url, echo=echo, pool_pre_ping=True)
        # Objects stay readable after commit: a worker claims a job in one short session and
        # reports on it in another one, after the (long) processing in between.
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        #: The workers and senders of this process waiting for work (see osteonode.store.wakeups).
        self.wakeups = Wakeups()
        event.listen(self._sessions, "after_commit", self._wake_committed)
        event.listen(self._sessions, "after_rollback", take_committed_wakeups)

    def _wake_committed(self, session: Session) -> None:
        for channel in take_committed_wakeups(session):
            self.wakeups.wake(channel)

    def listener(self) -> PostgresListener | None:
        """A thread that wakes this process's waiters for work other processes commit.

        Returns
        -------
        PostgresListener | None
            The listener, not started; None on SQLite, where the node is one process.
        """
        if self.is_sqlite:
            return None
        import psycopg

        conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return PostgresListener(lambda: psycopg.connect(conninfo), self.wakeups)

    @classmethod
    def open_existing(cls, url: str | URL) -> Database:
        """Open a database the node has already created, creating nothing (no folder, file or schema).

        Parameters
        ----------
        url: str | sqlalchemy.engine.URL
            Database URL (see :func:`normalize_database_url`).

        Raises
        ------
        DatabaseNotCreated
            If the SQLite file, or the schema, does not exist yet.
        DatabaseError
            If the database cannot be reached.
        """
        normalized = normalize_database_url(url)
        if normalized.get_backend_name() == "sqlite" and not Path(normalized.database or "").is_file():
            raise DatabaseNotCreated(
                f"no database at {normalized.database} yet: the node creates it when it first starts"
            )
        database = cls(normalized, create=False)
        try:
            revision = database.current_revision()
        except Exception as error:  # driver errors differ by back-end; all mean "cannot use it"
            database.dispose()
            raise DatabaseError(f"cannot reach database {database!r}: {_first_line(error)}") from error
        if revision is None:
            database.dispose()
            raise DatabaseNotCreated(
                f"database {database!r} has no osteonode schema yet: the node creates it when it "
                "first starts"
            )
        return database

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Open a session in one transaction: committed on success, rolled back on error.

        Yields
        ------
        sqlalchemy.orm.Session
            The session; its objects stay loaded after the commit.
        """
        with self._sessions.begin() as session:
            yield session

    def upgrade(self, revision: str = "head") -> None:
        """Create or upgrade the schema with the migrations shipped in the package.

        Several processes may call this at once: on PostgreSQL an advisory lock serialises them, on
        SQLite the write lock of ``BEGIN IMMEDIATE`` does. A database already at the newest
        revision is left as it is after one query; alembic is loaded only to change a schema.

        Parameters
        ----------
        revision: str
            Target alembic revision.

        Raises
        ------
        DatabaseError
            If the database cannot be reached or a migration fails.
        """
        try:
            if revision == "head" and self.current_revision() == SCHEMA_REVISION:
                log.info("database_upgraded", url=repr(self), from_revision=SCHEMA_REVISION,
                         to_revision=SCHEMA_REVISION)
                return
            from alembic import command

            config = _alembic_config()
            with self.engine.begin() as connection:
                if not self.is_sqlite:
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": UPGRADE_ADVISORY_LOCK_KEY},
                    )
                before = _stored_revision(connection)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                after = _stored_revision(connection)
        except Exception as error:
            raise DatabaseError(f"cannot upgrade database {self!r}: {error}") from error
        log.info("database_upgraded", url=repr(self), from_revision=before, to_revision=after)

    def current_revision(self) -> str | None:
        """Return the schema revision of the database, or None if it has no schema yet."""
        with self.engine.connect() as connection:
            return _stored_revision(connection)

    def is_up_to_date(self) -> bool:
        """Return whether the database schema is at the newest shipped revision."""
        return self.current_revision() == SCHEMA_REVISION

    def dispose(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()


def _first_line(error: BaseException) -> str:
    """A driver error's first line (SQLAlchemy appends the statement and a link to its docs)."""
    origin = getattr(error, "orig", None) or error
    return str(origin).strip().splitlines()[0] if str(origin).strip() else type(origin).__name__


def _stored_revision(connection: Connection) -> str | None:
    """The revision alembic recorded in the database, None before the first migration."""
    if not inspect(connection).has_table(_VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalar_one_or_none()


def _alembic_config() -> Config:
    """Return an alembic configuration pointing at the migrations inside the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("osteonode.store") / "migrations"))
    return config
