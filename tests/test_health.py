"""/healthz: database, queue, object store, workers and model states as JSON, without secrets."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from tests.conftest import client_for, png_bytes, submit
from webapp.extensions import db
from webapp.inference import MODEL_KINDS


def states(response) -> dict[str, str]:
    return {model["kind"]: model["state"] for model in response.json["models"]}


def test_healthz_reports_database_and_unloaded_models(app, client):
    """A fresh app reports the database ok and every model not_loaded (health checks never load them)."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.is_json
    body = response.json
    assert body["status"] == "ok" and body["database"] == {"ok": True, "dialect": "sqlite"}
    assert body["storage"] == {"backend": "local", "ok": True}
    assert body["queue"]["backend"] == "immediate" and body["queue"]["ok"] is True
    assert body["workers"] == [] and body["role"] == "all"
    unloaded = {kind: "not_loaded" for kind in MODEL_KINDS}
    assert states(response) == unloaded
    assert states(client.get("/healthz")) == unloaded


def test_healthz_reports_models_ready_after_an_analysis(app):
    """After an analysis with the fake backend the models it used are ready, with their ids; the others
    stay unloaded. (In education, a photo alone: OCR and caption on it, sentiment on the text read.)"""
    teacher = client_for(app, "tina", role="teacher")
    assert submit(teacher, scenario="education", text=None, image=png_bytes()).status_code == 302
    response = app.test_client().get("/healthz")
    assert states(response) == {
        "caption": "ready",
        "sentiment": "ready",
        "ocr": "ready",
        "embedding": "not_loaded",
    }
    loaded = {m["model_id"] for m in response.json["models"] if m["model_id"]}
    assert loaded == {"prism/fake-caption", "prism/fake-sentiment", "prism/fake-ocr"}


def test_healthz_contains_no_secrets_or_paths(app, client, tmp_path):
    """The body never contains the secret key, the database URI or instance paths (backend names only)."""
    text = client.get("/healthz").get_data(as_text=True)
    assert app.config["SECRET_KEY"] not in text
    assert app.config["SQLALCHEMY_DATABASE_URI"] not in text and "sqlite:" not in text
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
    assert response.json["workers"] == []
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

    queue_state = app.test_client().get("/healthz").json["queue"]
    assert (queue_state["pending"], queue_state["running"], queue_state["oldest_pending_seconds"]) == (0, 0, None)
    queue = app.extensions["prism_jobs"].huey
    queue.immediate = False  # nobody consumes: the jobs wait
    try:
        submit(alice, text="one")
        submit(alice, text="two")
        with app.app_context():
            db.session.execute(db.update(Analysis).values(queued_at=utcnow() - timedelta(minutes=3)))
            db.session.commit()
        jobs = app.test_client().get("/healthz").json["queue"]
    finally:
        queue.immediate = True
    assert jobs["pending"] == 2 and jobs["running"] == 0 and 179 <= jobs["oldest_pending_seconds"] <= 200
    assert jobs["waiting"] == 2  # the queue's own depth: both jobs sit in it


def _worker_last_seen(host: str, ago):
    """A worker row (``<host>:1``) whose last heartbeat was ``ago`` before now."""
    from webapp.models import Worker, utcnow

    return Worker(
        name=f"{host}:1", hostname=host, threads=1, started_at=utcnow(), last_seen_at=utcnow() - ago, models=[]
    )


