"""Fixtures: an app on a temp SQLite file with the fake model backend, clients with CSRF kept on.

Tests marked ``both_databases`` (a module's ``pytestmark`` or one test) run twice: on SQLite and on a
throwaway PostgreSQL server (``webapp.devservers``), each test in its own database copied from a
migrated template. Without PostgreSQL's binaries the PostgreSQL half is skipped with the reason.
"""

from __future__ import annotations

import os

# Tests never reach a model hub: set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import io
import re

import pytest
from flask_migrate import upgrade
from PIL import Image

from webapp import create_app
from webapp.devservers import ServerUnavailable, postgres_server, redis_server, s3_server
from webapp.extensions import db
from webapp.models import User

TEST_PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def png_bytes(size=(64, 48), color=(200, 30, 30), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def make_app(tmp_path, **overrides):
    """An app on a fresh SQLite file in ``tmp_path`` with the schema migrated; fake models unless overridden."""
    config = {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'test.sqlite'}",
        "UPLOAD_FOLDER": str(tmp_path / "uploads"),
        "PRISM_MODEL_BACKEND": "fake",
        "PRISM_MODEL_DIR": str(tmp_path / "models"),
        # Jobs run inside the request that queues them; tests of the real queue turn this off.
        "PRISM_JOBS_IMMEDIATE": True,
        "PRISM_JOBS_DB": str(tmp_path / "jobs.sqlite"),
        # Cheap hashes keep the suite fast; production uses PBKDF2 at 1,000,000 iterations.
        "PRISM_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
    }
    config.update(overrides)
    app = create_app(config, instance_path=str(tmp_path))
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
    return app


