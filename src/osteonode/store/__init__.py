"""Durable state of the node: database tables, the file spool, the job queue and their history.

Modules
-------
tables
    SQLAlchemy 2 ORM models (instances, jobs, events, results, deliveries) and their coded states.
db
    :class:`Database`: engine, sessions and the alembic upgrade shipped inside the package.
spool
    :class:`Spool`: crash-safe files on disk, addressed by paths relative to the spool root.
queue
    Receipts, job claiming with leases, job state changes and events.
history
    Read-only views for ``osteonode status``: counts and what happened to one image.
retention
    Spool purge that never removes an instance with unfinished work.
"""
