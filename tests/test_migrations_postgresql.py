"""The migrations on a real PostgreSQL server (a throwaway cluster), where its binaries are installed.

SQLite is the embedded default and every other test's database; this proves the schema history is
not SQLite-only: v1 rows at 0003 upgrade with their values, ids continue, a job claim works
(UPDATE ... RETURNING), audit rows stay append-only, and 0004 downgrades and upgrades again.
"""

from __future__ import annotations

import json

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from webapp import create_app
from webapp.extensions import db
from webapp.models import Analysis

pytest.importorskip("psycopg", reason="psycopg is not installed")


@pytest.fixture
def postgres_url(postgres):
    """An empty database on the session's throwaway PostgreSQL server (skipped without its binaries)."""
    return postgres.create_database("migrations_from_v1")


def test_migrations_run_on_postgresql(postgres_url, tmp_path):
    """0001-0004 on PostgreSQL: v1 values move into predictions, ids continue, claims and audit work."""
    app = create_app(
        {"SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": postgres_url, "PRISM_MODEL_BACKEND": "fake"},
        instance_path=str(tmp_path),
    )
    with app.app_context():
        directory = app.extensions["migrate"].directory
        upgrade(directory=directory, revision="0003")
        scores = json.dumps({"negative": 0.9, "neutral": 0.06, "positive": 0.04})
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    'INSERT INTO "user" (id, username, password_hash, role, active, session_token, created_at) '
                    "VALUES (1, 'alice', 'x', 'user', true, 't', '2026-01-01')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO analysis (id, user_id, scenario, created_at, text, caption, caption_model, "
                    "sentiment_label, sentiment_score, sentiment_scores, sentiment_raw_scores, sentiment_model, "
                    "app_version) VALUES (5, 1, 'service', '2026-01-05', '退款', 'a box', 'm1', 'negative', 0.9, "
                    ":scores, :scores, 'm2', '1.0.0')"
                ),
                {"scores": scores},
            )
            connection.execute(text("SELECT setval('analysis_id_seq', 5)"))
        upgrade(directory=directory)

        analysis = db.session.get(Analysis, 5)
        assert (analysis.status, analysis.tasks, analysis.search_text) == (
            "done",
            ["caption", "sentiment"],
            "退款\na box",
        )
        assert [(p.kind, p.value, p.confidence, p.margin) for p in analysis.predictions] == [
            ("caption", "a box", None, None),
            ("sentiment", "negative", 0.9, 0.84),
        ]
        db.session.add(Analysis(user_id=1, scenario="service", app_version="x", tasks=["sentiment"], text="hi"))
        db.session.commit()
        assert db.session.scalar(db.select(db.func.max(Analysis.id))) == 6

        from webapp.jobs.runner import claim

        inputs = claim(6)
        assert (inputs.text, inputs.missing, inputs.attempts) == ("hi", ("sentiment",), 1)
        assert claim(6) is None  # a live lease cannot be claimed twice

        db.session.execute(text("INSERT INTO audit_event (created_at, action) VALUES (now(), 'x')"))
        db.session.commit()
        with pytest.raises(DatabaseError, match="append-only"):
            db.session.execute(text("UPDATE audit_event SET action = 'y'"))
        db.session.rollback()

        downgrade(directory=directory, revision="0003")
        row = db.session.execute(text("SELECT caption, sentiment_label FROM analysis WHERE id = 5")).one()
        assert tuple(row) == ("a box", "negative")
        db.session.rollback()
        upgrade(directory=directory)
        assert db.session.get(Analysis, 5).prediction("sentiment").value == "negative"
        db.session.rollback()
        db.engine.dispose()
