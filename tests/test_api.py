"""JSON API v1: personal tokens, bearer authentication, predict, listing, and its error responses."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from datetime import timedelta

import pytest

from tests.conftest import add_analysis, audit_rows, csrf_token, make_token, make_user, png_bytes, user_id
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


def test_predict_multipart_creates_record(app, client, token):
    """Multipart image + text + scenario → 201 with caption, sentiment and id; the row belongs to the token's user."""
    response = client.post(
        "/api/v1/predict",
        headers=bearer(token),
        data={"scenario": "education", "text": "I love fractions now", "image": (io.BytesIO(png_bytes()), "hw.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    body = response.json
    assert body["caption"]["text"] == "a 64x48 picture, mostly red"
    assert body["caption"]["model"] == "prism/fake-caption"
    assert body["sentiment"]["label"] == "positive"
    assert body["sentiment"]["score"] == pytest.approx(0.8)
    assert set(body["sentiment"]["scores"]) == {"negative", "neutral", "positive"}
    assert body["scenario"] == "education" and body["owner"] == "alice"
    [stored] = rows_for(app, "alice")
    assert stored.id == body["id"] and stored.image_filename == "hw.png" and stored.scenario == "education"
    assert body["url"].endswith(f"/api/v1/analyses/{stored.id}")


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


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"], ids=["plain", "data-url"])
def test_predict_json_with_base64_image(app, client, token, prefix):
    """A JSON body with a base64 image (optionally a data: URL) is analysed."""
    encoded = prefix + base64.b64encode(png_bytes(size=(8, 8), color=(0, 0, 250))).decode()
    response = client.post(
        "/api/v1/predict", headers=bearer(token), json={"scenario": "medical", "image": encoded, "filename": "scan.png"}
    )
    assert response.status_code == 201
    assert response.json["caption"]["text"] == "a 8x8 picture, mostly blue"
    assert response.json["sentiment"] is None
    [stored] = rows_for(app, "alice")
    assert stored.scenario == "medical" and stored.image_filename == "scan.png"


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"image": "not base64!!"}, "'image' is not valid base64."),
        ({"image": 12345}, "'image' must be a base64 string."),
        ({"text": ["a list"]}, "'text' must be a string."),
        ({"text": "hi", "scenario": "legal"}, "'scenario' must be one of service, medical, education."),
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


def test_predict_model_unavailable_is_503_with_retry_after(app, client, token, monkeypatch):
    """A model that is not ready gives 503 JSON with Retry-After, the model and its state; nothing is stored."""

    def not_ready(self, text):
        raise ModelUnavailable(
            "sentiment", ModelState.DOWNLOADING, "The sentiment model is not ready yet.", retry_after=7
        )

    monkeypatch.setattr(ModelService, "sentiment", not_ready)
    response = client.post("/api/v1/predict", headers=bearer(token), json={"text": "hello"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.json["error"] == {
        "status": 503,
        "message": "The sentiment model is not ready yet.",
        "model": "sentiment",
        "state": "downloading",
        "reason": "not_ready",
    }
    assert rows_for(app, "alice") == []


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
