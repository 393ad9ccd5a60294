"""Honest model states without a hub: one quick probe, a failure that names itself with the fix,
one short sentence for users and the diagnosis for administrators (issue #9).

No test reaches the network: the hub is a closed local port, or the probe is replaced.
"""

from __future__ import annotations

import functools
import socket
import threading
import time

import huggingface_hub
import pytest

from tests.conftest import client_for, make_app, make_token, submit
from webapp.extensions import db
from webapp.inference import fake, hub
from webapp.models import Analysis

RAW = ("ConnectionRefusedError", "HubUnreachable", "Traceback", "Errno", "127.0.0.1")
USER_SENTENCE = "is not available on this server yet; an administrator has been told."


def _closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """Online mode, an empty cache, no proxy, and HF_ENDPOINT on a closed local port."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(hub, "_probes", {})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub, "snapshot_download", _no_download)
    monkeypatch.setattr(hub, "HfApi", _no_download)


def _no_download(*args, **kwargs):
    if kwargs.get("local_files_only"):
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")
    raise AssertionError("a download was attempted")


def _no_progress(*report):
    pass


def test_a_closed_port_is_named_as_unreachable(no_hub):
    """The probe reports why the hub cannot be reached."""
    assert "ConnectionRefusedError" in hub.hub_problem()


def test_the_probe_gives_up_after_its_timeout(monkeypatch, no_hub):
    """A connection that hangs (a dead resolver, a silent firewall) is answered after the timeout."""
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(5)
        raise OSError("released")

    monkeypatch.setattr(hub.socket, "create_connection", hang)
    try:
        problem = hub.hub_problem(timeout=0.2)
    finally:
        release.set()
    assert problem.startswith("no answer from 127.0.0.1:") and "within 0.2 s" in problem


def test_the_verdict_is_kept_for_a_while(monkeypatch, no_hub):
    """Four models loading together probe the hub once."""
    calls = []
    monkeypatch.setattr(hub, "_probe", lambda *args: calls.append(args) or "refused")
    assert [hub.hub_problem() for _ in range(4)] == ["refused"] * 4
    assert len(calls) == 1
    monkeypatch.setattr(hub, "PROBE_CACHE_SECONDS", 0.0)  # the verdict expired: a hub that came back is seen
    assert hub.hub_problem() == "refused"
    assert len(calls) == 2


def _serve(answers: list[list[bytes]]) -> tuple[socket.socket, list[bytes]]:
    """A local server: for each connection, one answer per request it reads (then it hangs up)."""
    server = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def serve():
        for replies in answers:
            connection, _ = server.accept()
            with connection:
                for reply in replies:
                    requests.append(connection.recv(1024))
                    connection.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return server, requests


def _two_verdicts(monkeypatch, server: socket.socket) -> tuple[str | None, str | None]:
    """Probe twice, forgetting the first verdict in between, then stop ``server``."""
    try:
        first = hub.hub_problem()
        monkeypatch.setattr(hub, "_probes", {})
        return first, hub.hub_problem()
    finally:
        server.close()


def test_a_server_that_answers_http_is_reachable_and_one_that_does_not_is_not(monkeypatch, no_hub):
    """The probe asks for an HTTP answer: a bare TCP accept (firewalls, interceptors) is not enough."""
    server, requests = _serve([[b"HTTP/1.1 200 OK\r\n\r\n"], [b"SSH-2.0-OpenSSH\r\n"]])
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    reachable, silent = _two_verdicts(monkeypatch, server)
    assert reachable is None
    assert "gave no HTTP answer" in silent
    assert requests[0].startswith(b"HEAD / HTTP/1.1\r\n")


def test_the_probe_asks_the_proxy_for_a_tunnel(monkeypatch, no_hub):
    """With a proxy set, the probe asks it to CONNECT to the hub, then asks the hub; a refusal is reported."""
    tunnel = [b"HTTP/1.1 200 Connection established\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"]
    server, requests = _serve([tunnel, [b"HTTP/1.1 403 Forbidden\r\n\r\n"]])
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.example")
    monkeypatch.setenv("HTTP_PROXY", f"http://user:secret@127.0.0.1:{server.getsockname()[1]}")
    tunnelled, refused = _two_verdicts(monkeypatch, server)
    assert tunnelled is None
    assert "403 Forbidden" in refused
    assert requests[0].startswith(b"CONNECT hub.example:80 HTTP/1.1\r\n")
    assert b"Proxy-Authorization: Basic dXNlcjpzZWNyZXQ=" in requests[0]
    assert requests[1].startswith(b"HEAD / HTTP/1.1\r\nHost: hub.example\r\n")


def test_an_unreachable_hub_fails_at_once_with_the_fix(tmp_path, no_hub):
    """A hub id that is nowhere on disk fails with HubUnreachable and the fix; nothing is downloaded."""
    reports = []
    with pytest.raises(hub.HubUnreachable) as caught:
        hub.resolve_source("org/captioner", tmp_path / "models", False, lambda *r: reports.append(r))
    message = str(caught.value)
    assert message.startswith("hub unreachable: the model hub http://127.0.0.1:")
    for fix in ("python manage.py models pull", "PRISM_MODEL_OFFLINE=1", "local directory", "README.md#models"):
        assert fix in message
    assert all(state.value != "downloading" for state, _fraction, _detail in reports)  # nothing pretends


def test_an_unreachable_hub_still_serves_a_cached_copy(monkeypatch, tmp_path, no_hub):
    """When the hub cannot be asked for a newer copy, the cached one is used."""
    monkeypatch.setattr(hub, "_from_cache", lambda ref: "/cache/snapshot")
    assert hub.resolve_source("org/captioner", tmp_path / "models", False, _no_progress) == "/cache/snapshot"


def test_offline_mode_skips_the_probe_and_says_what_to_do(monkeypatch, tmp_path, no_hub):
    """PRISM_MODEL_OFFLINE never probes; a missing model names offline mode and the fix."""
    monkeypatch.setattr(hub, "hub_problem", lambda *a: pytest.fail("offline mode probed the hub"))
    with pytest.raises(hub.NotCached) as caught:
        hub.resolve_source("org/absent", tmp_path / "models", True, _no_progress)
    message = str(caught.value)
    assert message.startswith("offline mode: model 'org/absent'") and "not in the local cache" in message
    assert "python manage.py models pull" in message and "README.md#models" in message


def test_pull_refuses_at_once_when_the_hub_is_unreachable(tmp_path, no_hub):
    """`models pull` without a hub fails with the reason and leaves no directory behind."""
    with pytest.raises(hub.HubUnreachable, match="cannot be reached"):
        hub.pull("org/captioner", tmp_path / "models", echo=lambda line: None)
    assert not (tmp_path / "models").exists()


def _hubless_app(tmp_path, **overrides):
    app = make_app(tmp_path, PRISM_MODEL_BACKEND="transformers", PRISM_MODEL_OFFLINE=False, **overrides)
    # RapidOCR ships its weights and needs no hub: the fake stands in to keep the test short.
    app.extensions["prism_models"].ocr_slot._loader = functools.partial(fake.load, "ocr")
    return app


def test_models_check_answers_within_ten_seconds_without_a_hub(tmp_path, no_hub):
    """`models check` with an unreachable hub reports every hub model with the fix, well inside 10 s."""
    app = _hubless_app(tmp_path)
    started = time.monotonic()
    result = app.test_cli_runner().invoke(args=["models", "check", "--timeout", "60"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert elapsed < 10, f"models check took {elapsed:.1f} s"
    for kind in ("caption", "sentiment", "embedding"):
        assert f"{kind}: failed" in result.output
    assert result.output.count("hub unreachable") == 3 and "README.md#models" in result.output
    assert "ocr: ready" in result.output


@pytest.fixture
def failed_record(tmp_path, no_hub):
    """A user's service text whose sentiment model could not be had: (app, user client, record id)."""
    app = _hubless_app(tmp_path)
    user = client_for(app, "alice")
    response = submit(user, "service", text="我的订单坏了 / my order broke")
    assert response.status_code == 302
    with app.app_context():
        record = db.session.scalars(db.select(Analysis)).one()
        assert record.status == "failed" and record.error_info["reason"] == "failed"
        return app, user, record.id


