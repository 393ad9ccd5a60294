"""JSON API v1: personal tokens, bearer authentication, predict, listing, and its error responses."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import time
from datetime import timedelta

import pytest

from tests.conftest import (
    add_analysis,
    audit_rows,
    csrf_token,
    make_token,
    make_user,
    png_bytes,
    reply_draft,
    user_id,
)
from webapp.extensions import db
from webapp.inference import ModelService, ModelState, ModelUnavailable
from webapp.models import Analysis, ApiToken

_SECRET = re.compile(r'<code class="secret" id="new-token">([^<]+)</code>')


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def rows_for(app, username: str) -> list[Analysis]:
    with app.app_context():
        found = db.session.scalars(
            db.select(Analysis).where(Analysis.user_id == user_id(app, username)).order_by(Analysis.id)
        ).all()
        db.session.expunge_all()
        return found


@pytest.fixture
def token(app):
    make_user(app, "alice")
    return make_token(app, "alice")


def test_token_created_on_account_page_is_shown_once_and_stored_hashed(app, alice):
    """Creating a token on /account/ shows the secret once; the DB keeps only its SHA-256 and a 10-char hint."""
    response = alice.post("/account/", data={"name": "grading script", "csrf_token": csrf_token(alice, "/account/")})
    assert response.status_code == 200
    secret = _SECRET.search(response.get_data(as_text=True)).group(1)
    assert secret.startswith("prism_") and len(secret) > 40
    with app.app_context():
        [stored] = db.session.scalars(db.select(ApiToken)).all()
        assert stored.name == "grading script"
        assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert stored.hint == secret[:10]
        assert secret not in (stored.token_hash, stored.hint)
    later = alice.get("/account/").get_data(as_text=True)
    assert secret not in later and secret[:10] in later
    assert [r["details"]["name"] for r in audit_rows(app, "token.create")] == ["grading script"]
    assert secret not in repr(audit_rows(app))
    assert alice.get("/api/v1/analyses", headers=bearer(secret)).status_code == 200


def test_missing_token_is_401_with_challenge(client):
    """No Authorization header: 401 JSON with a WWW-Authenticate Bearer challenge."""
    response = client.get("/api/v1/analyses")
    assert response.status_code == 401
    assert response.is_json and response.json["error"]["status"] == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Bearer prism_notarealtoken", "Bearer ", "Basic YWxpY2U6cGFzc3dvcmQ=", "prism_notarealtoken"]
)
def test_bad_token_is_401_and_audited(app, client, token, header):
    """A wrong token or scheme is 401 JSON with a challenge; a wrong bearer token is audited by its hint only."""
    response = client.get("/api/v1/analyses", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.is_json
    assert "Bearer" in response.headers["WWW-Authenticate"]
    if header == "Bearer prism_notarealtoken":
        [row] = audit_rows(app, "api.auth_failed")
        assert row["details"] == {"hint": "prism_nota"}


def test_revoked_token_is_401(app, alice):
    """A token revoked on the account page stops working."""
    secret = make_token(app, "alice")
    assert alice.get("/api/v1/analyses", headers=bearer(secret)).status_code == 200
    with app.app_context():
        token_id = db.session.scalar(db.select(ApiToken.id))
    response = alice.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf_token(alice, "/account/")})
    assert response.status_code == 302
    assert alice.get("/api/v1/analyses", headers=bearer(secret)).status_code == 401
    assert [r["target_id"] for r in audit_rows(app, "token.revoke")] == [str(token_id)]


def test_cannot_revoke_another_users_token(app, alice):
    """Revoking someone else's token id is 404 and the token keeps working."""
    make_user(app, "bob")
    bobs = make_token(app, "bob")
    with app.app_context():
        token_id = db.session.scalar(db.select(ApiToken.id))
    response = alice.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf_token(alice, "/account/")})
    assert response.status_code == 404
    assert alice.get("/api/v1/analyses", headers=bearer(bobs)).status_code == 200


def test_token_of_disabled_user_is_401(app, token):
    """A token stops working when its user is disabled."""
    from webapp.models import User

    with app.app_context():
        db.session.execute(db.update(User).values(active=False))
        db.session.commit()
    assert app.test_client().get("/api/v1/analyses", headers=bearer(token)).status_code == 401


