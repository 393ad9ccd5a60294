"""SQLite connection settings that make concurrent writers safe.

With WAL and a busy timeout, a transaction that reads and then writes still fails with
"database is locked" when another writer got in between (sqlalchemy/sqlalchemy#5034; measured in
shared/RELIABILITY.md: 2,296 of 2,400 such transactions failed with a deferred BEGIN, 0 with BEGIN
IMMEDIATE). So every transaction starts with ``BEGIN IMMEDIATE`` (the SQLAlchemy docs' recipe:
pysqlite's own transaction handling is switched off and SQLAlchemy emits BEGIN). The price is that
transactions serialise, so code must not hold one open across slow work such as inference: see
``analyses.create_analysis``.
"""

from __future__ import annotations

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


@event.listens_for(Engine, "connect")
def _configure_sqlite(dbapi_connection, connection_record) -> None:
    if type(dbapi_connection).__module__.split(".")[0] not in {"sqlite3", "pysqlite2"}:
        return
    dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" hook below emit BEGIN
    cursor = dbapi_connection.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


@event.listens_for(Engine, "begin")
def _begin_immediate(connection) -> None:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def init_app(app: Flask) -> None:
    """Nothing to bind per app: the listeners above apply to every SQLite engine in the process."""
