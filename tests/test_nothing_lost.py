"""Nothing lost: a scenario post refused before its view runs (too large, expired or missing CSRF
token) comes back as the same form with the text kept and a clear message (issue #9)."""

from __future__ import annotations

import io
import re

import pytest
from flask import render_template_string

from tests.conftest import client_for, csrf_token, make_app, make_token, png_bytes
from tests.test_education import grade_url, homework, teacher  # noqa: F401 (fixtures used by name)
from webapp import kept_forms
from webapp.extensions import db
from webapp.models import Analysis

MB = 1024 * 1024
TEXT = "我的订单坏了 <b>broken</b> & nobody answers"
KEPT = "我的订单坏了 &lt;b&gt;broken&lt;/b&gt; &amp; nobody answers"  # as the textarea shows it, escaped
ROLES = {"service": "user", "medical": "clinician", "education": "teacher"}
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def app16(tmp_path):
    """An app whose requests may be 16 MB at most, as in the issue's deployment."""
    return make_app(tmp_path, MAX_CONTENT_LENGTH=16 * MB)


def _post(client, scenario, *, token, text=TEXT, image=None, headers=None):
    data = {"text": text}
    if token is not None:
        data["csrf_token"] = token
    if image is not None:
        data["image"] = (io.BytesIO(image), "photo.png")
    return client.post(f"/{scenario}/", data=data, content_type="multipart/form-data", headers=headers or {})


def _records(app) -> int:
    with app.app_context():
        return len(db.session.scalars(db.select(Analysis)).all())


@pytest.mark.parametrize("scenario", ROLES)
def test_a_17_mb_post_comes_back_as_the_form_with_the_text(app16, scenario):
    """Over the request limit: 413, the scenario's form with the text, the image message, a token."""
    client = client_for(app16, "someone", role=ROLES[scenario])
    response = _post(client, scenario, token=csrf_token(client, f"/{scenario}/"), image=b"\0" * (17 * MB))
    body = response.get_data(as_text=True)
    assert response.status_code == 413
    assert 'class="analysis-form"' in body and KEPT in body
    assert "The image is larger than 10 MB." in body
    assert _CSRF.search(body) and "RequestEntityTooLarge" not in body
    assert _records(app16) == 0


