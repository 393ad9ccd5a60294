"""The documented production setup: gunicorn with gunicorn.conf.py serves the app, models load per worker."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import make_app, make_token, make_user, png_bytes
from webapp.extensions import db

PROJECT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, headers: dict | None = None, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310 (loopback http only)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 (loopback only)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def server(tmp_path):
    """gunicorn -c gunicorn.conf.py with two workers on a free loopback port, fake models, warm on start."""
    app = make_app(tmp_path)
    make_user(app, "alice")
    token = make_token(app, "alice")
    with app.app_context():
        database_url = str(db.engine.url)
        db.engine.dispose()
    port = _free_port()
    env = {
        **os.environ,
        "PRISM_BIND": f"127.0.0.1:{port}",
        "PRISM_WORKERS": "2",
        "PRISM_THREADS": "4",
        "PRISM_WARM_ON_START": "1",
        "PRISM_INSTANCE_PATH": str(tmp_path),
        "PRISM_SECRET_KEY": "server-test-secret",
        "PRISM_DATABASE_URL": database_url,
        "PRISM_MODEL_BACKEND": "fake",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status, health = _get(base + "/healthz")
            if status == 200 and all(model["state"] == "ready" for model in health["models"]):
                break
        except OSError:
            pass
        time.sleep(0.2)
    yield base, token, process
    process.terminate()
    output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert "Traceback" not in output, output


def test_gunicorn_serves_prism_with_models_loaded_after_fork(server):
    """Both workers boot, load models on start (no request needed), and answer concurrent API calls."""
    base, token, process = server
    status, health = _get(base + "/healthz")
    assert status == 200
    assert [model["state"] for model in health["models"]] == ["ready", "ready"]
    image = base64.b64encode(png_bytes()).decode()
    body = json.dumps({"scenario": "service", "text": "great, thanks", "image": image}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: _get(base + "/api/v1/predict", headers, body), range(8)))
    assert [status for status, _ in results] == [201] * 8
    assert len({payload["id"] for _, payload in results}) == 8
    assert all(payload["sentiment"]["label"] == "positive" for _, payload in results)
    assert process.poll() is None