def test_session_cookie_does_not_authenticate_api(alice):
    """A signed-in browser session without a bearer token is 401 on the API."""
    assert alice.get("/api/v1/analyses").status_code == 401
    assert alice.post("/api/v1/predict", data={"text": "hello"}).status_code == 401


def token_for(app, username: str, role: str = "user") -> str:
    """A new user with ``role`` and an API token of theirs."""
    make_user(app, username, role=role)
    return make_token(app, username)


def by_kind(body: dict) -> dict:
    """The predictions of an analysis dict, keyed by kind."""
    return {prediction["kind"]: prediction for prediction in body["predictions"]}


def test_predict_multipart_creates_record(app, client):
    """Multipart image + text + scenario -> 201 with the done analysis (ocr, caption, sentiment); the row is
    the caller's."""
    token = token_for(app, "tess", role="teacher")
    response = client.post(
        "/api/v1/predict",
        headers=bearer(token),
        data={"scenario": "education", "text": "I love fractions now", "image": (io.BytesIO(png_bytes()), "hw.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    body = response.json
    assert body["status"] == "done" and body["error"] is None
    assert body["progress"] == {"done": 5, "total": 5}  # ocr, caption, sentiment, fusion, agreement
    assert body["values"] == {
        "ocr": "TEXT 64x48 red",
        "caption": "a 64x48 picture, mostly red",
        "sentiment": "positive",
        "fusion": "positive",
        "agreement": "mismatch",
    }
    predictions = by_kind(body)
    assert [p["kind"] for p in body["predictions"]] == ["ocr", "caption", "sentiment", "fusion", "agreement"]
    assert predictions["ocr"]["model"] == "prism/fake-ocr"
    assert predictions["caption"]["model"] == "prism/fake-caption"
    assert predictions["caption"]["output"] == {"text": "a 64x48 picture, mostly red"}
    assert predictions["sentiment"]["model"] == "prism/fake-sentiment"
    assert predictions["sentiment"]["confidence"] == pytest.approx(0.8)
    assert set(predictions["sentiment"]["output"]["scores"]) == {"negative", "neutral", "positive"}
    assert body["scenario"] == "education" and body["owner"] == "tess"
    assert body["image"]["filename"] == "hw.png" and (body["image"]["width"], body["image"]["height"]) == (64, 48)
    [stored] = rows_for(app, "tess")
    assert stored.id == body["id"] and stored.image_filename == "hw.png" and stored.scenario == "education"
    assert stored.status == "done"
    assert body["url"].endswith(f"/api/v1/analyses/{stored.id}")
    assert body["history_url"].endswith(f"/history/{stored.id}")


def test_predict_needs_no_csrf_token(app, client, token):
    """A bearer-authenticated POST without any CSRF token succeeds (the API is CSRF-exempt by design)."""
    response = client.post("/api/v1/predict", headers=bearer(token), data={"text": "fine"})
    assert response.status_code == 201
    assert audit_rows(app, "security.csrf_failed") == []


def test_predict_defaults_to_service_scenario(app, client, token):
    """Without a scenario the record is filed under 'service'."""
    response = client.post("/api/v1/predict", headers=bearer(token), json={"text": "hello"})
    assert response.status_code == 201
    assert response.json["scenario"] == "service"
    assert [stored.scenario for stored in rows_for(app, "alice")] == ["service"]


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"], ids=["plain", "data-url"])
def test_predict_json_with_base64_image(app, client, prefix):
    """A JSON body with a base64 image (optionally a data: URL) is analysed; a medical note gets no sentiment."""
    token = token_for(app, "carol", role="clinician")
    encoded = prefix + base64.b64encode(png_bytes(size=(8, 8), color=(0, 0, 250))).decode()
    response = client.post(
        "/api/v1/predict",
        headers=bearer(token),
        json={"scenario": "medical", "image": encoded, "filename": "scan.png", "text": "great, less pain"},
    )
    assert response.status_code == 201
    assert response.json["values"] == {"caption": "a 8x8 picture, mostly blue"}
    assert [p["kind"] for p in response.json["predictions"]] == ["caption"]
    [stored] = rows_for(app, "carol")
    assert stored.scenario == "medical" and stored.image_filename == "scan.png"
    assert stored.text == "great, less pain" and stored.tasks == ["caption"]


def test_predict_in_a_scenario_the_role_may_not_use_is_403(app, client, token):
    """A plain user predicting in 'medical' or 'education' gets 403 JSON and nothing is stored."""
    image = base64.b64encode(png_bytes()).decode()
    for scenario in ("medical", "education"):
        response = client.post(
            "/api/v1/predict", headers=bearer(token), json={"scenario": scenario, "image": image, "text": "hi"}
        )
        assert response.status_code == 403
        assert response.json["error"]["message"] == f"Your role may not submit to the {scenario} scenario."
    assert rows_for(app, "alice") == []


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"image": "not base64!!"}, "'image' is not valid base64."),
        ({"image": 12345}, "'image' must be a base64 string."),
        ({"text": ["a list"]}, "'text' must be a string."),
        ({"text": "hi", "scenario": "legal"}, "Unknown scenario 'legal'."),
        ({}, "Add an image, a text, or both."),
        ({"text": "   "}, "Add an image, a text, or both."),
        ({"image": base64.b64encode(b"GIF89a<script>alert(1)</script>").decode()}, "not a supported image"),
        ({"image": base64.b64encode(b"plain text").decode()}, "not a supported image"),
        ({"image": base64.b64encode(png_bytes()).decode(), "filename": ["x"]}, "'filename' must be a string."),
    ],
    ids=["bad-b64", "image-not-str", "text-not-str", "bad-scenario", "empty", "blank", "fake-gif", "fake", "filename"],
)
def test_predict_json_rejects_bad_input(app, client, token, payload, message):
    """Malformed JSON submissions get 400 JSON naming the problem, and store nothing."""
    response = client.post("/api/v1/predict", headers=bearer(token), json=payload)
    assert response.status_code == 400
    assert response.is_json
    assert message in response.json["error"]["message"]
    assert rows_for(app, "alice") == []