def test_users_read_one_sentence_and_admins_the_fix(failed_record):
    """The record page tells its owner one sentence; an administrator reads the diagnosis and the fix."""
    app, user, record_id = failed_record
    body = user.get(f"/history/{record_id}").get_data(as_text=True)
    assert f"The sentiment model {USER_SENTENCE}" in body
    assert not [raw for raw in RAW if raw in body]
    status = user.get(f"/history/{record_id}/status").get_json()
    assert status["error"] == f"The sentiment model {USER_SENTENCE}"

    admin = client_for(app, "root", role="admin")
    body = admin.get(f"/history/{record_id}").get_data(as_text=True)
    assert "could not be loaded" in body and "hub unreachable" in body
    assert "python manage.py models pull" in body and "README.md#models" in body


def test_the_api_answers_503_model_unavailable_without_the_diagnosis(failed_record):
    """The API's 503 has a stable code and no Retry-After (retrying cannot help); admins get the detail."""
    app, _user, _record_id = failed_record
    for username, role in (("bob", "user"), ("root", "admin")):
        client_for(app, username, role=role)
        headers = {"Authorization": f"Bearer {make_token(app, username)}"}
        response = app.test_client().post("/api/v1/predict", headers=headers, json={"text": "hello"})
        error = response.get_json()["error"]
        assert response.status_code == 503 and error["code"] == "model_unavailable"
        assert "Retry-After" not in response.headers
        if role == "user":
            assert error["message"] == f"The sentiment model {USER_SENTENCE}"
            assert not [raw for raw in RAW if raw in response.get_data(as_text=True)]
        else:
            assert "hub unreachable" in error["message"] and "README.md#models" in error["message"]
