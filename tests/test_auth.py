"""Registration, login/logout, redirects after login, and server-side session revocation."""

from __future__ import annotations

import re

import pytest

from tests.conftest import TEST_PASSWORD, audit_rows, csrf_token, login, make_user
from webapp.extensions import db
from webapp.models import User


def register(client, username: str, password: str = TEST_PASSWORD, confirm: str | None = None):
    token = csrf_token(client, "/register")
    return client.post(
        "/register",
        data={"username": username, "password": password, "confirm": confirm or password, "csrf_token": token},
    )


def get_user(app, username: str) -> User | None:
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.username == username))
        if user is not None:
            db.session.expunge(user)
        return user


def is_signed_in(client) -> bool:
    """True when the client's cookies authenticate (history needs login; anonymous is redirected)."""
    return client.get("/history/").status_code == 200


def test_register_signs_in_as_plain_user_and_audits(app, client):
    """Registering creates a 'user'-role account, signs it in, and writes an auth.register row."""
    response = register(client, "carol")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    user = get_user(app, "carol")
    assert user is not None and user.role == "user" and user.active
    assert user.password_hash.startswith("pbkdf2:sha256:")
    assert TEST_PASSWORD not in user.password_hash
    assert is_signed_in(client)
    rows = audit_rows(app, "auth.register")
    assert [(r["actor_name"], r["target_id"]) for r in rows] == [("carol", str(user.id))]


def test_register_rejects_taken_username(app, client):
    """A second registration with an existing username is refused and creates no account."""
    make_user(app, "carol")
    response = register(client, "carol", password="another password")
    assert response.status_code == 200
    assert "That username is taken." in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 1
    assert not is_signed_in(client)


def test_register_rejects_short_password(app, client):
    """A password under 8 characters is rejected and no account is created."""
    response = register(client, "dave", password="short7!")
    assert response.status_code == 200
    assert "Use at least 8 characters." in response.get_data(as_text=True)
    assert get_user(app, "dave") is None


@pytest.mark.parametrize("password", ["12345678", "password", "Password", " qwertyuiop ", "woaini1314", "1qaz2wsx"])
def test_register_refuses_common_passwords(app, client, password):
    """Issue #8, finding 2: 12345678 and password were accepted. The bundled list (no network) refuses
    them, whatever their case, and the Chinese favourites too."""
    response = register(client, "dave", password=password)
    assert response.status_code == 200
    assert "This password is one of the most common ones" in response.get_data(as_text=True)
    assert get_user(app, "dave") is None


def test_register_refuses_the_username_as_password(app, client):
    response = register(client, "dave.smith", password="Dave.Smith")
    assert "The password must not be your username." in response.get_data(as_text=True)
    assert get_user(app, "dave.smith") is None
    assert register(client, "dave.smith", password="plum tree in winter").status_code == 302


def test_register_rejects_mismatched_confirmation(app, client):
    """Password and confirmation must match."""
    response = register(client, "dave", password=TEST_PASSWORD, confirm="something else entirely")
    assert "Passwords differ." in response.get_data(as_text=True)
    assert get_user(app, "dave") is None


def test_long_passphrase_is_accepted_and_verified(app, client):
    """A 64-character passphrase registers and then logs in (no truncation, no composition rules)."""
    passphrase = "correct horse battery staple " * 2 + "abcdef"
    assert len(passphrase) == 64
    assert register(client, "erin", password=passphrase).status_code == 302
    other = app.test_client()
    assert login(other, "erin", passphrase).status_code == 302
    assert login(app.test_client(), "erin", passphrase[:-1]).status_code == 200


def test_login_success_redirects_home_and_audits(app, client):
    """Correct credentials sign in, redirect to / and write an auth.login row."""
    make_user(app, "alice")
    response = login(client, "alice")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert is_signed_in(client)
    assert [r["actor_name"] for r in audit_rows(app, "auth.login")] == ["alice"]


def _normalise(body: str, username: str) -> str:
    body = re.sub(r'value="[^"]*"(?=>)', 'value="X"', body)  # CSRF token and echoed username
    return body.replace(username, "USERNAME")


def test_login_failure_same_message_for_unknown_user_and_wrong_password(app, client):
    """Unknown user and wrong password get the same page and status; both are audited with the username."""
    make_user(app, "alice")
    wrong = login(client, "alice", "wrong password here")
    unknown = login(client, "nobody", TEST_PASSWORD)
    assert wrong.status_code == unknown.status_code == 200
    wrong_body, unknown_body = wrong.get_data(as_text=True), unknown.get_data(as_text=True)
    assert "Invalid username or password." in wrong_body
    assert _normalise(wrong_body, "alice") == _normalise(unknown_body, "nobody")
    rows = audit_rows(app, "auth.login_failed")
    assert [r["details"]["username"] for r in rows] == ["alice", "nobody"]
    assert all(r["actor_id"] is None for r in rows)
    assert not is_signed_in(client)


def test_login_failure_does_not_log_the_password(app, client):
    """The attempted password never lands in the audit trail."""
    make_user(app, "alice")
    login(client, "alice", "Canary-Password-123")
    assert "Canary-Password-123" not in repr(audit_rows(app))