def test_a_request_over_the_limit_with_small_images_names_the_request_limit(tmp_path):
    """Files each under the image limit but together over the request limit get the request's limit."""
    app = make_app(tmp_path, MAX_CONTENT_LENGTH=1 * MB)
    client = client_for(app, "alice")
    response = _post(client, "service", token=csrf_token(client, "/service/"), image=b"\0" * (3 * MB // 2))
    body = response.get_data(as_text=True)
    assert response.status_code == 413 and KEPT in body
    assert "The upload is larger than the 1 MB limit." in body


def test_a_body_far_over_the_limit_is_not_read(tmp_path):
    """Beyond SALVAGE_LIMIT_FACTOR times the limit the body is not read: the plain 413 page."""
    app = make_app(tmp_path, MAX_CONTENT_LENGTH=1 * MB)
    client = client_for(app, "alice")
    image = b"\0" * ((kept_forms.SALVAGE_LIMIT_FACTOR + 1) * MB)
    response = _post(client, "service", token=csrf_token(client, "/service/"), image=image)
    assert response.status_code == 413
    assert 'class="analysis-form"' not in response.get_data(as_text=True)


@pytest.mark.parametrize("scenario", ROLES)
@pytest.mark.parametrize("problem", ["missing", "expired"])
def test_an_expired_or_missing_token_comes_back_as_the_form(app, scenario, problem):
    """A bad CSRF token: 400, the form with the text, "session expired" and a fresh token that works."""
    client = client_for(app, "someone", role=ROLES[scenario])
    old = csrf_token(client, f"/{scenario}/")
    if problem == "expired":
        app.config["WTF_CSRF_TIME_LIMIT"] = -1  # every token is older than that
    response = _post(client, scenario, token=None if problem == "missing" else old)
    app.config["WTF_CSRF_TIME_LIMIT"] = 3600
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert KEPT in body and "Your session expired, so nothing was sent." in body
    assert "CSRF" not in body
    fresh = _CSRF.search(body).group(1)  # newly signed (the same text within one second): it works
    if scenario != "medical":  # a clinical note alone is not a submission: the medical form needs an image
        again = _post(client, scenario, token=fresh)
        assert again.status_code == 302 and _records(app) == 1


def test_files_sent_with_an_expired_token_are_asked_for_again(alice):
    """Files cannot be kept: the message says to choose them again."""
    response = _post(alice, "service", token=None, image=png_bytes())
    assert response.status_code == 400 and KEPT in response.get_data(as_text=True)
    assert "Files cannot be kept: choose them again." in response.get_data(as_text=True)


def test_passwords_and_the_old_token_are_never_kept(app, monkeypatch):
    """A kept form gets the text fields only: no password field, no old token."""
    seen = {}

    def renderer(kept, **_view_args):
        seen.update(kept.formdata)
        return render_template_string("kept"), kept.status

    app.add_url_rule("/kept-probe", "kept_probe", lambda: "", methods=["POST"])
    monkeypatch.setitem(kept_forms._RENDERERS, "kept_probe", renderer)
    response = app.test_client().post(
        "/kept-probe", data={"note": "keep me", "password": "hunter2", "new_password": "x", "csrf_token": "stale"}
    )
    assert response.status_code == 400 and seen == {"note": "keep me"}


def test_a_cross_site_post_gets_the_plain_error_page(alice):
    """A forged cross-site post is not answered with a filled-in form and a valid token."""
    response = _post(alice, "service", token=None, headers={"Sec-Fetch-Site": "cross-site"})
    body = response.get_data(as_text=True)
    assert response.status_code == 400 and TEXT not in body and KEPT not in body
    assert "The form expired or was sent from elsewhere" in body
    response = _post(alice, "service", token=None, headers={"Origin": "https://evil.example"})
    assert response.status_code == 400 and KEPT not in response.get_data(as_text=True)


def test_a_signed_out_user_gets_the_plain_error_page(client):
    """Without a session there is no form to show back."""
    response = _post(client, "service", token=None)
    assert response.status_code == 400 and KEPT not in response.get_data(as_text=True)


def test_the_api_keeps_json_errors(app16):
    """The API answers an oversized body with JSON, never a form."""
    client_for(app16, "alice")
    headers = {"Authorization": f"Bearer {make_token(app16, 'alice')}"}
    response = app16.test_client().post(
        "/api/v1/analyses",
        headers=headers,
        data={"text": TEXT, "image": (io.BytesIO(b"\0" * (17 * MB)), "big.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 413 and response.is_json
    assert response.get_json()["error"]["status"] == 413


def test_the_file_input_carries_the_limits_for_the_browser(app):
    """The upload limits are data- attributes on the file input, for the client-side check."""
    tina = client_for(app, "tina", role="teacher")
    body = tina.get("/education/").get_data(as_text=True)
    tag = re.search(r"<input[^>]*type=\"file\"[^>]*>", body).group(0)
    assert f'data-max-bytes="{10 * MB}"' in tag and 'data-max-files="50"' in tag
    accept = re.search(r'data-accept="([^"]+)"', tag).group(1).split(",")
    assert {"image/png", "image/jpeg", "application/dicom"} <= set(accept)


def test_a_teachers_grade_and_feedback_survive_an_expired_session(app, teacher, homework):  # noqa: F811
    """The grading form posted with an expired token comes back with the points and the feedback as
    typed (a teacher's long feedback is the costliest text to lose); another teacher gets the plain page."""
    url = grade_url(homework["assignment"], homework["submissions"][0])
    feedback = "方法正确，但第二步约分有误 <i>see step 2</i> & check the units."
    data = {
        "csrf_token": csrf_token(teacher, url),
        f"criterion_{homework['method']}": "3.5",
        f"criterion_{homework['answer']}": "5",
        "feedback": feedback,
        "save": "Save",
    }
    otto = client_for(app, "otto", "teacher")
    app.config["WTF_CSRF_TIME_LIMIT"] = -1
    try:
        response = teacher.post(url, data=data)
        other = otto.post(url, data=data)
    finally:
        app.config["WTF_CSRF_TIME_LIMIT"] = 3600
    body = response.get_data(as_text=True)
    assert response.status_code == 400 and "Your session expired, so nothing was sent." in body
    assert "方法正确，但第二步约分有误 &lt;i&gt;see step 2&lt;/i&gt; &amp; check the units." in body
    assert 'value="3.5"' in body and 'value="5"' in body
    assert other.status_code == 400 and feedback not in other.get_data(as_text=True)
    fresh = _CSRF.search(body).group(1)
    saved = teacher.post(url, data=data | {"csrf_token": fresh})
    assert saved.status_code == 302
    page = teacher.get(url).get_data(as_text=True)
    assert "方法正确，但第二步约分有误" in page
