"""SQLite runs in WAL mode with foreign keys on, and every transaction begins IMMEDIATE (RELIABILITY D2);
concurrent writers lose nothing on SQLite or PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import event, text

from tests.conftest import make_user
from webapp.extensions import db
from webapp.models import User


def test_connections_use_wal_and_foreign_keys(app):
    """Every connection of the app's engine has journal_mode=wal and foreign_keys=1."""
    with app.app_context():
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_transactions_begin_immediate(app):
    """A session transaction starts with BEGIN IMMEDIATE, so read-then-write never fails on upgrade."""
    statements: list[str] = []
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    assert statements[0] == "BEGIN IMMEDIATE"


@pytest.mark.both_databases
def test_concurrent_read_then_write_transactions_all_commit(app):
    """Eight threads each reading then writing, 20 times, lose no transaction (on SQLite, none to
    'database is locked'); every row is there afterwards."""
    make_user(app, "seed")
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        with app.app_context():
            for index in range(20):
                try:
                    db.session.scalar(db.select(db.func.count(User.id)))  # read first ...
                    user = User(username=f"w{number}-{index}", password_hash="x")
                    db.session.add(user)  # ... then write, in the same transaction
                    db.session.commit()
                except Exception as exc:  # collected: the assertion lists them
                    db.session.rollback()
                    errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 1 + 8 * 20
        if db.engine.dialect.name != "sqlite":
            return
        path = db.engine.url.database
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