def pytest_configure(config):
    config.addinivalue_line("markers", "both_databases: run the test on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("both_databases") and "database" in metafunc.fixturenames:
        metafunc.parametrize("database", ["sqlite", "postgresql"], indirect=True)


def _serve(server, what: str):
    """Yield what the ``webapp.devservers`` context manager ``server`` yields; skip where it cannot start."""
    try:
        with server as running:
            yield running
    except ServerUnavailable as exc:
        pytest.skip(f"{what} unavailable: {exc}")


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the whole run (started on first use)."""
    yield from _serve(postgres_server(), "PostgreSQL")


@pytest.fixture(scope="session")
def postgres_template(postgres, tmp_path_factory):
    """A database migrated to head once; each test's database is a copy (CREATE DATABASE ... TEMPLATE)."""
    app = make_app(tmp_path_factory.mktemp("pg-template"), SQLALCHEMY_DATABASE_URI=postgres.create_database("tmpl"))
    with app.app_context():
        db.engine.dispose()  # a template must have no open connections when it is copied
    return "tmpl"


@pytest.fixture(scope="session")
def redis_server_url():
    """A throwaway redis-server for the whole run."""
    yield from _serve(redis_server(), "Redis")


@pytest.fixture
def redis_url(redis_server_url):
    """The session's Redis, emptied first: no queue entry, lock or count of an earlier test remains."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    client.close()
    return redis_server_url


@pytest.fixture(scope="session")
def s3():
    """An S3-compatible server (moto's standalone server) with one bucket, for the whole run; tests
    keep apart by using their own key prefixes."""
    yield from _serve(s3_server(), "S3 server")


_database_numbers = iter(range(1, 1_000_000))


@pytest.fixture
def database(request):
    """The database URL for ``app``: None (SQLite in tmp_path) unless parametrized to "postgresql"."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    postgres = request.getfixturevalue("postgres")
    template = request.getfixturevalue("postgres_template")
    return postgres.create_database(f"test_{next(_database_numbers)}", template=template)


@pytest.fixture
def app(tmp_path, database):
    app = make_app(tmp_path, **({"SQLALCHEMY_DATABASE_URI": database} if database else {}))
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def csrf_token(client, url: str) -> str:
    """The CSRF token of the form served at ``url`` (tests keep CSRF protection on)."""
    match = _CSRF.search(client.get(url).get_data(as_text=True))
    assert match, f"no CSRF token on {url}"
    return match.group(1)


def make_user(app, username: str, role: str = "user", password: str = TEST_PASSWORD) -> int:
    with app.app_context():
        user = User(username=username, role=role)
        user.set_password(password, app.config["PRISM_PASSWORD_HASH_METHOD"])
        db.session.add(user)
        db.session.commit()
        return user.id


def login(client, username: str, password: str = TEST_PASSWORD):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def submit(
    client,
    scenario: str = "service",
    text: str | None = "Thanks, great service!",
    image: bytes | None = None,
    filename="shot.png",
):
    """Post the scenario form like a browser would; returns the response (not followed)."""
    data = {"csrf_token": csrf_token(client, f"/{scenario}/")}
    if text is not None:
        data["text"] = text
    if image is not None:
        data["image"] = (io.BytesIO(image), filename)
    return client.post(f"/{scenario}/", data=data, content_type="multipart/form-data")


def record_id(response) -> int:
    """The id of the record a form post redirected to (``/history/<id>``, ``/service-desk/...``)."""
    assert response.status_code == 302, (response.status_code, response.get_data(as_text=True)[-500:])
    return int(response.headers["Location"].rsplit("/", 1)[1])


@pytest.fixture
def alice(app, client):
    """A signed-in ordinary user."""
    make_user(app, "alice")
    login(client, "alice")
    return client


@pytest.fixture
def admin_client(app):
    make_user(app, "root", role="admin")
    other = app.test_client()
    login(other, "root")
    return other


# --- Helpers added for the web-level suite (existing fixtures above are unchanged). ---


def client_for(app, username: str, role: str = "user"):
    """A new test client signed in as a freshly created user with ``role``."""
    make_user(app, username, role=role)
    other = app.test_client()
    response = login(other, username)
    assert response.status_code == 302, f"login of {username} failed"
    return other


def audit_rows(app, action: str | None = None) -> list[dict]:
    """Audit events (optionally of one action), oldest first, as plain dicts."""
    from webapp.models import AuditEvent

    with app.app_context():
        statement = db.select(AuditEvent).order_by(AuditEvent.id)
        if action is not None:
            statement = statement.where(AuditEvent.action == action)
        return [
            {
                "id": event.id,
                "action": event.action,
                "actor_id": event.actor_id,
                "actor_name": event.actor_name,
                "target_type": event.target_type,
                "target_id": event.target_id,
                "details": event.details,
            }
            for event in db.session.scalars(statement)
        ]


def add_analysis(app, user_id: int, *, caption: str | None = None, sentiment=None, **fields) -> int:
    """Insert a finished analysis directly (no job, no model call), for history/filter tests; returns its id.

    ``caption`` adds a caption prediction with that text; ``sentiment`` a sentiment prediction, given
    as a label (confident: 0.8) or as a dict of the three class scores.
    """
    from webapp.models import Analysis, CaptionPrediction, SentimentPrediction

    values = {"scenario": "service", "app_version": "test", "status": "done", "tasks": []}
    values.update(fields)
    with app.app_context():
        analysis = Analysis(user_id=user_id, **values)
        if caption is not None:
            analysis.predictions.append(
                CaptionPrediction(model_id="prism/fake-caption", revision="1", output={"text": caption})
            )
            analysis.tasks = [*analysis.tasks, "caption"]
        if sentiment is not None:
            analysis.predictions.append(SentimentPrediction.from_result(fake_sentiment(sentiment)))
            analysis.tasks = [*analysis.tasks, "sentiment"]
        if "search_text" not in fields:
            analysis.refresh_search_text()
        db.session.add(analysis)
        db.session.commit()
        return analysis.id


def fake_sentiment(sentiment):
    """A SentimentResult for ``sentiment``: a label (scored 0.8, the rest 0.1 each) or a dict of scores."""
    from webapp.inference import SentimentResult

    if isinstance(sentiment, str):
        scores = {label: (0.8 if label == sentiment else 0.1) for label in ("negative", "neutral", "positive")}
    else:
        scores = dict(sentiment)
    label = max(scores, key=scores.get)
    return SentimentResult(
        label=label,
        score=scores[label],
        scores=scores,
        raw_scores=scores,
        model_id="prism/fake-sentiment",
        revision="1",
        latency_ms=1.0,
    )


def reply_draft(app, category: str, sentiment: str | None, language: str = "en") -> str:
    """The reply the service desk drafts for a message of ``category`` and ``sentiment``: the category's
    template in ``language``, opened according to the sentiment (see test_service_desk for its parts)."""
    from webapp.service_desk import draft_reply

    with app.app_context():
        return draft_reply(category, sentiment, language).text  # no writer model: the template draft


def make_token(app, username: str, name: str = "test") -> str:
    """Issue an API token for ``username`` directly in the DB; returns the plaintext secret."""
    from webapp.models import ApiToken

    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.username == username))
        token, secret = ApiToken.issue(user, name)
        db.session.add(token)
        db.session.commit()
        return secret


def user_id(app, username: str) -> int:
    """The id of the user called ``username``."""
    with app.app_context():
        return db.session.scalar(db.select(User.id).where(User.username == username))


def queries_during(app, action) -> int:
    """How many SQL statements ``action()`` runs on ``app``'s database (to catch one query per row)."""
    from sqlalchemy import event

    with app.app_context():
        engine = db.engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(statements)
