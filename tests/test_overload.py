"""Backpressure: a full model queue answers 503 with Retry-After on pages and in the API, never a hang or 500."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import csrf_token, login, make_app, make_token, make_user
from webapp.extensions import db
from webapp.inference.fake import FakeSentimentModel
from webapp.models import Analysis


@pytest.fixture
def small_queue_app(tmp_path, monkeypatch):
    """One sentiment request at a time and one waiting; the fake model blocks until released."""
    app = make_app(tmp_path, PRISM_QUEUE_SIZE=1, PRISM_SENTIMENT_MAX_BATCH=1, PRISM_BATCH_WINDOW_MS=0)
    release = threading.Event()
    original = FakeSentimentModel.classify
    monkeypatch.setattr(FakeSentimentModel, "classify", lambda self, texts: release.wait(10) and original(self, texts))
    app.release = release
    yield app
    release.set()
    with app.app_context():
        db.engine.dispose()


def _fill_queue(app, token, pool):
    """Occupy the model worker and its one queue place; returns the two pending API calls."""
    calls = []
    for text in ("first", "second"):
        client = app.test_client()
        calls.append(
            pool.submit(
                client.post, "/api/v1/predict", json={"text": text}, headers={"Authorization": f"Bearer {token}"}
            )
        )
        time.sleep(0.3)
    return calls


def test_api_sheds_load_with_503_and_retry_after(small_queue_app):
    """A request beyond the queue gets 503 JSON (reason busy) with Retry-After at once; queued ones finish."""
    app = small_queue_app
    make_user(app, "alice")
    token = make_token(app, "alice")
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = _fill_queue(app, token, pool)
        started = time.monotonic()
        response = app.test_client().post(
            "/api/v1/predict", json={"text": "third"}, headers={"Authorization": f"Bearer {token}"}
        )
        waited = time.monotonic() - started
        app.release.set()
        assert [call.result().status_code for call in pending] == [201, 201]
    assert response.status_code == 503
    assert response.json["error"]["reason"] == "busy"
    assert int(response.headers["Retry-After"]) >= 1
    assert waited < 5  # shed at once rather than after the 30 s inference timeout
    with app.app_context():
        assert sorted(db.session.scalars(db.select(Analysis.text))) == ["first", "second"]


def test_page_says_busy_and_keeps_the_text(small_queue_app):
    """The scenario page answers 503 with a 'busy' message and keeps what the user typed."""
    app = small_queue_app
    make_user(app, "alice")
    token = make_token(app, "alice")
    browser = app.test_client()
    login(browser, "alice")
    form_token = csrf_token(browser, "/service/")
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = _fill_queue(app, token, pool)
        response = browser.post("/service/", data={"csrf_token": form_token, "text": "où est ma commande ?"})
        app.release.set()
        [call.result() for call in pending]
    page = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert "Prism is busy" in page
    assert "où est ma commande ?" in page
