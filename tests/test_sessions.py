"""Issue #8, finding 7: "Keep me signed in" survives a browser restart; a session restored from the
remember cookie must confirm the password before exports, role changes and new API tokens; an idle
session ends; over HTTPS the cookies are Secure and __Host-."""

from __future__ import annotations

import time

from tests.conftest import _CSRF, TEST_PASSWORD, client_for, csrf_token, make_user, submit
from webapp import config as prism_config
from webapp.auth import LAST_SEEN_KEY
from webapp.extensions import db
from webapp.models import ApiToken, User

REFRESH = "Please enter your password again to do this."


def remembered(app, username: str, role: str = "user"):
    """A client that signed in with "Keep me signed in", then lost its session cookie (a browser
    restart): only the remember cookie is left."""
    make_user(app, username, role=role)
    client = app.test_client()
    token = csrf_token(client, "/login")
    form = {"username": username, "password": TEST_PASSWORD, "remember": "y", "csrf_token": token}
    assert client.post("/login", data=form).status_code == 302
    assert client.get_cookie("remember_token") is not None
    client.delete_cookie("session")
    return client


def confirm_password(client, username: str, next_path: str):
    form = {"username": username, "password": TEST_PASSWORD, "csrf_token": csrf_token(client, "/login")}
    return client.post(f"/login?next={next_path}", data=form)


def test_keep_me_signed_in_survives_the_requests_after_a_restore(app):
    """Before: the first request was restored from the cookie, the second sent to the login page."""
    client = remembered(app, "alice")
    assert [client.get("/history/").status_code for _ in range(4)] == [200] * 4
    assert client.get_cookie("remember_token") is not None


def test_a_restored_session_confirms_the_password_before_an_export(app):
    """Before: a request with only the remember cookie downloaded the admin export."""
    admin = remembered(app, "root", role="admin")
    assert admin.get("/admin/analyses").status_code == 200  # reading is fine
    response = admin.get("/admin/analyses/export.csv?scenario=service")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/admin/analyses/export.csv?scenario%3Dservice"
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert REFRESH in page and 'value="root"' in page  # the name is filled in
    back = confirm_password(admin, "root", "/admin/analyses/export.csv?scenario%3Dservice")
    assert back.headers["Location"] == "/admin/analyses/export.csv?scenario=service"
    export = admin.get(back.headers["Location"])
    assert export.status_code == 200 and export.mimetype == "text/csv"


def test_role_change_and_token_creation_need_a_fresh_login(app):
    """A form post from a restored session changes nothing and comes back to its page after the password."""
    make_user(app, "bob")
    admin = remembered(app, "root", role="admin")
    token = csrf_token(admin, "/account/")  # one token per session, whichever form it came from
    with app.app_context():
        bob_id = db.session.scalar(User.by_username("bob")).id
    response = admin.post(
        f"/admin/users/{bob_id}/role",
        data={"csrf_token": token, f"u{bob_id}-role": "admin"},
        headers={"Referer": "http://localhost/admin/users"},
    )
    assert (response.status_code, response.headers["Location"]) == (302, "/login?next=/admin/users")
    response = admin.post(
        "/account/",
        data={"csrf_token": csrf_token(admin, "/account/"), "name": "laptop"},
        headers={"Referer": "http://localhost/account/"},
    )
    assert (response.status_code, response.headers["Location"]) == (302, "/login?next=/account/")
    with app.app_context():
        assert db.session.scalar(User.by_username("bob")).role == "user"
        assert db.session.scalar(db.select(db.func.count(ApiToken.id))) == 0
    confirm_password(admin, "root", "/account/")
    made = admin.post("/account/", data={"csrf_token": csrf_token(admin, "/account/"), "name": "laptop"})
    assert made.status_code == 200
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(ApiToken.id))) == 1


def test_a_fresh_login_exports_at_once(app):
    alice = client_for(app, "alice")
    submit(alice, text="Thanks!")
    assert alice.get("/history/export.csv").status_code == 200


def _idle(client, minutes: int) -> None:
    with client.session_transaction() as session:
        session[LAST_SEEN_KEY] = int(time.time()) - minutes * 60


