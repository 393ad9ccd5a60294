"""Real consumers in their own processes: a SIGKILLed worker loses nothing, Redis works across processes,
and `manage.py run` serves pages and runs jobs with one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from flask_migrate import upgrade

from tests.conftest import make_token, make_user, png_bytes, reply_draft
from webapp import create_app
from webapp.analyses import submit_analysis, validate_upload
from webapp.devservers import free_port
from webapp.extensions import db
from webapp.jobs import enqueue_analyses
from webapp.models import Analysis, Prediction, User

PROJECT = Path(__file__).resolve().parents[2]


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Settings shared by the test process and the worker processes (the app reads PRISM_* from env)."""
    return {
        "PRISM_INSTANCE_PATH": str(tmp_path),
        "PRISM_SECRET_KEY": "durability-test",
        "PRISM_DATABASE_URL": f"sqlite:///{tmp_path / 'prism.sqlite'}",
        "PRISM_MODEL_BACKEND": "fake",
        "PRISM_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        "PRISM_JOBS_IMMEDIATE": "0",
        **extra,
    }


@pytest.fixture
def env_app(tmp_path, monkeypatch):
    """An app configured only through the environment, exactly as the worker processes will be."""

    def build(**extra: str):
        env = _environment(tmp_path, **extra)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = create_app()
        with app.app_context():
            upgrade(directory=app.extensions["migrate"].directory)
        return app, {**os.environ, **env}

    return build


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "manage.py", "worker"],
        cwd=PROJECT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _statuses(app) -> dict[int, str]:
    with app.app_context():
        rows = dict(db.session.execute(db.select(Analysis.id, Analysis.status)).all())
        db.session.rollback()
        return rows


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_killed_worker_loses_no_job_and_duplicates_nothing(env_app, tmp_path):
    """SIGKILL a worker mid-batch, start another: every accepted item finishes, each prediction exactly once."""
    app, env = env_app(
        PRISM_FAKE_LATENCY_MS="250",  # each model call takes a while, so the kill lands mid-job
        PRISM_JOB_LEASE_SECONDS="2",
        PRISM_WORKER_THREADS="2",
    )
    items = 12
    with app.app_context():
        user = User(username="alice", role="user")
        user.set_password("x" * 12, "pbkdf2:sha256:1000")
        db.session.add(user)
        db.session.commit()
        ids = []
        for n in range(items):
            image = validate_upload(png_bytes(color=(n * 10, 40, 90)), f"shot-{n}.png")
            ids.append(submit_analysis(user, "service", f"message {n}: thanks", image).id)
        db.session.commit()
        enqueue_analyses(ids)
    log = tmp_path / "worker.log"
    worker = _start_worker(env, log)
    try:
        _wait_until(
            lambda: list(_statuses(app).values()).count("done") >= 2 and "running" in _statuses(app).values(),
            60,
            "two finished items and one running",
        )
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    at_kill = _statuses(app)
    assert "running" in at_kill.values() and list(at_kill.values()).count("done") < items
    time.sleep(2.2)  # the killed worker's lease runs out
    worker = _start_worker(env, log)
    try:
        _wait_until(lambda: set(_statuses(app).values()) == {"done"}, 90, "every item to finish")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    with app.app_context():
        per_item = dict(
            db.session.execute(
                db.select(Prediction.analysis_id, db.func.count(Prediction.id)).group_by(Prediction.analysis_id)
            ).all()
        )
        # ocr, caption, sentiment, category, reply, fusion and agreement: each exactly once
        assert per_item == {analysis_id: 7 for analysis_id in ids}, log.read_text()[-3000:]
        resumed = [a for a in db.session.scalars(db.select(Analysis)) if a.attempts > 1]
        assert resumed, "the item the killed worker held should have been claimed a second time"
        assert all(a.error is None for a in db.session.scalars(db.select(Analysis)))
    assert "re-queued" in log.read_text()


