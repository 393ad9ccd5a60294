"""Issue #8, finding 2: optional two-step sign-in (TOTP), required of admins and clinicians when
PRISM_REQUIRE_MFA is on; a code works once; the password alone signs no one in."""

from __future__ import annotations

import re
import time

import pyotp

from tests.conftest import TEST_PASSWORD, audit_rows, client_for, csrf_token, make_user
from webapp.extensions import db
from webapp.models import User


def _code(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


def _turn_on(client) -> str:
    page = client.get("/account/two-step").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    assert "otpauth://totp/Prism:" in page
    response = client.post(
        "/account/two-step", data={"csrf_token": csrf_token(client, "/account/two-step"), "code": _code(secret)}
    )
    assert response.headers["Location"] == "/account/"
    return secret


def _password_step(client, username: str):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": TEST_PASSWORD, "csrf_token": token})


def test_set_up_then_sign_in_with_password_and_code(app):
    alice = client_for(app, "alice")
    secret = _turn_on(alice)
    with app.app_context():
        assert db.session.scalar(User.by_username("alice")).totp_secret == secret
    assert [row["details"] for row in audit_rows(app, "auth.two_step_change")] == [{"enabled": True}]

    browser = app.test_client()
    first = _password_step(browser, "alice")
    assert first.headers["Location"] == "/login/code"
    assert browser.get("/history/").status_code == 302  # the password alone signs no one in
    wrong = browser.post("/login/code", data={"csrf_token": csrf_token(browser, "/login/code"), "code": "000000"})
    assert "That code is not right" in wrong.get_data(as_text=True)
    code = _code(secret, offset_steps=1)  # the next step's code: the one the app shows after alice's setup code
    ok = browser.post("/login/code", data={"csrf_token": csrf_token(browser, "/login/code"), "code": code})
    assert ok.headers["Location"] == "/"
    assert browser.get("/history/").status_code == 200
    assert audit_rows(app, "auth.login")[-1]["details"] == {"two_step": True}

    again = app.test_client()
    _password_step(again, "alice")
    replay = again.post("/login/code", data={"csrf_token": csrf_token(again, "/login/code"), "code": code})
    assert "was already used" in replay.get_data(as_text=True)  # a code works once


def test_the_code_step_expires_and_needs_the_password_first(app):
    client_for(app, "alice")
    browser = app.test_client()
    assert browser.get("/login/code").headers["Location"] == "/login"  # no password step yet
    alice = client_for(app, "alice2")
    _turn_on(alice)
    _password_step(browser, "alice2")
    with browser.session_transaction() as session:
        session["_two_step_pending"] = {**session["_two_step_pending"], "until": int(time.time()) - 1}
    assert browser.get("/login/code").headers["Location"] == "/login"


def test_turning_it_off_needs_a_code(app):
    alice = client_for(app, "alice")
    secret = _turn_on(alice)
    token = csrf_token(alice, "/account/two-step")
    refused = alice.post("/account/two-step", data={"csrf_token": token, "code": "123456"})
    assert "That code is not right" in refused.get_data(as_text=True)
    alice.post("/account/two-step", data={"csrf_token": token, "code": _code(secret, offset_steps=1)})
    with app.app_context():
        assert db.session.scalar(User.by_username("alice")).totp_secret is None


def test_required_for_admins_and_clinicians(app):
    """With PRISM_REQUIRE_MFA, an admin or clinician is sent to set it up first; a plain user is not;
    the API (tokens are their own credential) is not affected."""
    app.config["PRISM_REQUIRE_MFA"] = True
    admin = client_for(app, "root", role="admin")
    response = admin.get("/admin/")
    assert response.headers["Location"] == "/account/two-step"
    assert "Your role needs two-step sign-in" in admin.get("/account/two-step").get_data(as_text=True)
    _turn_on(admin)
    assert admin.get("/admin/").status_code == 200
    assert client_for(app, "alice").get("/history/").status_code == 200
    make_user(app, "drwho", role="clinician")
    clinician = app.test_client()
    _password_step(clinician, "drwho")
    assert clinician.get("/medical/").headers["Location"] == "/account/two-step"
