"""The scale-out topology end to end: gunicorn serving pages only (PRISM_ROLE=web), two `manage.py worker`
processes in separate working directories (no shared disk), PostgreSQL, Redis and S3 between them.

A 20-image batch is spread over both workers; one is SIGKILLed mid-batch, and the batch still
completes with each item analysed once.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from flask_migrate import upgrade

from tests.conftest import make_token, make_user, png_bytes
from webapp import create_app
from webapp.devservers import free_port, stop_processes
from webapp.extensions import db
from webapp.models import Analysis, Prediction

PROJECT = Path(__file__).resolve().parent.parent
ITEMS = 20


def _request(url: str, *, token: str | None = None, body: bytes | None = None, content_type: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 (loopback only)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _wait_until(predicate, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in logs if log.exists())
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


@pytest.fixture
def topology(tmp_path, postgres, redis_url, s3, monkeypatch):
    """Settings shared by every process: only the database URL, Redis and the object store."""
    prefix = f"topology-{uuid.uuid4().hex[:8]}"
    shared = {
        "PRISM_SECRET_KEY": "topology-test-secret",
        "PRISM_DATABASE_URL": postgres.create_database(f"topology_{uuid.uuid4().hex[:8]}"),
        "PRISM_REDIS_URL": redis_url,
        **s3.settings(prefix),
        "PRISM_MODEL_BACKEND": "fake",
        "PRISM_FAKE_LATENCY_MS": "700",  # each model batch takes this long: the kill lands mid-batch
        "PRISM_JOBS_IMMEDIATE": "0",
        "PRISM_JOB_LEASE_SECONDS": "3",
        "PRISM_JOB_SWEEP_SECONDS": "1",
        "PRISM_WORKER_HEARTBEAT_SECONDS": "1",
        "PRISM_WORKER_THREADS": "2",
        "PRISM_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
    }
    for key, value in shared.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PRISM_INSTANCE_PATH", str(tmp_path / "test-process"))
    app = create_app()
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
    make_user(app, "teacher", role="teacher")
    token = make_token(app, "teacher")
    yield app, shared, token, prefix, s3
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _process(command: list[str], directory: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """A process in its own working directory and instance folder: nothing on disk is shared."""
    directory.mkdir(parents=True)
    log = directory / "output.log"
    process = subprocess.Popen(  # noqa: S603 (our own programs)
        command,
        cwd=directory,
        env={**os.environ, **env, "PRISM_INSTANCE_PATH": str(directory / "instance"), "PYTHONPATH": str(PROJECT)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, log


def test_batch_survives_a_killed_worker_across_hosts(topology, tmp_path):
    app, shared, token, prefix, s3 = topology
    port = free_port()
    web, web_log = _process(
        [sys.executable, "-m", "gunicorn", "-c", str(PROJECT / "gunicorn.conf.py"), "--no-control-socket"],
        tmp_path / "web-host",
        {**shared, "PRISM_ROLE": "web", "PRISM_BIND": f"127.0.0.1:{port}", "PRISM_WORKERS": "2", "PRISM_THREADS": "4"},
    )
    workers = {}
    for host in ("worker-a", "worker-b"):
        workers[host] = _process(
            [sys.executable, str(PROJECT / "manage.py"), "worker"], tmp_path / host, {**shared, "PRISM_ROLE": "worker"}
        )
    logs = [web_log, *(log for _, log in workers.values())]
    base = f"http://127.0.0.1:{port}"
    processes = [web, *(process for process, _ in workers.values())]
    try:

        def ready() -> bool:
            try:
                status, health = _request(base + "/healthz")
            except OSError:
                return False
            return status == 200 and len(health["workers"]) == 2

        _wait_until(ready, 60, "gunicorn and both workers to report", logs)
        status, health = _request(base + "/healthz")
        assert health["status"] == "ok" and health["role"] == "web" and "models" not in health
        assert health["database"] == {"ok": True, "dialect": "postgresql"}
        assert (health["queue"]["backend"], health["queue"]["ok"]) == ("redis", True)
        assert health["storage"] == {"backend": "s3", "ok": True}

        images = [("images", f"page-{n}.png", png_bytes(color=(n * 12, 100, 200 - n * 9))) for n in range(ITEMS)]
        body, content_type = _multipart({"scenario": "education"}, images)
        status, batch = _request(base + "/api/v1/batches", token=token, body=body, content_type=content_type)
        assert status == 202, batch
        batch_id = batch["id"]

        def rows() -> list[tuple[int, str, str | None]]:
            with app.app_context():
                found = db.session.execute(
                    db.select(Analysis.id, Analysis.status, Analysis.worker).where(Analysis.batch_id == batch_id)
                ).all()
                db.session.rollback()
                return [tuple(row) for row in found]

        victim, _ = workers["worker-a"]
        victim_name = f"{os.uname().nodename}:{victim.pid}"

        def both_have_finished_work_and_the_victim_holds_more() -> bool:
            current = rows()
            done_by = {worker for _, status, worker in current if status == "done"}
            victim_holds = any(status == "running" and worker == victim_name for _, status, worker in current)
            return len(done_by) == 2 and victim_holds and sum(status != "done" for _, status, _ in current) >= 6

        _wait_until(both_have_finished_work_and_the_victim_holds_more, 60, "both workers to finish work", logs)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        held_at_kill = {
            analysis_id for analysis_id, status, worker in rows() if status == "running" and worker == victim_name
        }
        assert held_at_kill, "the worker was killed while it held work"

        _wait_until(lambda: all(status == "done" for _, status, _ in rows()), 90, "the batch to complete", logs)
        status, summary = _request(f"{base}/api/v1/batches/{batch_id}", token=token)
        assert status == 200 and summary["done"] == ITEMS and summary["finished"], summary

        with app.app_context():
            ids = [analysis_id for analysis_id, _, _ in rows()]
            per_item = dict(
                db.session.execute(
                    db.select(Prediction.analysis_id, db.func.count(Prediction.id))
                    .where(Prediction.analysis_id.in_(ids))
                    .group_by(Prediction.analysis_id)
                ).all()
            )
            # each item analysed once: its page text, its caption and that text's tone, one prediction each
            assert per_item == {analysis_id: 3 for analysis_id in ids}
            reclaimed = db.session.scalars(db.select(Analysis.id).where(Analysis.id.in_(ids), Analysis.attempts > 1))
            assert held_at_kill <= set(reclaimed), "what the killed worker held was claimed again"
            survivor = f"{os.uname().nodename}:{workers['worker-b'][0].pid}"
            assert all(db.session.get(Analysis, i).worker == survivor for i in held_at_kill)
        # No shared disk: every upload is in the bucket, none in any process's folders.
        stored = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix + "/")
        assert stored["KeyCount"] == ITEMS
        assert not any(path.name.endswith(".png") for path in tmp_path.rglob("*") if path.is_file())

        def only_the_survivor_is_listed() -> bool:  # the killed worker's heartbeats stop
            return [worker["name"] for worker in _request(base + "/healthz")[1]["workers"]] == [survivor]

        _wait_until(only_the_survivor_is_listed, 10, "the killed worker to drop off /healthz", logs)
        assert "Traceback" not in web_log.read_text(errors="replace")
    finally:
        stop_processes(processes)
