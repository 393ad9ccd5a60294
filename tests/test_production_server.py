"""Production topology: gunicorn (gunicorn.conf.py) serves the app, `manage.py worker` runs the jobs."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import make_app, make_token, make_user, png_bytes, reply_draft
from webapp.devservers import free_port
from webapp.extensions import db

PROJECT = Path(__file__).resolve().parent.parent


def _get(url: str, headers: dict | None = None, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310 (loopback http only)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 (loopback only)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[float, str]:
    """Send ``sig`` and wait for the process to exit; returns (seconds it took, its output)."""
    started = time.monotonic()
    process.send_signal(sig)
    try:
        output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        output = process.communicate()[0]
        pytest.fail(f"{process.args} did not stop within {timeout} s:\n{output.decode(errors='replace')}")
    return time.monotonic() - started, output.decode(errors="replace")


@pytest.fixture
def server(tmp_path):
    """gunicorn -c gunicorn.conf.py with two workers on a free loopback port, plus one `manage.py worker`
    on the same SQLite job queue; fake models, in the worker only."""
    app = make_app(tmp_path)
    make_user(app, "alice")
    token = make_token(app, "alice")
    with app.app_context():
        database_url = str(db.engine.url)
        db.engine.dispose()
    port = free_port()
    env = {
        **os.environ,
        "PRISM_BIND": f"127.0.0.1:{port}",
        "PRISM_WORKERS": "2",
        "PRISM_THREADS": "4",
        "PRISM_INSTANCE_PATH": str(tmp_path),  # the job queue defaults to <instance>/jobs.sqlite for both
        "PRISM_SECRET_KEY": "server-test-secret",
        "PRISM_DATABASE_URL": database_url,
        "PRISM_MODEL_BACKEND": "fake",
        "PRISM_WORKER_THREADS": "4",
        "PRISM_WORKER_MAX_POLL_MS": "50",
    }
    env.pop("PRISM_JOBS_IMMEDIATE", None)
    popen = {"cwd": PROJECT, "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    # No control socket: its default path (~/.gunicorn/gunicorn.ctl) is shared by every gunicorn on the machine.
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--no-control-socket"], **popen)
    worker = subprocess.Popen([sys.executable, "manage.py", "worker"], **popen)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status, health = _get(base + "/healthz")
            if status == 200 and health["workers"]:  # the job worker has reported in
                break
        except OSError:
            pass
        time.sleep(0.2)
    try:
        yield base, token, web, worker, app
    finally:
        for process in (web, worker):
            if process.poll() is None:
                process.kill()
                process.communicate()


def test_gunicorn_and_worker_serve_prism_and_stop_cleanly(server):
    """The job worker runs 8 concurrent predictions that gunicorn queued (its processes load no model),
    and both stop fast on SIGTERM."""
    base, token, web, worker, app = server
    expected = {
        "ocr": "TEXT 64x48 red",
        "caption": "a 64x48 picture, mostly red",
        "sentiment": "positive",
        "category": "billing",
        "reply": reply_draft(app, "billing", "positive"),
    }
    status, health = _get(base + "/healthz")
    assert status == 200
    assert {model["state"] for model in health["models"]} == {"not_loaded"}  # gunicorn's own: never loaded
    image = base64.b64encode(png_bytes()).decode()
    body = json.dumps({"scenario": "service", "text": "great, thanks", "image": image}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: _get(base + "/api/v1/predict", headers, body), range(8)))
    assert [status for status, _ in results] == [201] * 8, results
    assert len({payload["id"] for _, payload in results}) == 8
    assert all(payload["status"] == "done" for _, payload in results)
    assert all(payload["values"].items() >= expected.items() for _, payload in results), results
    assert all(set(payload["values"]) == {*expected, "fusion", "agreement"} for _, payload in results), results
    assert web.poll() is None and worker.poll() is None

    web_seconds, web_output = _stop(web)
    worker_seconds, worker_output = _stop(worker)
    assert web.returncode == 0, web_output
    assert worker.returncode == 0, worker_output
    assert "Traceback" not in web_output, web_output
    assert "Traceback" not in worker_output, worker_output
    assert "Consumer exiting" in worker_output, worker_output
    # gunicorn only queues: every one of the eight jobs ran in the worker process.
    assert worker_output.count("Executing webapp.jobs.prism.run_analysis") == 8, worker_output
    assert web_seconds < 10, f"gunicorn took {web_seconds:.1f} s to stop:\n{web_output}"
    assert worker_seconds < 10, f"the worker took {worker_seconds:.1f} s to stop:\n{worker_output}"
