"""Periodic work claimed once per interval across processes (Redis), and a heartbeat that survives a
database that is not there yet."""

from __future__ import annotations

import time

from tests.conftest import make_app
from webapp.extensions import db
from webapp.jobs.housekeeping import Housekeeper
from webapp.locks import claim_interval
from webapp.models import Worker


def app_in(directory, **config):
    directory.mkdir()
    return make_app(directory, **config)


def test_one_claim_per_interval_among_apps_sharing_redis(tmp_path, redis_url):
    """Two apps (two processes or hosts) on one Redis: the first claim wins, the second is refused
    until the interval has passed; the claim expires by itself."""
    first = app_in(tmp_path / "a", PRISM_REDIS_URL=redis_url)
    second = app_in(tmp_path / "b", PRISM_REDIS_URL=redis_url)
    with first.app_context():
        assert claim_interval("sweep", 0.3) is True
    with second.app_context():
        assert claim_interval("sweep", 0.3) is False
        time.sleep(0.4)
        assert claim_interval("sweep", 0.3) is True


def test_without_redis_every_claim_succeeds_and_unreachable_redis_skips(tmp_path):
    with app_in(tmp_path / "a").app_context():
        assert claim_interval("sweep", 60) and claim_interval("sweep", 60)
    with app_in(tmp_path / "b", PRISM_REDIS_URL="redis://127.0.0.1:1/0").app_context():
        assert claim_interval("sweep", 60) is False


def test_heartbeat_outlives_a_failing_first_beat(tmp_path, monkeypatch):
    """The first beat failing (the database restarting as the worker starts) is retried at the next
    heartbeat; the worker then registers and reports."""
    app = make_app(tmp_path, PRISM_WORKER_HEARTBEAT_SECONDS=0.05)
    keeper = Housekeeper(app, threads=2)
    real_beat, calls = keeper._beat, []

    def flaky(*, first=False):
        calls.append(first)
        if len(calls) == 1:
            raise RuntimeError("database is starting")
        real_beat(first=first)

    monkeypatch.setattr(keeper, "_beat", flaky)
    keeper.start()
    try:
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        keeper.stop()
    assert calls[:3] == [True, True, False]  # failed registration, registered, then plain beats
    with app.app_context():
        worker = db.session.get(Worker, keeper.name_in_db)
        assert worker is not None and worker.stopped_at is not None
