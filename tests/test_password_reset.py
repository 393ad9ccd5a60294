"""Issue #9: an admin resets a forgotten password. The account gets a temporary password shown once
to the admin, is signed out everywhere, and must choose a new password at its next sign-in."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from tests.conftest import (
    TEST_PASSWORD,
    audit_rows,
    client_for,
    csrf_token,
    login,
    make_token,
    make_user,
    user_id,
)
from tests.test_sessions import remembered
from webapp.auth.passwords import TEMPORARY_ALPHABET, TEMPORARY_LENGTH, password_problem, temporary_password
from webapp.extensions import db
from webapp.models import User

_PASSWORD = re.compile(r'id="temporary-password">([^<]+)<')
_RESET_ACTION = re.compile(r'action="(/admin/users/(\d+)/password-reset\?[^"]+)"')
NEW_PASSWORD = "plum blossom 梅花 2026"


def reset_action(admin, username_id: int) -> str:
    """The reset form's action for one user, as /admin/users renders it (with its stamp)."""
    page = admin.get("/admin/users").get_data(as_text=True)
    actions = {int(found): action.replace("&amp;", "&") for action, found in _RESET_ACTION.findall(page)}
    return actions[username_id]


def reset(app, admin, username: str):
    """The admin resets ``username``'s password; returns the response and the temporary password."""
    action = reset_action(admin, user_id(app, username))
    response = admin.post(action, data={"csrf_token": csrf_token(admin, "/admin/users")})
    found = _PASSWORD.search(response.get_data(as_text=True))
    return response, found.group(1) if found else None


def flagged(app, username: str) -> bool:
    with app.app_context():
        return db.session.scalar(User.by_username(username)).must_change_password


def test_temporary_passwords_are_long_unambiguous_and_pass_the_policy():
    """16 characters without look-alikes (0/O, 1/l/I), accepted by the password policy, never twice alike."""
    drawn = {temporary_password("bob") for _ in range(200)}
    assert len(drawn) == 200
    for password in drawn:
        assert len(password) == TEMPORARY_LENGTH and set(password) <= set(TEMPORARY_ALPHABET)
        assert password_problem(password, "bob") is None
    assert not set("0O1lI") & set(TEMPORARY_ALPHABET)


