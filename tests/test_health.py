"""/healthz: database and model states as JSON, without secrets."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from tests.conftest import png_bytes, submit
from webapp.extensions import db


def states(response) -> dict[str, str]:
    return {model["kind"]: model["state"] for model in response.json["models"]}


def test_healthz_reports_database_and_unloaded_models(app, client):
    """A fresh app reports the database ok and both models not_loaded (health checks never load them)."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.is_json
    body = response.json
    assert body["status"] == "ok" and body["database"] == {"ok": True}
    assert states(response) == {"caption": "not_loaded", "sentiment": "not_loaded"}
    assert states(client.get("/healthz")) == {"caption": "not_loaded", "sentiment": "not_loaded"}


def test_healthz_reports_models_ready_after_an_analysis(app, alice):
    """After an image+text analysis with the fake backend both models are ready, with their ids."""
    assert submit(alice, text="great", image=png_bytes()).status_code == 302
    response = app.test_client().get("/healthz")
    assert states(response) == {"caption": "ready", "sentiment": "ready"}
    assert {m["model_id"] for m in response.json["models"]} == {"prism/fake-caption", "prism/fake-sentiment"}


def test_healthz_contains_no_secrets_or_paths(app, client, tmp_path):
    """The body never contains the secret key, the database URI or instance paths."""
    text = client.get("/healthz").get_data(as_text=True)
    assert app.config["SECRET_KEY"] not in text
    assert "sqlite" not in text.lower()
    assert str(tmp_path) not in text


def test_healthz_reports_database_failure_as_503(app, client, monkeypatch):
    """When the database cannot answer, /healthz is 503 with the error type only."""

    uri = app.config["SQLALCHEMY_DATABASE_URI"]

    def broken(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception(f"unable to open {uri}"))

    monkeypatch.setattr(db.session, "execute", broken, raising=False)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["status"] == "error"
    assert response.json["database"] == {"ok": False, "error": "OperationalError"}
    assert uri not in response.get_data(as_text=True)


def test_healthz_needs_no_login_and_sets_headers(client):
    """/healthz is public and carries the security headers."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_healthz_reports_the_job_backlog(app, alice):
    """Pending jobs and the oldest one's wait show on /healthz, so a missing worker is visible."""
    from datetime import timedelta

    from webapp.models import Analysis, utcnow

    assert app.test_client().get("/healthz").json["jobs"] == {
        "pending": 0,
        "running": 0,
        "oldest_pending_seconds": None,
    }
    queue = app.extensions["prism_jobs"].huey
    queue.immediate = False  # nobody consumes: the jobs wait
    try:
        submit(alice, text="one")
        submit(alice, text="two")
    finally:
        queue.immediate = True
    with app.app_context():
        db.session.execute(db.update(Analysis).values(queued_at=utcnow() - timedelta(minutes=3)))
        db.session.commit()
    jobs = app.test_client().get("/healthz").json["jobs"]
    assert jobs["pending"] == 2 and jobs["running"] == 0 and 179 <= jobs["oldest_pending_seconds"] <= 200