def test_an_idle_session_ends(app):
    """30 minutes (PRISM_IDLE_MINUTES) without a request sign the user out, with a message."""
    alice = client_for(app, "alice")
    assert alice.get("/history/").status_code == 200
    _idle(alice, 29)
    assert alice.get("/history/").status_code == 200  # active again: the clock restarts
    _idle(alice, 31)
    response = alice.get("/history/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    page = alice.get(response.headers["Location"]).get_data(as_text=True)
    assert "You were signed out after 30 minutes without activity." in page


def test_an_idle_remembered_session_comes_back_not_fresh(app):
    """With "Keep me signed in" the user returns through the cookie, but an export asks for the password."""
    alice = remembered(app, "alice")
    confirm_password(alice, "alice", "/")  # fresh again
    assert alice.get("/history/export.csv").status_code == 200
    _idle(alice, 31)
    assert alice.get("/history/").status_code == 200
    assert alice.get("/history/export.csv").headers["Location"].startswith("/login?next=")


def test_secure_cookies_are_host_prefixed(monkeypatch, tmp_path):
    monkeypatch.setenv("PRISM_SECURE_COOKIES", "1")
    found = prism_config._from_environment()
    assert (found["SESSION_COOKIE_NAME"], found["REMEMBER_COOKIE_NAME"]) == ("__Host-session", "__Host-remember")
    assert found["SESSION_COOKIE_SECURE"] and found["REMEMBER_COOKIE_SECURE"]
    from tests.conftest import make_app

    app = make_app(tmp_path, **{key: value for key, value in found.items() if "COOKIE" in key})
    make_user(app, "alice")
    client = app.test_client()
    login_page = client.get("/login", base_url="https://localhost").get_data(as_text=True)
    token = _CSRF.search(login_page).group(1)
    form = {"username": "alice", "password": TEST_PASSWORD, "remember": "y", "csrf_token": token}
    secure = {"base_url": "https://localhost", "headers": {"Referer": "https://localhost/login"}}  # CSRF over TLS
    response = client.post("/login", data=form, **secure)
    assert response.status_code == 302
    cookies = response.headers.getlist("Set-Cookie")
    assert any(c.startswith("__Host-session=") and "Secure" in c and "Path=/" in c for c in cookies), cookies
    assert any(c.startswith("__Host-remember=") and "Secure" in c and "Domain" not in c for c in cookies), cookies


def test_password_change_signs_out_other_sessions_and_revokes_tokens(app):
    """A new password (the policy applies) ends every other session and remember cookie and revokes
    every API token; this browser stays signed in; the change is audited."""
    from tests.conftest import audit_rows, make_token

    other_browser = remembered(app, "alice")
    this_browser = app.test_client()
    confirm_password(this_browser, "alice", "/")
    secret = make_token(app, "alice")
    assert app.test_client().get("/api/v1/analyses", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    form = {"csrf_token": csrf_token(this_browser, "/account/password"), "current": "wrong password"}
    new = {"password": "new plum blossom", "confirm": "new plum blossom"}
    wrong = this_browser.post("/account/password", data={**form, **new})
    assert "That is not your current password." in wrong.get_data(as_text=True)
    common = this_browser.post(
        "/account/password", data={**form, "current": TEST_PASSWORD, "password": "password1", "confirm": "password1"}
    )
    assert "one of the most common ones" in common.get_data(as_text=True)
    done = this_browser.post("/account/password", data={**form, **new, "current": TEST_PASSWORD})
    assert (done.status_code, done.headers["Location"]) == (302, "/account/")
    assert this_browser.get("/history/").status_code == 200
    assert other_browser.get("/history/").status_code == 302  # its session and remember cookie are dead
    assert app.test_client().get("/api/v1/analyses", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    with app.app_context():
        assert db.session.scalar(User.by_username("alice")).check_password("new plum blossom")
    [event] = audit_rows(app, "auth.password_change")
    assert event["details"] == {"tokens_revoked": 1}


def test_password_change_needs_a_fresh_login(app):
    alice = remembered(app, "alice")
    response = alice.get("/account/password")
    assert response.headers["Location"] == "/login?next=/account/password"


def test_an_admin_disabling_an_account_signs_it_out_everywhere(app):
    """Sessions, remember cookies and API tokens of a disabled account stop working; enabling it again
    lets the owner sign in (with the password), not the old cookies or tokens; both are audited."""
    from tests.conftest import audit_rows, login, make_token

    bob_browser = remembered(app, "bob")
    bob_other = client_for(app, "bob2")
    secret = make_token(app, "bob")
    admin = client_for(app, "root", role="admin")
    with app.app_context():
        bob_id = db.session.scalar(User.by_username("bob")).id
    token = csrf_token(admin, "/admin/users")
    assert admin.post(f"/admin/users/{bob_id}/access", data={"csrf_token": token}).status_code == 302
    assert bob_browser.get("/history/").status_code == 302
    assert app.test_client().get("/api/v1/analyses", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert login(app.test_client(), "bob").status_code == 200  # refused: disabled
    admin.post(f"/admin/users/{bob_id}/access", data={"csrf_token": token})
    assert bob_browser.get("/history/").status_code == 302  # the old remember cookie stays dead
    assert login(app.test_client(), "bob").status_code == 302
    assert bob_other.get("/history/").status_code == 200  # other accounts untouched
    details = [row["details"] for row in audit_rows(app, "admin.access_change")]
    assert details == [
        {"username": "bob", "active": False, "tokens_revoked": 1},
        {"username": "bob", "active": True, "tokens_revoked": 0},
    ]