@pytest.mark.both_databases
def test_reset_signs_out_everywhere_and_forces_a_new_password(app):
    """The old password, sessions, remember cookies and tokens die; the page shows the temporary
    password once (no-store); signing in with it leads only to the change page until it is changed."""
    bob_browser = remembered(app, "bob")
    bob_other = app.test_client()
    login(bob_other, "bob")
    secret = make_token(app, "bob")
    admin = client_for(app, "root", role="admin")

    response, password = reset(app, admin, "bob")
    assert response.status_code == 200 and password is not None
    assert response.headers["Cache-Control"] == "no-store"
    assert "Give this temporary password to bob" in response.get_data(as_text=True)
    assert password not in response.headers.get("Set-Cookie", "")
    assert flagged(app, "bob")
    assert bob_browser.get("/history/").status_code == 302  # remember cookie dead
    assert bob_other.get("/history/").status_code == 302  # session dead
    assert app.test_client().get("/api/v1/analyses", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert login(app.test_client(), "bob").status_code == 200  # the old password is refused
    assert password not in admin.get("/admin/users").get_data(as_text=True)  # shown once only

    bob = app.test_client()
    signed_in = login(bob, "bob", password)
    assert signed_in.headers["Location"] == "/account/password"
    change_page = bob.get("/account/password")
    assert change_page.status_code == 200
    assert "An admin reset your password. Choose a new one to continue." in change_page.get_data(as_text=True)
    for path in ("/", "/history/", "/account/", "/service/", "/dashboard"):
        assert bob.get(path).headers["Location"] == "/account/password", path
    assert bob.get("/lang/zh").status_code == 302 and bob.get("/healthz").status_code == 200
    bob.get("/lang/en")
    made = bob.post("/account/", data={"csrf_token": csrf_token(bob, "/account/password"), "name": "x"})
    assert made.headers["Location"] == "/account/password"  # no new API token while flagged

    form = {"csrf_token": csrf_token(bob, "/account/password"), "current": password}
    same = bob.post("/account/password", data={**form, "password": password, "confirm": password})
    assert "Choose a password different from your current one." in same.get_data(as_text=True)
    assert flagged(app, "bob")
    done = bob.post("/account/password", data={**form, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert done.headers["Location"] == "/account/"
    assert not flagged(app, "bob")
    assert bob.get("/history/").status_code == 200
    assert login(app.test_client(), "bob", password).status_code == 200  # the temporary one is spent
    assert login(app.test_client(), "bob", NEW_PASSWORD).headers["Location"] == "/"


def test_reset_is_audited_without_the_password(app):
    """One admin.password_reset row names the account and the tokens revoked, never the password."""
    make_user(app, "bob")
    make_token(app, "bob")
    make_token(app, "bob", name="second")
    admin = client_for(app, "root", role="admin")
    _, password = reset(app, admin, "bob")
    [row] = audit_rows(app, "admin.password_reset")
    assert (row["actor_name"], row["target_type"], row["target_id"]) == ("root", "User", str(user_id(app, "bob")))
    assert row["details"] == {"username": "bob", "tokens_revoked": 2}
    assert all(password not in str(event) for event in audit_rows(app))
    assert "admin.password_reset" in admin.get("/admin/audit?action=admin.password_reset").get_data(as_text=True)


def test_reloading_the_result_page_neither_resets_again_nor_shows_a_password(app):
    """The browser's reload re-posts the same form: the stamp is stale, so nothing changes."""
    make_user(app, "bob")
    admin = client_for(app, "root", role="admin")
    action = reset_action(admin, user_id(app, "bob"))
    data = {"csrf_token": csrf_token(admin, "/admin/users")}
    first = admin.post(action, data=data)
    password = _PASSWORD.search(first.get_data(as_text=True)).group(1)
    again = admin.post(action, data=data)
    assert again.status_code == 302 and again.headers["Location"].startswith("/admin/users")
    assert "nothing was reset" in admin.get(again.headers["Location"]).get_data(as_text=True)
    forged = admin.post(f"/admin/users/{user_id(app, 'bob')}/password-reset?stamp=重置", data=data)
    assert forged.status_code == 302  # a stamp that is not ASCII is refused, not a 500
    assert len(audit_rows(app, "admin.password_reset")) == 1
    assert login(app.test_client(), "bob", password).headers["Location"] == "/account/password"


def test_only_admins_can_reset(app):
    """Anyone else gets 403 (signed in) or the login page, and the password stays."""
    bob = make_user(app, "bob")
    teacher = client_for(app, "tess", role="teacher")
    token = csrf_token(teacher, "/account/")
    assert teacher.post(f"/admin/users/{bob}/password-reset", data={"csrf_token": token}).status_code == 403
    stranger = app.test_client()
    anonymous = stranger.post(f"/admin/users/{bob}/password-reset", data={"csrf_token": csrf_token(stranger, "/login")})
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login")
    assert login(app.test_client(), "bob").status_code == 302
    assert audit_rows(app, "admin.password_reset") == []


def test_an_admin_cannot_reset_their_own_password(app):
    """The admin's own row has no reset button, and posting it anyway changes nothing."""
    admin = client_for(app, "root", role="admin")
    root = user_id(app, "root")
    page = admin.get("/admin/users").get_data(as_text=True)
    assert f"/admin/users/{root}/password-reset" not in page
    response = admin.post(
        f"/admin/users/{root}/password-reset?stamp=x", data={"csrf_token": csrf_token(admin, "/account/")}
    )
    assert response.status_code == 302
    assert not flagged(app, "root") and login(app.test_client(), "root").status_code == 302


def test_reset_needs_the_csrf_token(app):
    """Without the form's token the post is refused and nothing changes."""
    make_user(app, "bob")
    admin = client_for(app, "root", role="admin")
    action = reset_action(admin, user_id(app, "bob"))
    assert admin.post(action, data={}).status_code in (302, 400)
    assert not flagged(app, "bob") and audit_rows(app, "admin.password_reset") == []


def test_reset_needs_a_fresh_login(app):
    """A session restored from the remember cookie confirms the password first."""
    make_user(app, "bob")
    admin = remembered(app, "root", role="admin")
    action = reset_action(admin, user_id(app, "bob"))
    response = admin.post(
        action,
        data={"csrf_token": csrf_token(admin, "/admin/users")},
        headers={"Referer": "http://localhost/admin/users"},
    )
    assert (response.status_code, response.headers["Location"]) == (302, "/login?next=/admin/users")
    assert not flagged(app, "bob")


def test_two_step_accounts_give_their_code_before_the_change(app):
    """An account with two-step sign-in keeps it: password, then code, then the change page."""
    bob = client_for(app, "bob")
    page = bob.get("/account/two-step").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    code = pyotp.TOTP(secret).now()
    bob.post("/account/two-step", data={"csrf_token": csrf_token(bob, "/account/two-step"), "code": code})
    admin = client_for(app, "root", role="admin")
    _, password = reset(app, admin, "bob")

    browser = app.test_client()
    assert login(browser, "bob", password).headers["Location"] == "/login/code"
    next_code = pyotp.TOTP(secret).at(time.time() + 30)  # the setup code is spent
    done = browser.post("/login/code", data={"csrf_token": csrf_token(browser, "/login/code"), "code": next_code})
    assert done.headers["Location"] == "/account/password"


def test_required_two_step_set_up_waits_for_the_new_password(tmp_path):
    """With PRISM_REQUIRE_MFA, a reset admin is sent to the password page first, not bounced between two."""
    from tests.conftest import make_app

    app = make_app(tmp_path, PRISM_REQUIRE_MFA=True)
    make_user(app, "ada", role="admin")
    with app.app_context():
        user = db.session.scalar(User.by_username("ada"))
        user.must_change_password = True
        db.session.commit()
    ada = app.test_client()
    assert login(ada, "ada").headers["Location"] == "/account/password"
    assert ada.get("/account/password").status_code == 200
    assert ada.get("/account/two-step").headers["Location"] == "/account/password"
    form = {"csrf_token": csrf_token(ada, "/account/password"), "current": TEST_PASSWORD}
    ada.post("/account/password", data={**form, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert ada.get("/history/").headers["Location"] == "/account/two-step"


@pytest.mark.both_databases
def test_migration_0011_adds_and_drops_the_flag(app):
    """0011 adds must_change_password (false for existing accounts) and its downgrade removes it."""
    make_user(app, "bob")
    with app.app_context():
        directory = app.extensions["migrate"].directory
        downgrade(directory=directory, revision="0010")
        columns = {column["name"] for column in inspect(db.engine).get_columns("user")}
        assert "must_change_password" not in columns
        upgrade(directory=directory)
        db.session.expire_all()
        assert db.session.scalar(User.by_username("bob")).must_change_password is False
