"""The OpenAPI document of /api/v1: served publicly, valid, in step with the app's routes, and true of
the live API (schemathesis generates requests from it and checks every answer against it)."""

from __future__ import annotations

import base64
import io
import os
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import client_for, make_app, make_token, png_bytes, record_id
from tests.test_education import create_assignment, create_rubric, rubric_ids
from webapp.api.openapi import PATHS, PREFIX, document
from webapp.extensions import db
from webapp.inference import ModelService, ModelState, ModelUnavailable

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Bounded so the file stays fast: this many requests per operation, mode and database.
# PRISM_OPENAPI_EXAMPLES=300 makes a longer hunt (at 300 on SQLite and 100 on PostgreSQL it found
# nothing the default had not).
MAX_EXAMPLES = int(os.environ.get("PRISM_OPENAPI_EXAMPLES", "10"))
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def test_document_is_public_valid_openapi_and_cacheable(client):
    """GET /api/v1/openapi.json needs no token, is valid OpenAPI 3.1, and may be cached publicly (ETag, 304)."""
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.is_json
    validate(response.json)
    assert response.json["openapi"].startswith("3.1")
    assert response.headers["Cache-Control"].startswith("public, max-age=")
    again = client.get("/api/v1/openapi.json", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


def test_document_names_no_host_or_server_path(app, client):
    """The document names no host, instance folder or file path: any deployment serves the same bytes."""
    text = client.get("/api/v1/openapi.json", headers={"Host": "prism.example"}).get_data(as_text=True)
    assert "prism.example" not in text and "localhost" not in text
    assert app.instance_path not in text and app.root_path not in text
    assert client.get("/api/v1/openapi.json").json["servers"] == [{"url": PREFIX}]


def test_document_is_english_whatever_the_reader_chose(client):
    """The JSON is English even for a Chinese-speaking caller (its texts are the docs page's, translated there)."""
    english = client.get("/api/v1/openapi.json").json
    chinese = client.get("/api/v1/openapi.json", headers={"Accept-Language": "zh-CN"}).json
    assert chinese == english
    assert english["paths"]["/analyses"]["post"]["summary"] == "Submit an analysis"


def _route_operations(app) -> set[tuple[str, str]]:
    operations = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(PREFIX + "/"):
            path = _RULE_ARGUMENT.sub(r"{\1}", rule.rule.removeprefix(PREFIX))
            operations |= {(method.lower(), path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return operations


def _documented_operations(doc: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item if method != "parameters"}


def test_every_api_route_is_documented_and_every_documented_route_exists(app):
    """The document's operations are exactly the app's /api/v1 routes (method and path)."""
    with app.test_request_context("/api/v1/openapi.json"):
        documented = _documented_operations(document())
    assert _route_operations(app) == documented


def test_route_comparison_notices_an_undocumented_route(tmp_path):
    """A route added under /api/v1 without a document entry breaks the comparison above."""
    app = make_app(tmp_path)
    app.add_url_rule("/api/v1/secret/<int:thing_id>", "secret", lambda thing_id: "", methods=["DELETE"])
    with app.test_request_context("/api/v1/openapi.json"):
        documented = _documented_operations(document())
    assert _route_operations(app) - documented == {("delete", "/secret/{thing_id}")}


# --- The live API against the document ----------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory):
    """An app with rate limits off (so generated calls reach the views), a teacher with a token, an
    assignment with one photo submission, and a finished analysis with an image; on SQLite, and on
    PostgreSQL where it can start (it refuses what SQLite lets through: NUL, ids past 32 bits)."""
    overrides = {"PRISM_RATELIMIT_ENABLED": False}
    if request.param == "postgresql":
        postgres = request.getfixturevalue("postgres")
        template = request.getfixturevalue("postgres_template")
        overrides["SQLALCHEMY_DATABASE_URI"] = postgres.create_database("openapi_live", template=template)
    app = make_app(tmp_path_factory.mktemp("openapi"), **overrides)
    teacher = client_for(app, "tina", "teacher")
    secret = make_token(app, "tina")
    create_rubric(teacher)
    assignment_id = record_id(create_assignment(teacher, rubric_ids(app)[0]))
    api = app.test_client()
    batch = api.post(
        "/api/v1/batches",
        headers=bearer(secret),
        data={"assignment": str(assignment_id), "images": [(io.BytesIO(png_bytes()), "张伟.png")]},
        content_type="multipart/form-data",
    )
    assert batch.status_code == 202, batch.json
    analysis = api.post(
        "/api/v1/analyses",
        headers=bearer(secret),
        json={"text": "快递还没到，很失望", "image": base64.b64encode(png_bytes()).decode(), "filename": "截图.png"},
    )
    assert analysis.status_code == 202, analysis.json
    yield {
        "app": app,
        "secret": secret,
        "assignment_id": assignment_id,
        "batch_id": batch.json["id"],
        "analysis_id": analysis.json["id"],
    }
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", live["app"])


# schemathesis' own pytest plugin (``from_fixture(...).parametrize()``) does not run under pytest 9,
# so each operation is parametrized here and its cases drawn from schemathesis' strategy. The
# document's own route takes no input, so it has no invalid requests to make.
OPERATIONS = sorted((path, method.upper()) for path, item in PATHS.items() for method in item if method != "parameters")
GENERATED = [
    pytest.param(path, method, mode, id=f"{method} {path} {mode}")
    for path, method in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode == GenerationMode.NEGATIVE and path == "/openapi.json")
]


@pytest.mark.parametrize("path, method, mode", GENERATED)
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_generated_requests_get_documented_answers(api_schema, live, path, method, mode, data):
    """Generated requests, valid and invalid, never get a 5xx, an undocumented status, header or
    content type, or a body that breaks its schema."""
    case = data.draw(api_schema[path][method].as_strategy(generation_mode=mode))
    case.call_and_validate(headers=bearer(live["secret"]), checks=CHECKS)


def test_linked_calls_get_documented_answers(api_schema, live):
    """Stateful: sequences that follow the document's links (submit, then read or review what came
    back; batch, then its progress) get documented answers at every step."""
    headers = bearer(live["secret"])

    class Workflow(api_schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS, headers=headers)

    Workflow.run(
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=4,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )


def _validate(api_schema, live, path: str, method: str, checks=CHECKS, **case):
    """Send one given case and run the checks on its answer; returns the response."""
    return api_schema[path][method].Case(**case).call_and_validate(headers=bearer(live["secret"]), checks=checks)


def test_real_records_conform_to_the_document(api_schema, live):
    """Existing records (an analysis with predictions, a batch, an assignment with submissions) match their schemas."""
    found = _validate(
        api_schema, live, "/analyses/{analysis_id}", "GET", path_parameters={"analysis_id": live["analysis_id"]}
    )
    assert found.status_code == 200 and found.json()["predictions"]
    assert _validate(api_schema, live, "/analyses", "GET", query={"q": "失望"}).json()["total"] == 1
    batch = _validate(api_schema, live, "/batches/{batch_id}", "GET", path_parameters={"batch_id": live["batch_id"]})
    assert batch.status_code == 200
    assignment = _validate(
        api_schema,
        live,
        "/assignments/{assignment_id}",
        "GET",
        path_parameters={"assignment_id": live["assignment_id"]},
    )
    assert assignment.status_code == 200 and len(assignment.json()["submissions"]) == 1
    assert _validate(api_schema, live, "/assignments", "GET").json()["items"]


def test_review_and_predict_answers_conform_to_the_document(api_schema, live):
    """A 201 review, a 201 predict and a 404 review of a missing kind match the document."""
    review = _validate(
        api_schema,
        live,
        "/analyses/{analysis_id}/reviews",
        "POST",
        path_parameters={"analysis_id": live["analysis_id"]},
        body={"kind": "sentiment", "decision": "correct", "value": "neutral", "comment": "讽刺"},
        media_type="application/json",
    )
    assert review.status_code == 201 and review.json()["review"]["state"] == "corrected"
    missing = _validate(
        api_schema,
        live,
        "/analyses/{analysis_id}/reviews",
        "POST",
        path_parameters={"analysis_id": live["analysis_id"]},
        body={"kind": "grade", "decision": "accept"},
        media_type="application/json",
    )
    assert missing.status_code == 404
    predicted = _validate(api_schema, live, "/predict", "POST", body={"text": "很好"}, media_type="application/json")
    assert predicted.status_code == 201 and predicted.json()["status"] == "done"


def test_predict_503_conforms_to_the_document(api_schema, live, monkeypatch):
    """A model that cannot answer makes /predict's 503 (id, url, analysis_status) match the document."""

    def failed(self, text):
        raise ModelUnavailable("sentiment", ModelState.FAILED, "The sentiment model could not be loaded.")

    monkeypatch.setattr(ModelService, "sentiment", failed)
    documented_503 = [check for check in CHECKS if check is not not_a_server_error]
    response = _validate(
        api_schema, live, "/predict", "POST", documented_503, body={"text": "慢"}, media_type="application/json"
    )
    assert response.status_code == 503 and response.json()["error"]["analysis_status"] == "failed"


def test_missing_and_revoked_tokens_get_the_documented_401(api_schema):
    """Without a token, or with a wrong one, every operation but the document answers the documented 401."""
    for path, method in OPERATIONS:
        if path == "/openapi.json":
            continue
        operation = api_schema[path][method]
        values = {parameter.name: 1 for parameter in operation.path_parameters}
        for headers in ({}, bearer("prism_not-a-token")):
            case = operation.Case(path_parameters=values, headers=headers)
            response = case.call_and_validate(checks=CHECKS)
            assert response.status_code == 401, (method, path, response.status_code)


# --- The docs page ---------------------------------------------------------------------------------


def test_docs_page_lists_every_operation_and_links_the_document(app, client):
    """/docs/api is public, shows every documented method and path, and links the JSON document."""
    response = client.get("/docs/api")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'href="/api/v1/openapi.json"' in page
    with app.test_request_context("/api/v1/openapi.json"):
        documented = _documented_operations(document())
    for method, path in documented:
        assert re.search(rf'>{method.upper()}</span> <code class="api-path">{re.escape(PREFIX + path)}</code>', page)
    assert "Submit and wait for the result" in page and "Retry-After" in page


def test_docs_page_renders_in_chinese(client):
    """A Chinese reader gets the page in their locale (html lang zh-Hans) with every endpoint listed."""
    page = client.get("/docs/api", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).get_data(as_text=True)
    assert '<html lang="zh-Hans">' in page
    assert page.count('class="card api-op"') == len(OPERATIONS)


def test_docs_page_shows_this_servers_limits(tmp_path):
    """The page states the configured API and submission limits, the body limit and the /predict wait."""
    app = make_app(
        tmp_path,
        PRISM_RATELIMIT_API="7 per hour",
        PRISM_RATELIMIT_SUBMIT="3 per 2 minutes",
        MAX_CONTENT_LENGTH=5 * 1024 * 1024,
        PRISM_INFERENCE_TIMEOUT=12,
    )
    page = app.test_client().get("/docs/api").get_data(as_text=True)
    assert "API calls per user: 7 per hour" in page
    assert "3 per 2 minute" in page
    assert "3 per 2 minutes" in page  # the unit in the plural after a number above one
    assert "up to 5 MB" in page
    assert "waits up to 12 seconds" in page


def test_docs_page_says_when_rate_limits_are_off(tmp_path):
    """With rate limits disabled the page says so instead of quoting limits that do not apply."""
    page = make_app(tmp_path, PRISM_RATELIMIT_ENABLED=False).test_client().get("/docs/api").get_data(as_text=True)
    assert "Rate limits are off on this server." in page and "API calls per user" not in page


def test_account_page_and_footer_link_the_docs(app):
    """Where tokens are made, and in every page's footer, a link leads to the API docs."""
    alice = client_for(app, "alice")
    page = alice.get("/account/").get_data(as_text=True)
    assert page.count('href="/docs/api"') == 2  # the token section and the footer
    assert 'href="/docs/api"' in app.test_client().get("/login").get_data(as_text=True)
