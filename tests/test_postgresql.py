"""What differs between SQL dialects, checked on both: usernames ignore case, and a database holding
rows at the previous head (0004) upgrades to the current one with every row intact and each
prediction given its analysis's owner and scenario."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from tests.conftest import TEST_PASSWORD, csrf_token, login, make_user
from webapp.extensions import db
from webapp.models import Analysis, User

pytestmark = pytest.mark.both_databases


@contextmanager
def _at_0004(directory: str, *, user: str):
    """Down to 0004 (the previous head), with one user inserted as 0004 knew it; yields a connection
    in a transaction for the rest of the old rows."""
    downgrade(directory=directory, revision="0004")
    db.session.remove()
    with db.engine.begin() as connection:
        connection.execute(
            text(
                'INSERT INTO "user" (username, password_hash, role, active, session_token, created_at) '
                "VALUES (:name, 'x', 'user', true, 't', '2026-01-01')"
            ),
            {"name": user},
        )
        yield connection


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
        with _at_0004(directory, user="carol") as connection:
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
                "INSERT INTO worker (name, hostname, threads, started_at, last_seen_at, jobs_done, jobs_failed, "
                "models) VALUES ('h:1', 'h', 2, '2026-01-01', '2026-01-01', 0, 0, '[]')"
            )
        )
        db.session.commit()
        assert db.session.scalar(text("SELECT count(*) FROM worker")) == 1


def test_downgrade_with_data_then_upgrade_again(app):
    """Head with a graded homework and a service-desk record (OCR, category, reply, reviews) goes down
    to 0004 without a foreign-key violation and back up; the older rows keep their values."""
    from tests.conftest import client_for, png_bytes, record_id, submit
    from tests.test_history import decide
    from webapp.analyses import pending_ids
    from webapp.education import add_submissions, record_grade
    from webapp.jobs import enqueue_analyses
    from webapp.models import Assignment, Prediction, Review, Rubric, RubricCriterion, User

    agent = client_for(app, "agent")
    service_id = record_id(submit(agent, text="Refund please", image=png_bytes()))
    decide(agent, service_id, "reply", "correct", value="Dear customer, done.")
    decide(agent, service_id, "sentiment", "correct", value="neutral")
    teacher = client_for(app, "tina", role="teacher")
    assert teacher.get("/education/assignments/").status_code == 200
    with app.app_context():
        tina = db.session.scalar(User.by_username("tina"))
        rubric = Rubric(user_id=tina.id, title="R", criteria=[RubricCriterion(title="All", max_points=5, position=0)])
        assignment = Assignment(user_id=tina.id, title="A", rubric=rubric)
        db.session.add(assignment)
        db.session.flush()
        batch, _refused = add_submissions(assignment, tina, [(png_bytes(), "kim.png")])
        db.session.commit()
        enqueue_analyses(pending_ids(batch))  # the photo's OCR, caption and the tone of its text
        [submission] = assignment.submissions
        record_grade(submission, tina, {rubric.criteria[0].id: 4}, "good")
        db.session.commit()
        assert db.session.scalar(db.select(db.func.count(Review.id))) == 3

    directory = app.extensions["migrate"].directory
    with app.app_context():
        downgrade(directory=directory, revision="0004")
        kinds = db.session.execute(text("SELECT kind, count(*) FROM prediction GROUP BY kind ORDER BY kind")).all()
        # The OCR, category, reply and grade rows went with the 0006 and 0007 downgrades; fusion and
        # agreement rows need no schema of their own, so they stay.
        assert [tuple(row) for row in kinds] == [("agreement", 2), ("caption", 2), ("fusion", 1), ("sentiment", 2)]
        # The sentiment correction survives; the reply's and the grade's reviews went with their rows.
        assert db.session.execute(text("SELECT decision, value FROM review")).all()[0][0] == "correct"
        assert db.session.scalar(text("SELECT count(*) FROM review")) == 1
        db.session.remove()
        upgrade(directory=directory)
        sentiment = db.session.get(Analysis, service_id).prediction("sentiment")
        assert (sentiment.value, sentiment.review_state) == ("neutral", "corrected")
        # two captions, two sentiments, two agreements, one fusion
        assert db.session.scalar(db.select(db.func.count(Prediction.id))) == 7


def test_a_deleted_predictions_id_is_not_given_again_after_the_upgrade(app):
    """0005 rebuilds ``prediction`` on SQLite; the id of a prediction deleted before the upgrade stays
    retired (PostgreSQL sequences never go back in the first place)."""
    directory = app.extensions["migrate"].directory
    with app.app_context():
        with _at_0004(directory, user="dan") as connection:
            for _ in range(2):
                connection.execute(
                    text(
                        "INSERT INTO analysis (user_id, scenario, created_at, search_text, app_version, status, "
                        "tasks, attempts) SELECT id, 'service', '2026-01-05', '', '1', 'done', '[]', 1 FROM \"user\""
                    )
                )
            connection.execute(
                text(
                    "INSERT INTO prediction (analysis_id, kind, created_at, model_id, output, review_state) "
                    "SELECT id, 'caption', '2026-01-05', 'm', '{\"text\": \"x\"}', 'unreviewed' FROM analysis"
                )
            )
            highest = connection.execute(text("SELECT max(id) FROM prediction")).scalar()
            connection.execute(text("DELETE FROM prediction WHERE id = :id"), {"id": highest})
        upgrade(directory=directory)
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO prediction (analysis_id, user_id, scenario, kind, created_at, model_id, output, "
                    "review_state) SELECT max(id), max(user_id), 'service', 'caption', '2026-01-06', 'm', "
                    "'{\"text\": \"y\"}', 'unreviewed' FROM analysis"
                )
            )
            assert connection.execute(text("SELECT max(id) FROM prediction")).scalar() > highest
