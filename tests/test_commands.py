"""CLI: init-db, create-admin, set-role and create-token."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import audit_rows, login, make_user
from webapp.commands import init_db_command
from webapp.extensions import db
from webapp.models import ApiToken, User


@pytest.fixture
def clean_env(monkeypatch):
    """init-db builds its own app from the environment: keep the host's PRISM_* settings out of it.

    The fake model backend keeps torch out of this suite (with the transformers backend, building the
    app imports it, which costs seconds and is not what these tests are about).
    """
    for name in list(os.environ):
        if name.startswith("PRISM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRISM_MODEL_BACKEND", "fake")


def test_init_db_creates_database_and_private_secret_key(tmp_path, clean_env):
    """init-db creates the instance folder, a 0600 secret key, the uploads folder and the schema; no accounts."""
    instance = tmp_path / "instance"
    result = CliRunner().invoke(init_db_command, ["--instance-path", str(instance)])
    assert result.exit_code == 0, result.output
    key_file = instance / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) == 64
    assert (instance / "uploads").is_dir()
    assert "Wrote a new secret key" in result.output and "Database ready" in result.output
    with sqlite3.connect(instance / "prism.sqlite") as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        triggers = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        assert {"user", "analysis", "api_token", "audit_event", "alembic_version"} <= tables
        assert {"audit_event_no_update", "audit_event_no_delete"} <= triggers
        assert connection.execute("SELECT COUNT(*) FROM user").fetchone() == (0,)
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(_migration_head(),)]
    assert key_file.read_text().strip() not in result.output


def test_init_db_is_safe_to_run_twice(tmp_path, clean_env):
    """A second init-db keeps the secret key and the data."""
    instance = tmp_path / "instance"
    runner = CliRunner()
    assert runner.invoke(init_db_command, ["--instance-path", str(instance)]).exit_code == 0
    key = (instance / "secret_key").read_text()
    with sqlite3.connect(instance / "prism.sqlite") as connection:
        connection.execute(
            "INSERT INTO user (username, password_hash, role, active, session_token, created_at) "
            "VALUES ('kept', 'x', 'user', 1, 'tok', '2024-01-01 00:00:00')"
        )
    connection.close()
    second = runner.invoke(init_db_command, ["--instance-path", str(instance)])
    assert second.exit_code == 0, second.output
    assert "Wrote a new secret key" not in second.output
    assert (instance / "secret_key").read_text() == key
    with sqlite3.connect(instance / "prism.sqlite") as connection:
        assert connection.execute("SELECT username FROM user").fetchall() == [("kept",)]
    connection.close()


def test_create_admin(app, runner):
    """create-admin makes an admin who can sign in, and audits it as a CLI registration."""
    result = runner.invoke(args=["create-admin", "--username", "boss", "--password", "a long admin passphrase"])
    assert result.exit_code == 0, result.output
    assert "Admin 'boss' created." in result.output
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.username == "boss"))
        assert user.role == "admin" and user.check_password("a long admin passphrase")
    client = app.test_client()
    assert login(client, "boss", "a long admin passphrase").status_code == 302
    assert client.get("/admin/").status_code == 200
    [row] = audit_rows(app, "auth.register")
    assert row["actor_name"] == "boss" and row["details"] == {"via": "cli", "role": "admin"}


def test_create_admin_prompts_for_password(app, runner):
    """Without --password the password is prompted for twice."""
    answers = "prompted passphrase\nprompted passphrase\n"
    result = runner.invoke(args=["create-admin", "--username", "boss"], input=answers)
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(db.select(User).where(User.username == "boss")).check_password("prompted passphrase")


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", "at least 8 characters"), ("administrator", "one of the most common ones")],
    ids=["too-short", "common"],
)
def test_create_admin_refuses_a_weak_password(app, runner, password, message):
    """The CLI applies the registration form's policy: a password under 8 characters, or a common
    one, is refused and no user is created."""
    result = runner.invoke(args=["create-admin", "--username", "boss", "--password", password])
    assert result.exit_code != 0
    assert message in result.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 0


def test_create_admin_refuses_existing_username(app, runner):
    """create-admin does not overwrite or promote an existing account."""
    make_user(app, "alice")
    result = runner.invoke(args=["create-admin", "--username", "alice", "--password", "a long admin passphrase"])
    assert result.exit_code != 0
    assert "exists" in result.output
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.username == "alice"))
        assert user.role == "user" and not user.check_password("a long admin passphrase")


def test_set_role_changes_role_and_audits(app, runner):
    """set-role changes the role and writes admin.role_change with the CLI as origin."""
    alice_id = make_user(app, "alice")
    result = runner.invoke(args=["set-role", "--username", "alice", "--role", "teacher"])
    assert result.exit_code == 0, result.output
    assert "alice: user -> teacher" in result.output
    with app.app_context():
        assert db.session.get(User, alice_id).role == "teacher"
    [row] = audit_rows(app, "admin.role_change")
    assert row["target_id"] == str(alice_id)
    assert row["details"] == {"from": "user", "to": "teacher", "via": "cli", "username": "alice"}


def test_set_role_rejects_unknown_user_and_role(app, runner):
    """set-role fails for a missing user or a role outside the list."""
    make_user(app, "alice")
    missing = runner.invoke(args=["set-role", "--username", "nobody", "--role", "admin"])
    assert missing.exit_code != 0 and "No user named 'nobody'" in missing.output
    bad_role = runner.invoke(args=["set-role", "--username", "alice", "--role", "root"])
    assert bad_role.exit_code != 0
    with app.app_context():
        assert db.session.scalar(db.select(User.role).where(User.username == "alice")) == "user"
    assert audit_rows(app, "admin.role_change") == []


def test_create_token_prints_a_working_token(app, runner):
    """create-token prints a token that authenticates the API; only its hash is stored."""
    make_user(app, "alice")
    result = runner.invoke(args=["create-token", "--username", "alice", "--name", "nightly"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip()
    response = app.test_client().get("/api/v1/analyses", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    assert response.json["total"] == 0
    with app.app_context():
        [token] = db.session.scalars(db.select(ApiToken)).all()
        assert token.name == "nightly" and token.token_hash == ApiToken.hash_secret(secret)
    [row] = audit_rows(app, "token.create")
    assert row["details"] == {"name": "nightly", "via": "cli"}


def test_create_token_for_unknown_user_fails(app, runner):
    """create-token refuses a username that does not exist."""
    result = runner.invoke(args=["create-token", "--username", "ghost"])
    assert result.exit_code != 0
    assert "No user named 'ghost'" in result.output


def _migration_head() -> str:
    """The newest revision in webapp/migrations, so the test follows new migrations."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    directory = Path(__file__).resolve().parent.parent / "webapp" / "migrations"
    config = Config()
    config.set_main_option("script_location", str(directory))
    return ScriptDirectory.from_config(config).get_current_head()
