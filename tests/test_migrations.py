"""Migrations: v1 data survives the move to predictions, ids are never reused, and models match the schema."""

from __future__ import annotations

import json
import warnings
from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import text
from werkzeug.security import generate_password_hash

from tests.conftest import TEST_PASSWORD, add_analysis, login, make_user, png_bytes, record_id, submit
from webapp import create_app
from webapp.extensions import db
from webapp.models import Analysis, Prediction, User

V1_ROWS = [
    # id, caption fields, sentiment fields (None = that model did not run)
    {
        "id": 1,
        "text": "退款还没到，很生气",
        "caption": "a broken box on a table",
        "caption_model": "nlpconnect/vit-gpt2-image-captioning",
        "caption_revision": "abc123",
        "caption_precision": "fp32",
        "caption_ms": 812.5,
        "sentiment_label": "negative",
        "sentiment_score": 0.91,
        "sentiment_scores": {"negative": 0.91, "neutral": 0.06, "positive": 0.03},
        "sentiment_raw_scores": {"negative": 0.91, "neutral": 0.06, "positive": 0.03},
        "sentiment_model": "lxyuan/distilbert-base-multilingual-cased-sentiments-student",
        "sentiment_revision": "def456",
        "sentiment_precision": "bf16",
        "sentiment_ms": 41.0,
    },
    {
        "id": 2,
        "text": None,
        "caption": "a chest x-ray",
        "caption_model": "Salesforce/blip-image-captioning-base",
        "caption_revision": None,
        "caption_precision": None,
        "caption_ms": 1500.0,
    },
    {
        "id": 5,  # ids 3 and 4 were deleted in v1: the gap must survive
        "text": "so-so",
        "sentiment_label": "negative",
        "sentiment_score": 0.335,
        "sentiment_scores": {"negative": 0.335, "neutral": 0.33, "positive": 0.335},
        "sentiment_raw_scores": {"1 star": 0.2, "2 stars": 0.135, "3 stars": 0.33, "4 stars": 0.2, "5 stars": 0.135},
        "sentiment_model": "nlptown/bert-base-multilingual-uncased-sentiment",
        "sentiment_revision": "r5",
        "sentiment_precision": "int8",
        "sentiment_ms": 12.5,
    },
]


def _app(tmp_path):
    return create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'v1.sqlite'}",
            "UPLOAD_FOLDER": str(tmp_path / "uploads"),
            "PRISM_MODEL_BACKEND": "fake",
            "PRISM_JOBS_IMMEDIATE": True,
        },
        instance_path=str(tmp_path),
    )


def _insert_v1_rows(connection) -> None:
    connection.execute(
        text(
            "INSERT INTO user (id, username, password_hash, role, active, session_token, created_at) "
            "VALUES (1, 'alice', 'x', 'user', 1, 't1', '2026-01-01 00:00:00')"
        )
    )
    for row in V1_ROWS:
        values = {
            "user_id": 1,
            "scenario": "service",
            "created_at": datetime(2026, 1, row["id"], 9, 30),
            "app_version": "1.0.0",
            **row,
        }
        for key in ("sentiment_scores", "sentiment_raw_scores"):
            if key in values:
                values[key] = json.dumps(values[key])
        columns = ", ".join(values)
        placeholders = ", ".join(":" + key for key in values)
        # Column names come from V1_ROWS above, never from input.
        connection.execute(text(f"INSERT INTO analysis ({columns}) VALUES ({placeholders})"), values)  # noqa: S608


@pytest.fixture
def upgraded_v1(tmp_path):
    """An app context on a database that held v1 rows at revision 0003, then upgraded to head."""
    app = _app(tmp_path)
    with app.app_context():
        directory = app.extensions["migrate"].directory
        upgrade(directory=directory, revision="0003")
        with db.engine.begin() as connection:
            _insert_v1_rows(connection)
        upgrade(directory=directory)
        yield directory