def test_predict_rejects_non_object_json(client, token):
    """A JSON array body is 400."""
    response = client.post("/api/v1/predict", headers=bearer(token), json=["text"])
    assert response.status_code == 400
    assert response.json["error"]["message"] == "The body must be a JSON object."


def test_predict_rejects_malformed_json(client, token):
    """A body declared as JSON that does not parse is 400 JSON, not a 500."""
    response = client.post("/api/v1/predict", headers=bearer(token), data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"]["message"] == "The body must be a JSON object."


def test_predict_multipart_rejects_invalid_scenario_and_empty(app, client, token):
    """Multipart with an unknown scenario, or with neither input, is 400 JSON."""
    bad = client.post("/api/v1/predict", headers=bearer(token), data={"scenario": "legal", "text": "x"})
    empty = client.post("/api/v1/predict", headers=bearer(token), data={"scenario": "service"})
    assert bad.status_code == empty.status_code == 400
    assert bad.is_json and empty.is_json
    assert rows_for(app, "alice") == []


def test_predict_fake_image_is_400_and_audited(app, client, token):
    """A fake image upload is 400 JSON, stores nothing and writes upload.rejected for the token's user."""
    response = client.post(
        "/api/v1/predict",
        headers=bearer(token),
        data={"image": (io.BytesIO(b"%PDF-1.4 not an image"), "doc.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert "not a supported image" in response.json["error"]["message"]
    assert rows_for(app, "alice") == []
    [row] = audit_rows(app, "upload.rejected")
    assert row["actor_name"] == "alice" and row["details"]["via"] == "api"


def test_predict_model_not_ready_defers_and_answers_503_with_retry_after(app, client, token, monkeypatch):
    """A loading model defers the job: 503 + Retry-After, id and url at the deadline; the record stays pending."""
    app.config["PRISM_INFERENCE_TIMEOUT"] = 0.5

    def not_ready(self, text):
        raise ModelUnavailable(
            "sentiment", ModelState.DOWNLOADING, "The sentiment model is not ready yet.", retry_after=7
        )

    monkeypatch.setattr(ModelService, "sentiment", not_ready)
    started = time.monotonic()
    response = client.post("/api/v1/predict", headers=bearer(token), json={"text": "hello"})
    waited = time.monotonic() - started
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert 0.5 <= waited < 5
    [stored] = rows_for(app, "alice")
    error = response.json["error"]
    assert error["status"] == 503 and error["id"] == stored.id and error["analysis_status"] == "pending"
    assert error["url"].endswith(f"/api/v1/analyses/{stored.id}")
    assert "The sentiment model is not ready yet." in error["message"]
    assert stored.status == "pending" and stored.text == "hello"
    assert stored.error_info == {
        "kind": "sentiment",
        "state": "downloading",
        "reason": "not_ready",
        "message": "The sentiment model is not ready yet.",
    }
    later = client.get(f"/api/v1/analyses/{stored.id}", headers=bearer(token))
    assert later.status_code == 200 and later.json["status"] == "pending" and later.json["predictions"] == []


def test_predict_model_failed_to_load_is_503_with_the_reason(app, client, token, monkeypatch):
    """A model that failed to load fails the job at once: 503 JSON with the reason; the record is failed, input kept."""

    def failed(self, text):
        raise ModelUnavailable(
            "sentiment", ModelState.FAILED, "The sentiment model could not be loaded: OSError: no weights"
        )

    monkeypatch.setattr(ModelService, "sentiment", failed)
    started = time.monotonic()
    response = client.post("/api/v1/predict", headers=bearer(token), json={"text": "hello"})
    assert time.monotonic() - started < 5  # a failure is answered at once, not at the deadline
    assert response.status_code == 503
    [stored] = rows_for(app, "alice")
    error = response.json["error"]
    # An API user reads one short sentence and a stable code; the diagnosis is for administrators.
    assert (
        error["message"] == "The sentiment model is not available on this server yet; an administrator has been told."
    )
    assert error["code"] == "model_unavailable" and "Retry-After" not in response.headers
    assert error["status"] == 503 and error["analysis_status"] == "failed"
    assert error["id"] == stored.id and error["url"].endswith(f"/api/v1/analyses/{stored.id}")
    assert stored.status == "failed" and stored.text == "hello"
    assert stored.error_info["reason"] == "failed"


@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_oversized_request_is_413_json(app, client, token, kind):
    """A body over MAX_CONTENT_LENGTH is refused with 413 JSON and nothing is stored."""
    app.config["MAX_CONTENT_LENGTH"] = 1024
    big = png_bytes(size=(200, 200), color=(1, 2, 3)) + b"\0" * 4096
    if kind == "multipart":
        response = client.post(
            "/api/v1/predict",
            headers=bearer(token),
            data={"image": (io.BytesIO(big), "big.png")},
            content_type="multipart/form-data",
        )
    else:
        response = client.post("/api/v1/predict", headers=bearer(token), json={"image": base64.b64encode(big).decode()})
    assert response.status_code == 413
    assert response.is_json and response.json["error"]["status"] == 413
    assert rows_for(app, "alice") == []


def test_list_returns_only_callers_records_with_pagination(app, client, token):
    """GET /api/v1/analyses lists only the caller's records, newest first, with page fields."""
    alice_id = user_id(app, "alice")
    bob_id = make_user(app, "bob")
    mine = [add_analysis(app, alice_id, text=f"a{n}") for n in range(3)]
    add_analysis(app, bob_id, text="bob's")
    response = client.get("/api/v1/analyses?per_page=2", headers=bearer(token))
    assert response.status_code == 200
    body = response.json
    assert [item["id"] for item in body["items"]] == [mine[2], mine[1]]
    assert (body["page"], body["per_page"], body["pages"], body["total"]) == (1, 2, 2, 3)
    second = client.get("/api/v1/analyses?per_page=2&page=2", headers=bearer(token)).json
    assert [item["id"] for item in second["items"]] == [mine[0]]
    assert all(item["owner"] == "alice" for item in body["items"] + second["items"])


def test_get_own_record(app, client, token):
    """GET /api/v1/analyses/<id> returns the caller's record."""
    analysis_id = add_analysis(app, user_id(app, "alice"), text="mine")
    response = client.get(f"/api/v1/analyses/{analysis_id}", headers=bearer(token))
    assert response.status_code == 200
    assert response.json["id"] == analysis_id and response.json["text"] == "mine"


def test_get_other_users_record_is_404(app, client, token):
    """Another user's record id is 404 JSON, exactly like a missing one."""
    bobs = add_analysis(app, make_user(app, "bob"), text="bob's")
    other = client.get(f"/api/v1/analyses/{bobs}", headers=bearer(token))
    missing = client.get("/api/v1/analyses/999999", headers=bearer(token))
    assert other.status_code == missing.status_code == 404
    assert other.json == missing.json


def test_admin_token_does_not_see_other_users_records(app, client):
    """The API is not an audit tool: even an admin's token sees only its own records."""
    make_user(app, "root", role="admin")
    secret = make_token(app, "root")
    bobs = add_analysis(app, make_user(app, "bob"), text="bob's")
    assert client.get(f"/api/v1/analyses/{bobs}", headers=bearer(secret)).status_code == 404
    assert client.get("/api/v1/analyses", headers=bearer(secret)).json["total"] == 0


def test_unknown_api_path_is_json_404(client, token):
    """Unknown API paths answer JSON, not an HTML page."""
    response = client.get("/api/v1/nothing", headers=bearer(token))
    assert response.status_code == 404
    assert response.is_json


def test_token_use_updates_last_used(app, client, token):
    """A successful call stamps the token's last_used_at."""
    client.get("/api/v1/analyses", headers=bearer(token))
    with app.app_context():
        assert db.session.scalar(db.select(ApiToken.last_used_at)) is not None


def test_token_last_used_is_written_at_most_once_a_minute(app, client, token):
    """Back-to-back calls stamp last_used_at once; a call a minute later stamps it again."""
    client.get("/api/v1/analyses", headers=bearer(token))
    with app.app_context():
        first = db.session.scalar(db.select(ApiToken.last_used_at))
    client.get("/api/v1/analyses", headers=bearer(token))
    with app.app_context():
        assert db.session.scalar(db.select(ApiToken.last_used_at)) == first
        stored = db.session.scalar(db.select(ApiToken))
        stored.last_used_at = first - timedelta(minutes=2)
        db.session.commit()
    client.get("/api/v1/analyses", headers=bearer(token))
    with app.app_context():
        assert db.session.scalar(db.select(ApiToken.last_used_at)) > first - timedelta(minutes=2)


# --- The asynchronous contract: analyses, reviews, batches ---------------------------------------


def _create(client, token, **data):
    """POST /api/v1/analyses as multipart (``image`` given as bytes); returns the response."""
    if "image" in data:
        data["image"] = (io.BytesIO(data["image"]), data.pop("filename", "shot.png"))
    return client.post("/api/v1/analyses", headers=bearer(token), data=data, content_type="multipart/form-data")


def _review(client, token, analysis_id, **payload):
    return client.post(f"/api/v1/analyses/{analysis_id}/reviews", headers=bearer(token), json=payload)


def test_create_analysis_is_202_with_id_status_url_and_location(app, client, token):
    """POST /api/v1/analyses answers 202 with id, status, progress and url, and a Location header to poll."""
    response = _create(client, token, text="great, thanks", image=png_bytes())
    assert response.status_code == 202
    body = response.json
    [stored] = rows_for(app, "alice")
    assert body["id"] == stored.id
    assert body["status"] == "done"  # tests run jobs inside the request (PRISM_JOBS_IMMEDIATE)
    # ocr, caption, sentiment, category, reply, fusion, agreement
    assert body["progress"] == {"done": 7, "total": 7} and body["error"] is None
    assert body["url"].endswith(f"/api/v1/analyses/{stored.id}")
    assert response.headers["Location"] == body["url"]


def test_create_analysis_with_a_real_queue_is_pending_until_a_worker_runs_it(app, client, token):
    """Without immediate jobs the 202 says pending and the job waits in the queue; once run, GET shows it done."""
    app.config["PRISM_JOBS_IMMEDIATE"] = False  # before the queue is built: a SqliteHuey in PRISM_JOBS_DB
    response = _create(client, token, text="great, thanks")
    assert response.status_code == 202
    # a text gets sentiment, category and reply
    assert response.json["status"] == "pending" and response.json["progress"] == {"done": 0, "total": 3}
    analysis_id = response.json["id"]
    polled = client.get(response.headers["Location"], headers=bearer(token))
    assert polled.json["status"] == "pending" and polled.json["predictions"] == []
    queue = app.extensions["prism_jobs"]
    with app.app_context():
        assert queue.queued_ids() == {analysis_id}
        huey = queue.huey
        huey.execute(huey.dequeue())  # what `manage.py worker` does
    done = client.get(response.headers["Location"], headers=bearer(token)).json
    assert done["status"] == "done" and done["values"] == {
        "sentiment": "positive",
        "category": "billing",
        "reply": reply_draft(app, "billing", "positive"),
    }


def test_get_analysis_shows_predictions_with_model_confidence_and_review(app, client, token):
    """GET /api/v1/analyses/<id> is done with each prediction's kind, model, revision, output, confidence, review."""
    analysis_id = _create(client, token, text="my order is broken", image=png_bytes()).json["id"]
    response = client.get(f"/api/v1/analyses/{analysis_id}", headers=bearer(token))
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "done" and body["progress"] == {"done": 7, "total": 7}
    assert body["history_url"].endswith(f"/history/{analysis_id}")
    ocr, caption, sentiment, category, reply, _fusion, _agreement = body["predictions"]
    assert ocr["kind"] == "ocr" and ocr["model"] == "prism/fake-ocr" and ocr["revision"] == "1"
    assert ocr["output"]["text"] == "TEXT 64x48 red" and ocr["confidence"] == pytest.approx(0.9)
    assert caption["kind"] == "caption" and caption["model"] == "prism/fake-caption" and caption["revision"] == "1"
    assert caption["output"] == {"text": "a 64x48 picture, mostly red"}
    assert caption["confidence"] is None and caption["uncertain"] is False
    assert sentiment["kind"] == "sentiment" and sentiment["model"] == "prism/fake-sentiment"
    assert sentiment["revision"] == "1"
    assert sentiment["output"]["label"] == "negative"
    assert sentiment["output"]["scores"] == {"negative": 0.8, "neutral": 0.15, "positive": 0.05}
    assert sentiment["confidence"] == pytest.approx(0.8) and sentiment["uncertain"] is False
    assert category["kind"] == "category" and category["model"] == "prism/fake-embedding"
    assert category["output"]["label"] == "technical"
    assert reply["kind"] == "reply" and reply["model"] == "prism/reply-templates"
    assert (reply["output"]["category"], reply["output"]["sentiment"]) == ("technical", "negative")
    for prediction in (ocr, caption, sentiment, category, reply):
        assert prediction["review"] == {
            "state": "unreviewed",
            "value": None,
            "reviewer": None,
            "at": None,
            "comment": None,
        }
        assert prediction["human_confirmed"] is False
    assert body["values"] == {
        "ocr": "TEXT 64x48 red",
        "caption": "a 64x48 picture, mostly red",
        "sentiment": "negative",
        "category": "technical",
        "reply": reply_draft(app, "technical", "negative"),
        "fusion": "negative",
        "agreement": "mismatch",
    }


@pytest.mark.parametrize(
    "kind, decision, value, counts, state",
    [
        ("sentiment", "accept", None, "positive", "accepted"),
        ("sentiment", "correct", "negative", "negative", "corrected"),
        ("sentiment", "reject", None, None, "rejected"),
        ("caption", "correct", "a red square", "a red square", "corrected"),
    ],
    ids=["accept", "correct", "reject", "correct-caption"],
)
def test_review_is_201_and_the_human_value_counts(app, client, token, kind, decision, value, counts, state):
    """POST .../reviews records the decision (201, the prediction); GET then shows it in `values` and `review`."""
    analysis_id = _create(client, token, text="great, thanks", image=png_bytes()).json["id"]
    response = _review(client, token, analysis_id, kind=kind, decision=decision, value=value, comment="checked")
    assert response.status_code == 201
    assert response.json["kind"] == kind and response.json["review"]["state"] == state
    body = client.get(f"/api/v1/analyses/{analysis_id}", headers=bearer(token)).json
    assert body["values"][kind] == counts
    prediction = by_kind(body)[kind]
    assert prediction["value"] == counts
    assert prediction["human_confirmed"] is (state in ("accepted", "corrected"))
    review = prediction["review"]
    assert review["state"] == state and review["reviewer"] == "alice" and review["comment"] == "checked"
    assert review["value"] == (value if decision == "correct" else None)
    assert review["at"] and review["at"].endswith("Z")
    other = "sentiment" if kind == "caption" else "caption"
    assert by_kind(body)[other]["review"]["state"] == "unreviewed"
    [row] = audit_rows(app, "review.record")
    assert row["actor_name"] == "alice" and row["details"]["decision"] == decision


def test_review_with_invalid_sentiment_label_is_400(app, client, token):
    """Correcting a sentiment to a label that does not exist is 400 JSON and changes nothing."""
    analysis_id = _create(client, token, text="great, thanks").json["id"]
    response = _review(client, token, analysis_id, kind="sentiment", decision="correct", value="furious")
    assert response.status_code == 400
    assert response.json["error"]["message"] == "A corrected sentiment is one of: negative, neutral, positive."
    body = client.get(f"/api/v1/analyses/{analysis_id}", headers=bearer(token)).json
    assert body["values"] == {
        "sentiment": "positive",
        "category": "billing",
        "reply": reply_draft(app, "billing", "positive"),
    }
    assert by_kind(body)["sentiment"]["review"]["state"] == "unreviewed"


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"kind": "sentiment", "decision": "approve"}, "'decision' must be one of: accept, correct, reject, reopen."),
        ({"kind": "sentiment", "decision": "accept", "comment": 5}, "'comment' must be a string."),
        (["sentiment", "accept"], "The body must be a JSON object with 'kind' and 'decision'."),
    ],
    ids=["decision", "comment", "not-object"],
)
def test_review_with_bad_body_is_400(app, client, token, payload, message):
    """A review with an unknown decision, a non-string comment or a non-object body is 400 JSON."""
    analysis_id = _create(client, token, text="great, thanks").json["id"]
    response = client.post(f"/api/v1/analyses/{analysis_id}/reviews", headers=bearer(token), json=payload)
    assert response.status_code == 400
    assert response.json["error"]["message"] == message
    assert audit_rows(app, "review.record") == []