def test_redis_queue_runs_jobs_in_separate_worker_processes(env_app, tmp_path, redis_url):
    """With PRISM_REDIS_URL, the API queues on Redis and two worker processes run the jobs."""
    app, env = env_app(PRISM_REDIS_URL=redis_url, PRISM_WORKER_THREADS="2")
    make_user(app, "alice")
    token = make_token(app, "alice")
    log = tmp_path / "workers.log"
    workers = [_start_worker(env, log) for _ in range(2)]
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        import io

        ids = []
        for n in range(6):
            response = client.post(
                "/api/v1/analyses",
                headers=headers,
                data={"scenario": "service", "text": f"great {n}", "image": (io.BytesIO(png_bytes()), "a.png")},
                content_type="multipart/form-data",
            )
            assert response.status_code == 202, response.json
            ids.append(response.json["id"])
        assert all(_statuses(app)[i] in ("pending", "running", "done") for i in ids)
        _wait_until(lambda: all(_statuses(app)[i] == "done" for i in ids), 60, "the Redis workers")
        body = client.get(f"/api/v1/analyses/{ids[0]}", headers=headers).json
        assert {p["kind"] for p in body["predictions"]} == {
            "ocr",
            "caption",
            "sentiment",
            "category",
            "reply",
            "fusion",
            "agreement",
        }
        assert body["values"]["sentiment"] == "positive"
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(20)
    assert all(worker.returncode == 0 for worker in workers), log.read_text()[-3000:]


def test_manage_py_run_serves_and_runs_jobs_in_one_process(tmp_path):
    """`manage.py init-db` then `manage.py run`: the page server also runs the jobs (no worker needed)."""
    env = {**os.environ, **_environment(tmp_path)}
    env.pop("PRISM_SECRET_KEY")  # the Quickstart way: init-db writes instance/secret_key
    subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "init-db"], cwd=PROJECT, env=env, check=True, capture_output=True
    )
    port = free_port()
    log = tmp_path / "run.log"
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "manage.py", "run", "--port", str(port)],
        cwd=PROJECT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until(lambda: _http_status(base + "/healthz") == 200, 30, "the server")
        os.environ.update({k: v for k, v in env.items() if k.startswith("PRISM_")})
        try:
            app = create_app()
        finally:
            for key in [k for k in env if k.startswith("PRISM_")]:
                os.environ.pop(key, None)
        make_user(app, "alice")
        token = make_token(app, "alice")
        request = urllib.request.Request(  # noqa: S310 (loopback)
            base + "/api/v1/analyses",
            data=b'{"text": "thank you, great help", "scenario": "service"}',
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert response.status == 202
            url = response.headers["Location"]
        _wait_until(lambda: _json(url, token).get("status") == "done", 30, "the in-process consumer")
        assert _json(url, token)["values"] == {
            "sentiment": "positive",
            "category": "account",
            "reply": reply_draft(app, "account", "positive"),
        }
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            raise AssertionError("manage.py run did not stop on Ctrl+C: " + log.read_text()[-2000:]) from None


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return response.status
    except OSError:
        return None


def _json(url: str, token: str) -> dict:
    import json

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def test_web_process_never_imports_torch_when_workers_run_the_models(tmp_path):
    """With the transformers backend configured, submitting and viewing through the web tier (jobs
    queued for a worker) loads no torch: the models live in `manage.py worker`."""
    script = f"""
import io, sys
from flask_migrate import upgrade
from PIL import Image
from webapp import create_app
from webapp.extensions import db
from webapp.models import User
app = create_app({{
    "SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": "sqlite:///{tmp_path / "web.sqlite"}",
    "PRISM_JOBS_DB": "{tmp_path / "jobs.sqlite"}", "UPLOAD_FOLDER": "{tmp_path / "uploads"}",
    "PRISM_MODEL_BACKEND": "transformers", "PRISM_MODEL_OFFLINE": True, "WTF_CSRF_ENABLED": False,
    "PRISM_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
}}, instance_path="{tmp_path}")
with app.app_context():
    upgrade(directory=app.extensions["migrate"].directory)
    user = User(username="alice", role="user"); user.set_password("x" * 10, "pbkdf2:sha256:1000")
    db.session.add(user); db.session.commit()
client = app.test_client()
assert client.post("/login", data={{"username": "alice", "password": "x" * 10}}).status_code == 302
image = io.BytesIO(); Image.new("RGB", (32, 32), "red").save(image, "PNG"); image.seek(0)
response = client.post("/service/", data={{"text": "hello", "image": (image, "a.png")}})
assert response.status_code == 302, response.status_code
page = client.get(response.headers["Location"])
assert page.status_code == 200 and b"job-pending" in page.data
for path in ("/", "/history/", "/review/service/", "/healthz"):
    assert client.get(path).status_code == 200, path
print("torch" in sys.modules, "transformers" in sys.modules)
"""
    result = subprocess.run(  # noqa: S603 (our own code, in a fresh interpreter)
        [sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False False"