def test_healthz_lists_live_workers_and_degrades_when_none_runs_waiting_jobs(app, alice):
    """Workers are listed from their heartbeat rows; a stopped or silent one is not. With work waiting
    on a real queue and no live worker, the status is "degraded" (pages work, jobs wait), still 200."""
    from datetime import timedelta

    from webapp.jobs.housekeeping import Housekeeper
    from webapp.models import Worker, utcnow

    keeper = Housekeeper(app, threads=3)
    with app.app_context():
        keeper._beat(first=True)
        db.session.add(_worker_last_seen("gone", timedelta(minutes=5)))
        db.session.commit()
    body = app.test_client().get("/healthz").json
    assert [w["name"] for w in body["workers"]] == [keeper.name_in_db]
    with app.app_context():
        db.session.add(_worker_last_seen("ancient", timedelta(days=8)))
        db.session.commit()
        Housekeeper(app, threads=1)._beat(first=True)  # a starting worker forgets week-old rows
        assert {w.name for w in db.session.scalars(db.select(Worker))} == {keeper.name_in_db, "gone:1"}
    assert body["workers"][0]["threads"] == 3 and body["workers"][0]["jobs_done"] == 0
    with app.app_context():
        db.session.execute(db.update(Worker).values(stopped_at=utcnow()))
        db.session.commit()
    app.config["PRISM_JOBS_IMMEDIATE"] = False  # a real queue, read only by the health check
    queue = app.extensions["prism_jobs"].huey
    queue.immediate = False
    try:
        submit(alice, text="waiting")
        response = app.test_client().get("/healthz")
    finally:
        queue.immediate = True
        app.config["PRISM_JOBS_IMMEDIATE"] = True
    assert response.status_code == 200
    assert response.json["workers"] == [] and response.json["status"] == "degraded"


def test_healthz_degrades_when_the_object_store_fails(app, client, monkeypatch):
    """A failing object store is named by error type and makes the status "degraded"."""
    from webapp.storage import get_storage

    with app.app_context():
        storage = get_storage()

    def unreachable():
        raise ConnectionError("http://secret-endpoint")

    monkeypatch.setattr(storage, "check", unreachable)
    body = client.get("/healthz").json
    assert body["status"] == "degraded"
    assert body["storage"] == {"backend": "local", "ok": False, "error": "ConnectionError"}
    assert "secret-endpoint" not in client.get("/healthz").get_data(as_text=True)


def test_web_role_reports_no_models_and_refuses_to_run_jobs(tmp_path):
    """PRISM_ROLE=web: /healthz has no models of its own, and no consumer can start in the process."""
    from tests.conftest import make_app
    from webapp.jobs import create_consumer

    app = make_app(tmp_path, PRISM_ROLE="web", PRISM_JOBS_IMMEDIATE=False)
    assert "models" not in app.test_client().get("/healthz").json
    with pytest.raises(RuntimeError, match="PRISM_ROLE=web"):
        create_consumer(app)


def test_admin_overview_shows_the_same_health(app, admin_client):
    """The admin overview lists the parts and the live workers, as /healthz does."""
    from webapp.jobs.housekeeping import Housekeeper

    keeper = Housekeeper(app, threads=2)
    with app.app_context():
        keeper._beat(first=True)
    page = admin_client.get("/admin/").get_data(as_text=True)
    assert "System" in page and "all parts working" in page
    assert keeper.name_in_db in page and "sqlite" in page and "immediate" in page


def test_healthz_degrades_when_a_model_failed(app, client, monkeypatch):
    """Issue #9: /healthz said "ok" with both models failed. A model that cannot load in this process,
    or that a live worker reports as failed, makes the status "degraded" (still 200: pages work)."""
    from webapp.inference import ModelService
    from webapp.inference.types import ModelState, ModelStatus
    from webapp.models import Worker, utcnow

    assert client.get("/healthz").json["status"] == "ok"
    failed = ModelStatus(kind="caption", source="org/captioner", state=ModelState.FAILED, detail="no hub")
    with monkeypatch.context() as patch:
        patch.setattr(ModelService, "statuses", lambda self: [failed])
        response = client.get("/healthz")
    assert (response.status_code, response.json["status"]) == (200, "degraded")
    assert client.get("/healthz").json["status"] == "ok"
    with app.app_context():
        now = utcnow()
        db.session.add(
            Worker(
                name="gpu-box:42",
                hostname="gpu-box",
                threads=2,
                started_at=now,
                last_seen_at=now,
                models=[{"kind": "caption", "state": "failed", "model_id": None}],
            )
        )
        db.session.commit()
    assert client.get("/healthz").json["status"] == "degraded"