def test_upgrade_from_v1_keeps_every_value(upgraded_v1):
    """Rows at 0003 come through 0004 with every caption and sentiment value, as prediction rows."""

    analyses = {a.id: a for a in db.session.scalars(db.select(Analysis))}
    assert sorted(analyses) == [1, 2, 5]
    for row in V1_ROWS:
        analysis = analyses[row["id"]]
        assert analysis.status == "done" and analysis.text == row["text"]
        assert analysis.created_at == datetime(2026, 1, row["id"], 9, 30)
        caption, sentiment = analysis.prediction("caption"), analysis.prediction("sentiment")
        assert analysis.tasks == [k for k in ("caption", "sentiment") if analysis.prediction(k)]
        if "caption" in row:
            assert caption.ai_value == row["caption"] and caption.value == row["caption"]
            assert (caption.model_id, caption.revision, caption.precision, caption.latency_ms) == (
                row["caption_model"],
                row["caption_revision"],
                row["caption_precision"],
                row["caption_ms"],
            )
        else:
            assert caption is None
        if "sentiment_label" in row:
            assert sentiment.ai_value == row["sentiment_label"] == sentiment.final_label
            assert sentiment.confidence == row["sentiment_score"]
            assert sentiment.scores == row["sentiment_scores"]
            assert sentiment.raw_scores == row["sentiment_raw_scores"]
            assert (sentiment.model_id, sentiment.revision, sentiment.precision, sentiment.latency_ms) == (
                row["sentiment_model"],
                row["sentiment_revision"],
                row["sentiment_precision"],
                row["sentiment_ms"],
            )
            assert sentiment.review_state == "unreviewed"
        else:
            assert sentiment is None
    # The 33.5% / 33.5% tie of row 5 is now a measurable margin of 0: uncertain.
    assert analyses[5].prediction("sentiment").margin == 0.0
    assert db.session.scalar(db.select(db.func.count(Prediction.id))) == 4


def test_upgrade_keeps_foreign_keys_working(upgraded_v1):
    """After the SQLite table rebuild, deleting a user still cascades to analyses and predictions."""
    assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.session.execute(text("DELETE FROM user WHERE id = 1"))
    db.session.commit()
    assert db.session.scalar(db.select(db.func.count(Analysis.id))) == 0
    assert db.session.scalar(db.select(db.func.count(Prediction.id))) == 0


def test_downgrade_to_v1_restores_the_columns(upgraded_v1):
    """0004's downgrade puts the AI outputs back into analysis columns (reviews have nowhere to go)."""
    downgrade(directory=upgraded_v1, revision="0003")
    row = db.session.execute(
        text("SELECT caption, sentiment_label, sentiment_score, sentiment_model FROM analysis WHERE id = 1")
    ).one()
    assert tuple(row) == ("a broken box on a table", "negative", 0.91, V1_ROWS[0]["sentiment_model"])


def test_models_match_the_migrated_schema(app):
    """The ORM models and the migrations describe the same tables (nothing only one of them has)."""
    with app.app_context(), db.engine.connect() as connection:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the lower(username) index cannot be reflected
            diff = compare_metadata(MigrationContext.configure(connection), db.metadata)
    # The case-insensitive username index is an expression index that reflection skips.
    diff = [d for d in diff if not (d[0] == "add_index" and d[1].name == "uq_user_username_lower")]
    assert diff == []


def test_id_deleted_before_the_upgrade_is_not_given_again(tmp_path):
    """A record v1 created and deleted (so only the audit log remembers its id) keeps its id retired."""
    app = _app(tmp_path)
    with app.app_context():
        directory = app.extensions["migrate"].directory
        upgrade(directory=directory, revision="0003")
        with db.engine.begin() as connection:
            _insert_v1_rows(connection)  # ids 1, 2, 5 survive
            for action in ("analysis.create", "analysis.delete"):
                connection.execute(
                    text(
                        "INSERT INTO audit_event (created_at, action, target_type, target_id) "
                        "VALUES ('2026-01-09', :action, 'Analysis', '9')"
                    ),
                    {"action": action},
                )
        upgrade(directory=directory)
        db.session.add(Analysis(user_id=1, scenario="service", app_version="x", tasks=[]))
        db.session.commit()
        assert db.session.scalar(db.select(db.func.max(Analysis.id))) == 10


