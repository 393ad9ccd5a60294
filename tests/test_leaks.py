"""Issue #8, finding 8: what the server gives away. No model path or exception text to anyone but an
admin; no absolute URL built from a Host header outside PRISM_TRUSTED_HOSTS; no cached API answer;
HSTS over HTTPS; no search words in access logs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import client_for, make_app, make_token, submit
from webapp import config as prism_config
from webapp.commands import _path_only_request_handler
from webapp.inference import ModelService
from webapp.inference.types import ModelState, ModelStatus, public_model_name

SECRET_DIR = "/srv/hospital-7/models/caption-finetuned"
FAILURE = f"OSError: Can't load config for '{SECRET_DIR}'. Permission denied"


@pytest.fixture
def failed_model(monkeypatch):
    status = ModelStatus(kind="caption", source=SECRET_DIR, state=ModelState.FAILED, detail=FAILURE)
    monkeypatch.setattr(ModelService, "statuses", lambda self: [status])


def test_healthz_and_pages_show_no_model_path_or_exception_to_non_admins(app, failed_model):
    """Before, /healthz and the anonymous login page showed the directory and the exception."""
    health = app.test_client().get("/healthz")
    assert health.status_code == 200
    assert health.get_json()["models"] == [
        {
            "kind": "caption",
            "source": "caption-finetuned",
            "state": "failed",
            "progress": None,
            "model_id": None,
            "revision": None,
        }
    ]
    for page in (app.test_client().get("/login"), client_for(app, "alice").get("/")):
        body = page.get_data(as_text=True)
        assert "hospital-7" not in body and "OSError" not in body and "Permission denied" not in body
        assert "An administrator can see why on the admin overview." in body
    admin_page = client_for(app, "root", role="admin").get("/").get_data(as_text=True)
    assert "Permission denied" in admin_page  # the admin still sees why, to fix it


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("nlpconnect/vit-gpt2-image-captioning", "nlpconnect/vit-gpt2-image-captioning"),
        ("/srv/models/blip/", "blip"),
        ("./instance/models/x", "x"),
        ("~/models/y", "y"),
        ("C:\\models\\z", "z"),
    ],
)
def test_public_model_name(source, shown):
    assert public_model_name(source) == shown


def test_api_answers_are_never_cached(app):
    client_for(app, "alice")
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    listing = app.test_client().get("/api/v1/analyses", headers=headers)
    refused = app.test_client().get("/api/v1/analyses", headers={"Authorization": "Bearer nope"})
    assert (listing.status_code, refused.status_code) == (200, 401)
    assert listing.headers["Cache-Control"] == refused.headers["Cache-Control"] == "private, no-store"


def test_hsts_only_over_https(app):
    assert "Strict-Transport-Security" not in app.test_client().get("/login").headers
    secure = app.test_client().get("/login", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_trusted_hosts_refuse_a_forged_host(tmp_path, monkeypatch):
    """With PRISM_TRUSTED_HOSTS, another Host header is a 400 and API URLs name the trusted host;
    before, ``Host: evil.example`` came back in the API's ``url`` fields."""
    monkeypatch.setenv("PRISM_TRUSTED_HOSTS", "prism.example, localhost")
    assert prism_config._from_environment()["TRUSTED_HOSTS"] == ["prism.example", "localhost"]
    app = make_app(tmp_path, TRUSTED_HOSTS=["prism.example", "localhost"])
    alice = client_for(app, "alice")
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    submit(alice, text="Where is my parcel?")
    forged = app.test_client().get("/api/v1/analyses", headers={**headers, "Host": "evil.example"})
    assert forged.status_code == 400 and b"evil.example" not in forged.data
    honest = app.test_client().get("/api/v1/analyses", headers={**headers, "Host": "prism.example"})
    assert honest.status_code == 200
    urls = re.findall(r'"(https?://[^/"]+)/', honest.get_data(as_text=True))
    assert urls and set(urls) == {"http://prism.example"}


def test_access_logs_carry_no_query_string():
    """The development server and gunicorn log the path only: a history search holds a user's words."""
    handler_class = _path_only_request_handler()
    handler = handler_class.__new__(handler_class)
    # As a real request leaves it: werkzeug logs self.path, and the request line only without one.
    handler.command, handler.request_version = "GET", "HTTP/1.1"
    handler.path = "/history/?q=%E5%BC%A0%E4%BC%9F+refund&page=2"
    handler.requestline = f"GET {handler.path} HTTP/1.1"
    logged = []
    handler.log = lambda level, message, *args: logged.append(message % args)
    handler.log_request(200, 512)
    assert len(logged) == 1 and "GET /history/ HTTP/1.1" in logged[0] and "refund" not in logged[0]
    assert handler.path.endswith("page=2")  # the request itself keeps its query string
    gunicorn_conf = (Path(__file__).resolve().parent.parent / "gunicorn.conf.py").read_text()
    [log_format] = re.findall(r"^access_log_format = '(.*)'$", gunicorn_conf, flags=re.MULTILINE)
    assert "%(U)s" in log_format and "%(r)s" not in log_format and "%(q)s" not in log_format
    assert "%(f)s" not in log_format  # the referrer is a URL with its own query string