def test_review_of_unknown_kind_is_404(app, client, token):
    """Reviewing a kind the analysis has no prediction of (a made-up kind, or ocr or caption on a text) is 404."""
    analysis_id = _create(client, token, text="great, thanks").json["id"]
    for kind in ("mood", "ocr", "caption"):
        response = _review(client, token, analysis_id, kind=kind, decision="accept")
        assert response.status_code == 404
        assert "(it has: sentiment, category, reply)" in response.json["error"]["message"]
    assert audit_rows(app, "review.record") == []


def test_review_of_other_users_analysis_is_404(app, client, token):
    """Another user's analysis id is 404 on the review endpoint, exactly like a missing one; nothing is recorded."""
    bobs = add_analysis(app, make_user(app, "bob"), sentiment="positive")
    other = _review(client, token, bobs, kind="sentiment", decision="reject")
    missing = _review(client, token, 999999, kind="sentiment", decision="reject")
    assert other.status_code == missing.status_code == 404
    assert other.json == missing.json
    assert audit_rows(app, "review.record") == []


def test_plain_user_cannot_review_a_clinicians_analysis(app, client, token):
    """A clinician's medical analysis is invisible to a plain user: reviewing it is 404."""
    carol = token_for(app, "carol", role="clinician")
    response = _create(client, carol, scenario="medical", image=png_bytes())
    assert response.status_code == 202
    analysis_id = response.json["id"]
    assert _review(client, token, analysis_id, kind="caption", decision="reject").status_code == 404
    body = client.get(f"/api/v1/analyses/{analysis_id}", headers=bearer(carol)).json
    assert body["predictions"][0]["review"]["state"] == "unreviewed"