def test_disabled_user_cannot_log_in(app, client):
    """An account with active=False is refused with the generic message."""
    make_user(app, "alice")
    with app.app_context():
        db.session.execute(db.update(User).where(User.username == "alice").values(active=False))
        db.session.commit()
    response = login(client, "alice")
    assert response.status_code == 200
    assert "Invalid username or password." in response.get_data(as_text=True)
    assert not is_signed_in(client)


def test_disabling_a_user_ends_their_existing_session(app, alice):
    """A signed-in user whose account is disabled is signed out on the next request."""
    assert is_signed_in(alice)
    with app.app_context():
        db.session.execute(db.update(User).where(User.username == "alice").values(active=False))
        db.session.commit()
    response = alice.get("/history/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_login_redirects_to_safe_next(app, client):
    """?next=/history/ is honoured after login."""
    make_user(app, "alice")
    token = csrf_token(client, "/login")
    response = client.post(
        "/login?next=/history/", data={"username": "alice", "password": TEST_PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/history/"


def test_login_required_page_sends_next(client):
    """An anonymous visit to a protected page redirects to /login with next set to that page."""
    response = client.get("/history/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=%2Fhistory%2F"


@pytest.mark.parametrize(
    "target",
    ["//evil.com", "https:evil.com", "/\\evil.com", "http://evil.com", "https://evil.com/x", "/\tevil", "evil.com"],
)
def test_login_rejects_offsite_next(app, client, target):
    """Off-site or ambiguous ?next values are ignored: login lands on / instead."""
    make_user(app, "alice")
    token = csrf_token(client, "/login")
    credentials = {"username": "alice", "password": TEST_PASSWORD, "csrf_token": token}
    response = client.post("/login", query_string={"next": target}, data=credentials)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_logout_is_post_only(alice):
    """GET /logout is 405 and leaves the user signed in."""
    response = alice.get("/logout")
    assert response.status_code == 405
    assert is_signed_in(alice)


def test_logout_requires_csrf(app, alice):
    """POST /logout without a CSRF token is 400 and does not sign out."""
    response = alice.post("/logout")
    assert response.status_code == 400
    assert is_signed_in(alice)
    assert audit_rows(app, "auth.logout") == []
    assert len(audit_rows(app, "security.csrf_failed")) == 1


def test_logout_signs_out_and_audits(app, alice):
    """POST /logout with CSRF signs out, rotates the session token and writes auth.logout."""
    before = get_user(app, "alice").session_token
    response = alice.post("/logout", data={"csrf_token": csrf_token(alice, "/account/")})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert not is_signed_in(alice)
    assert get_user(app, "alice").session_token != before
    assert [r["actor_name"] for r in audit_rows(app, "auth.logout")] == ["alice"]


def test_copied_session_cookie_is_revoked_by_logout(app, alice):
    """A session cookie copied before logout no longer authenticates after it (server-side revocation)."""
    stolen = alice.get_cookie("session").value
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert is_signed_in(thief), "the copied cookie should work before logout"
    alice.post("/logout", data={"csrf_token": csrf_token(alice, "/account/")})
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert not is_signed_in(replay)


def test_copied_remember_cookie_is_revoked_by_logout(app, client):
    """A remember-me cookie copied before logout no longer signs anyone in after logout."""
    make_user(app, "alice")
    token = csrf_token(client, "/login")
    response = client.post(
        "/login", data={"username": "alice", "password": TEST_PASSWORD, "remember": "y", "csrf_token": token}
    )
    assert response.status_code == 302
    remember = client.get_cookie("remember_token")
    assert remember is not None
    set_cookie = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("remember_token=")][0]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie

    thief = app.test_client()
    thief.set_cookie("remember_token", remember.value)
    assert is_signed_in(thief), "the remember cookie alone should sign in before logout"

    client.post("/logout", data={"csrf_token": csrf_token(client, "/account/")})
    replay = app.test_client()
    replay.set_cookie("remember_token", remember.value)
    assert not is_signed_in(replay)


def test_login_without_remember_sets_no_remember_cookie(app, client):
    """Without 'remember', no long-lived remember cookie is issued."""
    make_user(app, "alice")
    login(client, "alice")
    assert client.get_cookie("remember_token") is None


def test_session_cookie_flags(app, client):
    """The session cookie is HttpOnly and SameSite=Lax."""
    make_user(app, "alice")
    response = login(client, "alice")
    cookies = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    assert cookies
    assert "HttpOnly" in cookies[0]
    assert "SameSite=Lax" in cookies[0]


def test_login_starts_a_fresh_session(app, client):
    """Login replaces the session: the cookie value changes and pre-login session data is dropped."""
    make_user(app, "alice")
    csrf_token(client, "/login")
    with client.session_transaction() as session:
        session["planted"] = "attacker-chosen"
    before = client.get_cookie("session").value
    login(client, "alice")
    after = client.get_cookie("session").value
    assert after != before
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session.get("_user_id")


def test_signed_in_user_visiting_login_is_redirected(alice):
    """/login and /register redirect home for a signed-in user."""
    assert alice.get("/login").status_code == 302
    assert alice.get("/register").status_code == 302


def test_account_page_requires_login(client):
    """/account/ redirects anonymous visitors to the login page."""
    response = client.get("/account/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
