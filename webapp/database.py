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

from .extensions import db

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


def _configure_sqlite(dbapi_connection, _connection_record) -> None:
    dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" hook below emit BEGIN
    cursor = dbapi_connection.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _begin_immediate(connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def init_app(app: Flask) -> None:
    """Apply the settings above to this app's engine when it is SQLite (call after ``db.init_app``)."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name != "sqlite":
        return
    event.listen(engine, "connect", _configure_sqlite)
    event.listen(engine, "begin", _begin_immediate)
