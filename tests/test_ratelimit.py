"""Rate limits: login, registration, submissions and the API answer 429 with Retry-After past their limit;
with Redis, two apps (two processes or hosts) share one count; a Redis outage lets requests through."""

from __future__ import annotations

import io
import logging
from unittest.mock import Mock

import pytest
import redis

from tests.conftest import TEST_PASSWORD, client_for, csrf_token, make_app, make_token, make_user, png_bytes, submit
from webapp import devservers, ratelimit
from webapp.extensions import db

TOO_MANY = "Too many requests; slow down and try again."
WRONG_PASSWORD = "not the password"


@pytest.fixture
def make_limited_app(tmp_path):
    """Build apps with the given settings, each in its own directory; their engines are disposed after the test."""
    built = []

    def build(**overrides):
        directory = tmp_path / f"app{len(built)}"
        directory.mkdir()
        app = make_app(directory, **overrides)
        built.append(app)
        return app

    yield build
    for app in built:
        with app.app_context():
            db.engine.dispose()


def post_login(client, username: str, password: str = WRONG_PASSWORD, **kwargs):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token}, **kwargs)


def assert_retry_after(response) -> None:
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60


def test_login_limit_is_per_address_and_username(make_limited_app):
    """The 4th login POST for one IP+username (any case) in a minute is a 429 page; other names and IPs pass."""
    app = make_limited_app(PRISM_RATELIMIT_LOGIN="3 per minute")
    make_user(app, "alice")
    client = app.test_client()
    answers = [post_login(client, name).status_code for name in ("alice", "Alice", " ALICE ")]
    refused = post_login(client, "alice", password=TEST_PASSWORD)

    assert answers == [200, 200, 200]
    assert_retry_after(refused)
    assert refused.mimetype == "text/html"
    assert TOO_MANY in refused.get_data(as_text=True)
    assert post_login(client, "bob").status_code == 200
    elsewhere = post_login(app.test_client(), "alice", password=TEST_PASSWORD, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert elsewhere.status_code == 302


def test_showing_the_login_form_is_never_limited(make_limited_app):
    """GET /login neither counts nor is refused, even once the POST limit is spent."""
    app = make_limited_app(PRISM_RATELIMIT_LOGIN="1 per minute")
    client = app.test_client()
    shown = [client.get("/login").status_code for _ in range(5)]
    assert post_login(client, "alice").status_code == 200
    assert post_login(client, "alice").status_code == 429
    assert shown == [200] * 5
    assert client.get("/login").status_code == 200


def test_registration_is_limited_per_address(make_limited_app):
    """Registrations count per IP whatever the username: the 3rd within a minute is a 429."""
    app = make_limited_app(PRISM_RATELIMIT_LOGIN="2 per minute")
    answers = []
    for name in ("ann", "ben", "cat"):
        client = app.test_client()
        token = csrf_token(client, "/register")
        data = {"username": name, "password": "a long passphrase", "confirm": "a long passphrase", "csrf_token": token}
        answers.append(client.post("/register", data=data))
    assert [response.status_code for response in answers] == [302, 302, 429]
    assert_retry_after(answers[2])


def test_web_submissions_are_limited_per_user_and_a_batch_counts_once(make_limited_app):
    """With 2 submissions a minute: a batch of three images and one text pass, the next POST is a 429 page."""
    app = make_limited_app(PRISM_RATELIMIT_SUBMIT="2 per minute")
    teacher = client_for(app, "tina", "teacher")
    files = [(io.BytesIO(png_bytes(color=(10 * n, 0, 0))), f"page-{n}.png") for n in range(3)]
    batch = teacher.post(
        "/education/",
        data={"csrf_token": csrf_token(teacher, "/education/"), "image": files},
        content_type="multipart/form-data",
    )
    single = submit(teacher, "education", text="My essay.")
    refused = submit(teacher, "education", text="One more.")

    assert (batch.status_code, single.status_code) == (302, 302)
    assert_retry_after(refused)
    assert TOO_MANY in refused.get_data(as_text=True)
    assert submit(client_for(app, "olga", "teacher"), "education", text="Mine.").status_code == 302


def test_api_limit_answers_json_429_per_user(make_limited_app):
    """Past PRISM_RATELIMIT_API the API answers a JSON 429 with Retry-After, for every token of that user."""
    app = make_limited_app(PRISM_RATELIMIT_API="2 per minute")
    make_user(app, "alice")
    first, second = make_token(app, "alice", "one"), make_token(app, "alice", "two")
    client = app.test_client()
    answers = [client.get("/api/v1/analyses", headers={"Authorization": f"Bearer {first}"}) for _ in range(2)]
    refused = client.get("/api/v1/analyses", headers={"Authorization": f"Bearer {second}"})

    assert [response.status_code for response in answers] == [200, 200]
    assert_retry_after(refused)
    assert refused.json == {"error": {"status": 429, "message": TOO_MANY}}


def test_api_submissions_have_their_own_limit(make_limited_app):
    """POST /api/v1/analyses, /batches and /predict count against PRISM_RATELIMIT_SUBMIT; reads still pass."""
    app = make_limited_app(PRISM_RATELIMIT_SUBMIT="1 per minute")
    make_user(app, "alice")
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    client = app.test_client()
    created = client.post("/api/v1/analyses", headers=headers, json={"scenario": "service", "text": "Great!"})
    refused = client.post("/api/v1/analyses", headers=headers, json={"scenario": "service", "text": "Again!"})
    batch = client.post(
        "/api/v1/batches",
        headers=headers,
        data={"images": [(io.BytesIO(png_bytes()), "a.png")]},
        content_type="multipart/form-data",
    )

    predict = client.post("/api/v1/predict", headers=headers, json={"scenario": "service", "text": "Sync!"})

    assert created.status_code == 202
    assert_retry_after(refused)
    assert refused.is_json and batch.status_code == 429 and predict.status_code == 429
    assert client.get("/api/v1/analyses", headers=headers).status_code == 200


def test_web_and_api_submissions_share_one_count(make_limited_app):
    """A user's web and API submissions spend one PRISM_RATELIMIT_SUBMIT: an API POST uses up a limit of 1."""
    app = make_limited_app(PRISM_RATELIMIT_SUBMIT="1 per minute")
    browser = client_for(app, "alice")
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    created = app.test_client().post("/api/v1/analyses", headers=headers, json={"text": "Great!"})
    assert created.status_code == 202
    assert_retry_after(submit(browser, "service", text="And from the browser."))


def test_disabled_limits_never_refuse(make_limited_app):
    """PRISM_RATELIMIT_ENABLED=False turns every limit off."""
    app = make_limited_app(PRISM_RATELIMIT_ENABLED=False, PRISM_RATELIMIT_LOGIN="1 per minute")
    client = app.test_client()
    assert [post_login(client, "alice").status_code for _ in range(3)] == [200, 200, 200]


def test_two_apps_on_one_redis_share_the_count(make_limited_app, redis_url):
    """Two apps (two processes or hosts) on one Redis: 2 + 2 login POSTs spend a limit of 4; the 5th fails on both."""
    apps = [make_limited_app(PRISM_REDIS_URL=redis_url, PRISM_RATELIMIT_LOGIN="4 per minute") for _ in range(2)]
    clients = [app.test_client() for app in apps]
    answers = [post_login(client, "alice").status_code for client in clients for _ in range(2)]

    assert answers == [200, 200, 200, 200]
    for client in clients:
        assert_retry_after(post_login(client, "alice"))
    keys = redis.Redis.from_url(redis_url).keys("*")
    # The login counts, the account's failures (webapp/auth/devices.py) and the cap on audit rows of
    # failed logins (webapp/audit.py): all shared.
    expected = {b"prism:rl:login", b"prism:rl:login_account", b"prism:rl:audit_failures"}
    assert {key.split(b"/")[0] for key in keys} == expected


def test_unreachable_redis_fails_open(make_limited_app, monkeypatch):
    """With Redis down every request is allowed, and the outage is logged once, not per request."""
    closed_port = devservers.free_port()  # nothing listens there
    app = make_limited_app(PRISM_REDIS_URL=f"redis://127.0.0.1:{closed_port}/0", PRISM_RATELIMIT_LOGIN="1 per minute")
    # A mock, not caplog: alembic's fileConfig (run by make_app) replaces the root handlers caplog relies on.
    logger = Mock(spec=logging.Logger)
    monkeypatch.setattr(ratelimit, "logger", logger)
    client = app.test_client()
    assert [post_login(client, "alice").status_code for _ in range(3)] == [200, 200, 200]
    assert logger.warning.call_count == 1


def test_behind_a_trusted_proxy_clients_are_told_apart_by_their_forwarded_address(tmp_path):
    """PRISM_TRUSTED_PROXIES=1 (one nginx): two clients behind it get separate login counts; with 0, the
    header is ignored, so a client cannot dodge its limit by forging X-Forwarded-For."""
    from webapp.ratelimit import client_ip

    for proxies, expected in ((1, "ip:203.0.113.7"), (0, "ip:127.0.0.1")):
        (tmp_path / str(proxies)).mkdir()
        app = make_app(tmp_path / str(proxies), PRISM_TRUSTED_PROXIES=proxies)
        seen = []
        app.add_url_rule("/whoami", "whoami", lambda seen=seen: seen.append(client_ip()) or "ok")
        app.test_client().get("/whoami", headers={"X-Forwarded-For": "203.0.113.7"})
        assert seen == [expected]
