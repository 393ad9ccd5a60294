"""Integers past what the database holds never reach it: every ``<int:...>`` route and every ``page``
answers 404 (never a 500 from the driver's OverflowError), for the web pages and the API alike."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest

from tests.conftest import client_for, csrf_token, make_token, png_bytes, submit
from webapp.bounds import MAX_ID, MAX_PAGE, database_id

HUGE = 2**64  # past a signed 64-bit id: OverflowError in SQLite's and PostgreSQL's drivers
_INT = re.compile(r"<int:\w+>")
_OTHER = re.compile(r"<(?!int:)[^>]+>")


def _routes(app, method: str) -> list[str]:
    """The rules with an integer part that answer ``method``, filled with HUGE (other parts: "x")."""
    found = []
    for rule in app.url_map.iter_rules():
        if method in rule.methods and _INT.search(rule.rule):
            found.append(_OTHER.sub("x", _INT.sub(str(HUGE), rule.rule)))
    return sorted(found)


@pytest.mark.both_databases
def test_ids_past_64_bits_are_not_found_on_every_route(app):
    """Each route with an id, GET and POST (with a valid CSRF token), as an admin and through the API."""
    admin = client_for(app, "root", role="admin")
    token = csrf_token(admin, "/service/")
    gets, posts = _routes(app, "GET"), _routes(app, "POST")
    assert len(gets) >= 15 and len(posts) >= 10  # the record, image, delete, revoke, role ... routes
    answers = {f"GET {url}": admin.get(url).status_code for url in gets}
    answers |= {f"POST {url}": admin.post(url, data={"csrf_token": token}).status_code for url in posts}
    headers = {"Authorization": f"Bearer {make_token(app, 'root')}"}
    answers |= {f"API GET {url}": admin.get(url, headers=headers).status_code for url in gets if "/api/" in url}
    assert {request: status for request, status in answers.items() if status != 404} == {}


@pytest.mark.both_databases
def test_pages_past_the_last_are_bounded(app):
    """``page`` beyond MAX_PAGE is 404 on every listing; within it, past the end, an empty page; not a
    number, page 1 (as before)."""
    admin = client_for(app, "root", role="admin")
    listings = ["/history/", "/admin/analyses", "/admin/audit", "/admin/users", "/review/service/"]
    listings += ["/service-desk/", "/api/v1/analyses"]
    headers = {"Authorization": f"Bearer {make_token(app, 'root')}"}
    for url in listings:
        assert admin.get(f"{url}?page={HUGE}", headers=headers).status_code == 404, url
        assert admin.get(f"{url}?page={MAX_PAGE + 1}", headers=headers).status_code == 404, url
        assert admin.get(f"{url}?page={MAX_PAGE}", headers=headers).status_code == 200, url
        assert admin.get(f"{url}?page=abc", headers=headers).status_code == 200, url


def test_api_batch_into_an_unknown_or_malformed_assignment_is_404(app):
    """An ``assignment`` that is no id of the teacher's is 404 whatever its form; before, a huge one
    was a 500 and a word was ignored (the photos went to the service scenario)."""
    client_for(app, "tina", role="teacher")
    headers = {"Authorization": f"Bearer {make_token(app, 'tina')}"}
    for value in (str(HUGE), "abc", "-1", "0", "1.5", ""):
        response = app.test_client().post(
            "/api/v1/batches",
            headers=headers,
            data={"assignment": value, "images": [(io.BytesIO(png_bytes()), "kim.png")]},
            content_type="multipart/form-data",
        )
        assert (response.status_code, response.get_json()["error"]["message"]) == (404, "No such assignment."), value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1),
        ("42", 42),
        (" 7 ", 7),
        (MAX_ID, MAX_ID),
        (str(MAX_ID), MAX_ID),
        (MAX_ID + 1, None),
        (str(HUGE), None),
        (0, None),
        ("-3", None),
        ("1.5", None),
        (1.0, None),
        (True, None),
        ("٣", None),
        ("", None),
        (None, None),
    ],
)
def test_database_id(value, expected):
    assert database_id(value) == expected


def _stored(app) -> tuple[int, list]:
    """(analyses in the database, files in the upload folder)."""
    from pathlib import Path

    from webapp.extensions import db
    from webapp.models import Analysis

    with app.app_context():
        count = db.session.scalar(db.select(db.func.count(Analysis.id)))
    root = Path(app.config["UPLOAD_FOLDER"])
    return count, sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.both_databases
@pytest.mark.parametrize("text", ["\ud800 lone high surrogate", "lone low \udfff", "NUL \x00 inside"])
def test_unstorable_text_in_json_is_a_400_before_anything_is_stored(app, text):
    """A lone surrogate or a NUL (PostgreSQL refuses it) in a JSON body: 400 with the reason, and no
    row, no file, no job. Before, it was a 500 after the image had been written."""
    client_for(app, "alice")
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    body = json.dumps({"text": text, "image": base64.b64encode(png_bytes()).decode()})
    response = app.test_client().post("/api/v1/predict", data=body, headers=headers, content_type="application/json")
    assert response.status_code == 400
    assert "NUL character or a lone surrogate" in response.get_json()["error"]["message"]
    assert _stored(app) == (0, [])


@pytest.mark.both_databases
def test_control_characters_in_a_text_for_the_models_are_refused(app):
    """The web form and the API refuse a text with a control character (tab and line breaks are fine)
    before any model runs or any file is written."""
    alice = client_for(app, "alice")
    response = submit(alice, text="bell \x07 here", image=png_bytes())
    assert response.status_code == 400
    assert "control character (only tabs and line breaks are allowed)" in response.get_data(as_text=True)
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    response = app.test_client().post("/api/v1/analyses", json={"text": "escape \x1b[31m"}, headers=headers)
    assert response.status_code == 400 and "control character" in response.get_json()["error"]["message"]
    assert _stored(app) == (0, [])
    assert submit(alice, text="line one\r\n\tline two", image=None).status_code == 302


@pytest.mark.both_databases
def test_a_nul_in_any_form_field_is_a_400(app):
    """A NUL in a review comment (any form field) is refused before the view runs: no review is
    stored, where PostgreSQL would have failed the insert with a 500."""
    from webapp.extensions import db
    from webapp.models import Analysis, Review

    alice = client_for(app, "alice")
    record = submit(alice, text="Thanks, great service!").headers["Location"]
    with app.app_context():
        prediction_id = db.session.get(Analysis, int(record.rsplit("/", 1)[1])).prediction("sentiment").id
    form = {"csrf_token": csrf_token(alice, record), "decision": "accept"}
    response = alice.post(f"/review/predictions/{prediction_id}", data={**form, "comment": "ok\x00"})
    assert response.status_code == 400
    assert "NUL character or a lone surrogate" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Review.id))) == 0
    response = alice.post(f"/review/predictions/{prediction_id}", data={**form, "comment": "ok"})
    assert response.status_code in (302, 303)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Review.id))) == 1


@pytest.mark.both_databases
def test_a_nul_in_a_query_parameter_is_a_400(app):
    """A NUL in a search (``?q=``) is refused before the view runs, in the API and on the history page,
    where PostgreSQL would have failed the search with a 500 (found checking the API against its
    OpenAPI document)."""
    alice = client_for(app, "alice")
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}"}
    response = app.test_client().get("/api/v1/analyses?q=a%00b", headers=headers)
    assert response.status_code == 400
    assert "NUL character or a lone surrogate" in response.get_json()["error"]["message"]
    assert alice.get("/history/?q=a%00b").status_code == 400
    assert app.test_client().get("/api/v1/analyses?q=ab", headers=headers).status_code == 200


@pytest.mark.both_databases
def test_ids_past_32_bits_are_not_found(app):
    """An id past PostgreSQL's INTEGER (2**31 - 1) is a 404 in the API, on the web and as a form's
    assignment id, where PostgreSQL failed the query with a 500 (found checking the API against its
    OpenAPI document on PostgreSQL)."""
    teacher = client_for(app, "tina", role="teacher")
    headers = {"Authorization": f"Bearer {make_token(app, 'tina')}"}
    api = app.test_client()
    past = 2**31
    assert api.get(f"/api/v1/analyses/{past}", headers=headers).status_code == 404
    assert api.post(f"/api/v1/analyses/{past}/reviews", headers=headers, json={}).status_code == 404
    assert api.get(f"/api/v1/batches/{past}", headers=headers).status_code == 404
    assert api.get(f"/api/v1/assignments/{past}", headers=headers).status_code == 404
    batch = {"assignment": str(past), "images": [(io.BytesIO(png_bytes()), "p.png")]}
    assert api.post("/api/v1/batches", headers=headers, data=batch).status_code == 404
    assert teacher.get(f"/history/{past}").status_code == 404
    assert teacher.get(f"/education/assignments/{past}").status_code == 404
    assert api.get(f"/api/v1/analyses/{MAX_ID}", headers=headers).status_code == 404  # the largest: no such record