def test_review_in_a_scenario_the_role_no_longer_allows_is_403(app, client, token):
    """A plain user owning an education record (role changed since) may not review it: 403, nothing recorded."""
    analysis_id = add_analysis(app, user_id(app, "alice"), scenario="education", caption="x")
    response = _review(client, token, analysis_id, kind="caption", decision="accept")
    assert response.status_code == 403
    assert response.json["error"]["message"] == "Your role may not review in the education scenario."
    body = client.get(f"/api/v1/analyses/{analysis_id}", headers=bearer(token)).json
    assert body["predictions"][0]["review"]["state"] == "unreviewed"
    assert audit_rows(app, "review.record") == []


@pytest.mark.parametrize("endpoint", ["/api/v1/analyses", "/api/v1/batches"])
def test_plain_user_submitting_in_medical_is_403(app, client, token, endpoint):
    """A plain user may not submit to 'medical' (one analysis or a batch): 403 JSON, nothing stored."""
    field = "image" if endpoint.endswith("analyses") else "images"
    response = client.post(
        endpoint,
        headers=bearer(token),
        data={"scenario": "medical", field: (io.BytesIO(png_bytes()), "scan.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 403
    assert response.json["error"]["message"] == "Your role may not submit to the medical scenario."
    assert rows_for(app, "alice") == []


def test_create_analysis_json_with_base64_image(app, client, token):
    """A JSON body with a base64 image still works on /api/v1/analyses."""
    encoded = base64.b64encode(png_bytes(size=(10, 20), color=(0, 200, 0))).decode()
    response = client.post(
        "/api/v1/analyses", headers=bearer(token), json={"image": encoded, "filename": "g.png", "text": "thanks"}
    )
    assert response.status_code == 202
    body = client.get(response.headers["Location"], headers=bearer(token)).json
    assert body["values"] == {
        "ocr": "TEXT 10x20 green",
        "caption": "a 10x20 picture, mostly green",
        "sentiment": "positive",
        "category": "billing",
        "reply": reply_draft(app, "billing", "positive"),
        "fusion": "positive",
        "agreement": "mismatch",  # "thanks" shares no word with a green picture's caption
    }
    assert body["image"]["filename"] == "g.png" and body["image"]["format"] == "PNG"


def test_batch_of_three_with_one_broken_image(app, client, token):
    """POST /api/v1/batches with three files (one not an image) is 202; GET shows total 3, done 2, failed 1."""
    files = [
        (io.BytesIO(png_bytes(color=(250, 0, 0))), "a.png"),
        (io.BytesIO(b"%PDF-1.4 not an image"), "broken.png"),
        (io.BytesIO(png_bytes(color=(0, 0, 250))), "c.png"),
    ]
    response = client.post(
        "/api/v1/batches", headers=bearer(token), data={"images": files}, content_type="multipart/form-data"
    )
    assert response.status_code == 202
    batch_id = response.json["id"]
    assert response.headers["Location"] == response.json["url"]
    assert response.json["url"].endswith(f"/api/v1/batches/{batch_id}")
    summary = client.get(f"/api/v1/batches/{batch_id}", headers=bearer(token))
    assert summary.status_code == 200
    body = summary.json
    assert (body["total"], body["done"], body["failed"]) == (3, 2, 1)
    assert body["finished"] is True and body["scenario"] == "service"
    stored = rows_for(app, "alice")
    assert [item["id"] for item in body["items"]] == [row.id for row in stored]
    assert [item["status"] for item in body["items"]] == ["done", "failed", "done"]
    assert [row.image_filename for row in stored] == ["a.png", "broken.png", "c.png"]
    assert all(row.batch_id == batch_id for row in stored)
    assert "not a supported image" in stored[1].error
    first = client.get(f"/api/v1/analyses/{stored[0].id}", headers=bearer(token)).json
    assert first["batch_id"] == batch_id and first["values"] == {
        "ocr": "TEXT 64x48 red",
        "caption": "a 64x48 picture, mostly red",
        "category": "billing",
        "reply": reply_draft(app, "billing", None),
    }


def test_batch_errors(app, client, token):
    """A batch without files is 400; another user's batch id is 404 like a missing one."""
    empty = client.post(
        "/api/v1/batches", headers=bearer(token), data={"scenario": "service"}, content_type="multipart/form-data"
    )
    assert empty.status_code == 400
    bob = token_for(app, "bob")
    bobs = client.post(
        "/api/v1/batches",
        headers=bearer(bob),
        data={"images": [(io.BytesIO(png_bytes()), "b.png")]},
        content_type="multipart/form-data",
    ).json["id"]
    other = client.get(f"/api/v1/batches/{bobs}", headers=bearer(token))
    missing = client.get("/api/v1/batches/999999", headers=bearer(token))
    assert other.status_code == missing.status_code == 404
    assert other.json == missing.json
