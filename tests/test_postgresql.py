"""What differs between SQL dialects, checked on both: usernames ignore case, and a database holding
rows at the previous head (0004) upgrades to the current one with every row intact and each
prediction given its analysis's owner and scenario."""

from __future__ import annotations

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from tests.conftest import TEST_PASSWORD, csrf_token, login, make_user
from webapp.extensions import db
from webapp.models import Analysis, User

pytestmark = pytest.mark.both_databases


def test_usernames_are_one_account_regardless_of_case(app):
    """ "Alice" can sign in as "alice", and nobody can register "ALICE" beside her."""
    make_user(app, "Alice")
    assert login(app.test_client(), "alice").status_code == 302
    client = app.test_client()
    response = client.post(
        "/register",
        data={
            "username": "ALICE",
            "password": TEST_PASSWORD,
            "confirm": TEST_PASSWORD,
            "csrf_token": csrf_token(client, "/register"),
        },
    )
    assert response.status_code == 200 and "taken" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 1


def test_upgrade_from_the_previous_head_keeps_rows_and_workers_work(app):
    """Down to 0004, add a record as 0004 knew it, up to head: the record is intact, gains an empty
    ``worker`` column, and the new ``worker`` table takes rows."""
    directory = app.extensions["migrate"].directory
    with app.app_context():
        downgrade(directory=directory, revision="0004")
        db.session.remove()
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    'INSERT INTO "user" (username, password_hash, role, active, session_token, created_at) '
                    "VALUES ('carol', 'x', 'user', true, 't', '2026-01-01')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO analysis (user_id, scenario, created_at, text, search_text, app_version, status, "
                    "tasks, attempts) SELECT id, 'service', '2026-01-05', 'hello', 'hello', '1.0.0', 'done', "
                    "'[\"sentiment\"]', 1 FROM \"user\" WHERE username = 'carol'"
                )
            )
        upgrade(directory=directory)
        [analysis] = db.session.scalars(db.select(Analysis)).all()
        assert (analysis.text, analysis.status, analysis.tasks, analysis.worker) == (
            "hello",
            "done",
            ["sentiment"],
            None,
        )
        db.session.execute(
            text(
                "INSERT INTO worker (name, hostname, pid, threads, started_at, last_seen_at, jobs_done, jobs_failed, "
                "models) VALUES ('h:1', 'h', 1, 2, '2026-01-01', '2026-01-01', 0, 0, '[]')"
            )
        )
        db.session.commit()
        assert db.session.scalar(text("SELECT count(*) FROM worker")) == 1
