"""Cross-cutting protections: CSRF on every form route, and security headers on every kind of response."""

from __future__ import annotations

from werkzeug.routing import IntegerConverter

from tests.conftest import (
    add_analysis,
    audit_rows,
    client_for,
    csrf_token,
    make_token,
    make_user,
    png_bytes,
    submit,
    user_id,
)
from webapp import ratelimit
from webapp.extensions import db
from webapp.models import Analysis, ApiToken, Prediction, Review, User


def _post_routes(app) -> list:
    """Every rule accepting POST, except the bearer-token API blueprint (CSRF-exempt by design)."""
    return [
        rule for rule in app.url_map.iter_rules() if "POST" in rule.methods and not rule.endpoint.startswith("api.")
    ]


def _state(app) -> dict:
    with app.app_context():
        return {
            "users": db.session.execute(db.select(User.username, User.role, User.session_token)).all(),
            "analyses": db.session.execute(db.select(Analysis.id, Analysis.status, Analysis.attempts)).all(),
            "predictions": db.session.execute(db.select(Prediction.id, Prediction.review_state)).all(),
            "reviews": db.session.scalars(db.select(Review.id)).all(),
            "tokens": db.session.execute(db.select(ApiToken.id, ApiToken.revoked_at)).all(),
        }


def test_every_form_post_route_rejects_missing_csrf(app, alice):
    """Every POST route outside /api/ answers 400 without a CSRF token, changes nothing, and audits the failure."""
    make_token(app, "alice")
    with app.app_context():
        token_id = db.session.scalar(db.select(ApiToken.id))
    # A failed record with a caption: a retry, a review or a delete would each visibly change it.
    analysis_id = add_analysis(app, user_id(app, "alice"), text="mine", caption="a cat", status="failed", error="x")
    with app.app_context():
        prediction_id = db.session.scalar(db.select(Prediction.id).where(Prediction.analysis_id == analysis_id))
    ids = {
        "analysis_id": analysis_id,
        "prediction_id": prediction_id,
        "token_id": token_id,
        "user_id": make_user(app, "bob"),
        "rubric_id": 1,
        "assignment_id": 1,
        "submission_id": 1,
        "category_id": 1,  # the first seeded inquiry category
        "annotation_id": 1,
    }
    routes = _post_routes(app)
    endpoints = {rule.endpoint for rule in routes}
    # A guard against the enumeration silently finding nothing, and for the routes of the review engine.
    assert {
        "auth.login",
        "auth.logout",
        "auth.register",
        "history.delete",
        "history.retry",
        "reviews.review",
        "admin.set_role",
        "scenarios.service",
        "scenarios.medical",
        "scenarios.education",
    } <= endpoints

    # Every failure must be audited here, anonymous ones too: lift their per-address cap for this test
    # (test_audit_chain.py tests the cap).
    limits = {**app.config, "PRISM_RATELIMIT_AUDIT_FAILURES": "1000 per minute"}
    app.extensions[ratelimit.EXTENSION_KEY] = ratelimit.RateLimits(limits)
    before = _state(app)
    failures = []
    for rule in routes:
        values = {}
        for name in rule.arguments - set(rule.defaults or {}):
            assert isinstance(rule._converters[name], IntegerConverter), f"teach this test about {rule.rule}"
            assert ids.get(name), f"no id to substitute for <{name}> in {rule.rule}"
            values[name] = ids[name]
        path = app.url_map.bind("localhost").build(rule.endpoint, values, method="POST")
        for client in (alice, app.test_client()):  # signed in and anonymous
            count = len(audit_rows(app, "security.csrf_failed"))
            response = client.post(
                path,
                data={"text": "x", "username": "alice", "password": "whatever123", "decision": "accept"},
            )
            rows = audit_rows(app, "security.csrf_failed")
            if response.status_code != 400 or len(rows) != count + 1 or rows[-1]["details"]["path"] != path:
                failures.append((path, response.status_code, len(rows) - count))
    assert failures == []
    assert _state(app) == before


def test_csrf_failure_audit_row_names_the_user(app, alice):
    """A CSRF failure by a signed-in user is attributed to that user."""
    assert alice.post("/service/", data={"text": "hello"}).status_code == 400
    rows = audit_rows(app, "security.csrf_failed")
    assert [(r["actor_name"], r["details"]["path"]) for r in rows] == [("alice", "/service/")]


def test_csrf_token_from_another_session_is_rejected(app, alice):
    """A token minted for one session does not validate in another."""
    bob = client_for(app, "bob")
    foreign = csrf_token(bob, "/service/")
    response = alice.post("/service/", data={"text": "hello", "csrf_token": foreign})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Analysis.id))) == 0


def test_csrf_error_page_explains_and_has_headers(alice):
    """The CSRF error page says what happened and carries the security headers."""
    response = alice.post("/logout")  # a form that keeps nothing (scenario forms come back filled in)
    assert response.status_code == 400
    assert "The form expired or was sent from elsewhere" in response.get_data(as_text=True)
    _assert_security_headers(response)


def _assert_security_headers(response) -> None:
    csp = response.headers.get("Content-Security-Policy", "")
    assert "object-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("X-Frame-Options") == "DENY"


def test_headers_on_normal_pages(client):
    """Public pages carry CSP, nosniff and frame protection."""
    for path in ("/", "/login", "/register"):
        response = client.get(path)
        assert response.status_code == 200
        _assert_security_headers(response)


def test_headers_on_404(client):
    """A 404 page carries the security headers and no traceback."""
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "There is nothing here" in response.get_data(as_text=True)
    _assert_security_headers(response)


def test_headers_on_413(app, client):
    """A request over MAX_CONTENT_LENGTH gets a 413 page with the security headers."""
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    response = client.post("/login", data={"username": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413
    assert "larger than the 1 MB limit" in response.get_data(as_text=True)
    _assert_security_headers(response)


def test_headers_on_403_and_405(app, alice):
    """Forbidden and method-not-allowed pages carry the security headers."""
    forbidden = alice.get("/admin/")
    assert forbidden.status_code == 403
    _assert_security_headers(forbidden)
    not_allowed = alice.get("/logout")
    assert not_allowed.status_code == 405
    _assert_security_headers(not_allowed)


def test_unexpected_error_gives_generic_500_with_headers(app, client, monkeypatch):
    """An unhandled exception becomes a generic 500 page (no traceback) with the security headers."""

    def boom():
        raise RuntimeError("secret internal detail")

    monkeypatch.setitem(app.view_functions, "main.index", boom)
    response = client.get("/")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "Something went wrong on our side" in body
    assert "secret internal detail" not in body and "Traceback" not in body
    _assert_security_headers(response)


def test_headers_on_api_errors(client):
    """JSON errors from the API carry nosniff and CSP too."""
    response = client.get("/api/v1/analyses")
    assert response.status_code == 401
    assert response.is_json
    _assert_security_headers(response)


def test_headers_on_image_download(app, alice):
    """Image downloads carry nosniff, CSP and a private no-store cache policy."""
    location = submit(alice, text=None, image=png_bytes()).headers["Location"]
    response = alice.get(f"{location}/image")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert response.headers["Cache-Control"] == "private, no-store"
    _assert_security_headers(response)


def test_signed_in_pages_are_not_cached(alice):
    """Pages served to a signed-in user have Cache-Control: private, no-store."""
    for path in ("/", "/history/", "/account/", "/service/", "/no/such/page"):
        response = alice.get(path)
        assert "no-store" in response.headers.get("Cache-Control", ""), path