def test_deleted_record_id_is_never_given_again(app, alice):
    """Delete the newest record, create another: the new one gets a new id, never the deleted one."""
    from tests.conftest import csrf_token

    first = submit(alice, text="first")
    newest = record_id(first)
    token = csrf_token(alice, f"/history/{newest}")
    assert alice.post(f"/history/{newest}/delete", data={"csrf_token": token}).status_code == 302
    second = submit(alice, image=png_bytes(), text=None)
    assert record_id(second) == newest + 1


@pytest.mark.parametrize(
    "table",
    [
        "analysis",
        "prediction",
        "review",
        "batch",
        "rubric",
        "rubric_criterion",
        "assignment",
        "submission",
        "inquiry_category",
        "reply_template",
        "region_annotation",
    ],
)
def test_tables_use_autoincrement_on_sqlite(app, table):
    """Every table whose ids users see or audit rows name is AUTOINCREMENT on SQLite."""
    with app.app_context():
        sql = db.session.execute(text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}).scalar()
    assert "AUTOINCREMENT" in sql


def test_add_analysis_helper_rows_are_finished(app):
    """The test helper makes finished rows with predictions, as the history tests assume."""
    analysis_id = add_analysis(app, make_user(app, "zed"), caption="a cat", sentiment="positive")
    with app.app_context():
        analysis = db.session.get(Analysis, analysis_id)
        assert analysis.status == "done" and [p.kind for p in analysis.predictions] == ["caption", "sentiment"]


# Accounts as they stood at revision 0009 (before the display preferences and the reset flag).
ACCOUNTS_AT_0009 = [
    {
        "id": 11,
        "username": "王医生",
        "role": "clinician",
        "active": True,
        "totp_secret": "JBSWY3DPEHPK3PXP",
        "totp_last_step": 59,
    },
    {"id": 12, "username": "Bob", "role": "user", "active": False, "totp_secret": None, "totp_last_step": None},
]


@pytest.mark.both_databases
def test_upgrade_from_0009_keeps_every_account_and_record(app):
    """A database holding accounts and records at 0009 upgrades to head with every value intact: the
    new columns start empty (time zone, language) or false (must change password), the records and
    their predictions are untouched, and an account still signs in with its password, then its two-step code."""
    owner = make_user(app, "owner")
    record = add_analysis(app, owner, text="退款还没到", caption="a broken box", sentiment="negative")
    directory = app.extensions["migrate"].directory
    with app.app_context():
        downgrade(directory=directory, revision="0009")
        password_hash = generate_password_hash(TEST_PASSWORD, method="pbkdf2:sha256:1000")
        created = datetime(2026, 3, 1, 8, 30)
        for account in ACCOUNTS_AT_0009:
            db.session.execute(
                text(
                    'INSERT INTO "user" (id, username, password_hash, role, active, session_token, created_at,'
                    " totp_secret, totp_last_step) VALUES (:id, :username, :hash, :role, :active, :token,"
                    " :created, :totp_secret, :totp_last_step)"
                ),
                account | {"hash": password_hash, "token": f"token-{account['id']}", "created": created},
            )
        db.session.commit()
        upgrade(directory=directory)
        db.session.remove()
        for account in ACCOUNTS_AT_0009:
            user = db.session.get(User, account["id"])
            assert (user.username, user.role, user.active) == (account["username"], account["role"], account["active"])
            assert (user.totp_secret, user.totp_last_step) == (account["totp_secret"], account["totp_last_step"])
            assert (user.password_hash, user.session_token, user.created_at) == (
                password_hash,
                f"token-{account['id']}",
                created,
            )
            assert (user.time_zone, user.language, user.must_change_password) == (None, None, False)
        kept = db.session.get(Analysis, record)
        assert (kept.user_id, kept.text, kept.status) == (owner, "退款还没到", "done")
        assert kept.prediction("caption").output == {"text": "a broken box"}
        assert kept.prediction("sentiment").label == "negative"
    # The password still matches, and the two-step secret is still asked for.
    response = login(app.test_client(), "王医生")
    assert response.status_code == 302 and response.location.endswith("/login/code")
