"""Accounts: registration, login/logout, the account page and personal API tokens."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, flash, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_fresh, user_loaded_from_cookie
from sqlalchemy import select

from ..extensions import db, login_manager
from ..i18n import clear_session_keeping_locale
from ..models import User
from ..security import is_safe_redirect

LAST_SEEN_KEY = "_last_seen"  # seconds since the epoch of the session's last request (to the minute)


def login_manager_setup(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    # Flask-Login's own text, made lazy; str() renders it in the request's language when it is
    # flashed (the session stores plain strings only).
    login_manager.login_message = _l("Please log in to access this page.")
    login_manager.localize_callback = str
    # "strong" drops the session when the client's IP/user agent hash changes.
    login_manager.session_protection = "strong"
    user_loaded_from_cookie.connect(_bind_restored_session, app)
    for check in _SESSION_CHECKS:
        app.before_request(check)


TWO_STEP_ROLES = ("admin", "clinician")  # who must use two-step sign-in when PRISM_REQUIRE_MFA is on
_TWO_STEP_EXEMPT = {
    "auth.two_step",
    "auth.change_password",  # a temporary password is replaced first (_require_new_password)
    "auth.logout",
    "main.set_language",
    "main.healthz",
    "static",
}
_NEW_PASSWORD_EXEMPT = {"auth.change_password", "auth.logout", "main.set_language", "main.healthz", "static"}


def new_password_redirect() -> Any:
    """Send an account whose password an admin reset to choose its own, saying why."""
    flash(_("An admin reset your password. Choose a new one to continue."), "info")
    return redirect(url_for("auth.change_password"))


def _require_new_password() -> Any:
    """After an admin's reset, the temporary password opens one page only: the one that replaces it
    (plus sign-out and the language switch). The API is not affected: the reset revoked the
    account's tokens, and new ones are made on the account page, which this guard holds back."""
    if (
        request.endpoint in _NEW_PASSWORD_EXEMPT
        or request.path.startswith("/api/")
        or not current_user.is_authenticated
        or not current_user.must_change_password
    ):
        return None
    return new_password_redirect()


def _require_two_step() -> Any:
    """With PRISM_REQUIRE_MFA, an admin or clinician without two-step sign-in sets it up before
    anything else (their tokens and the API are not affected: a token is its own credential)."""
    if (
        not current_app.config["PRISM_REQUIRE_MFA"]
        or request.endpoint in _TWO_STEP_EXEMPT
        or request.path.startswith("/api/")
        or not current_user.is_authenticated
        or current_user.role not in TWO_STEP_ROLES
        or current_user.has_two_step
    ):
        return None
    flash(_("Your role needs two-step sign-in. Set it up to continue."), "info")
    return redirect(url_for("auth.two_step"))


def check_session() -> Any:
    """The session checks ``before_request`` runs, for a response made without them (a form kept by
    ``webapp.kept_forms`` after a refusal that came first): None, or the redirect to the password
    change or to two-step set-up. Like Flask, the first check that answers ends the chain."""
    for check in _SESSION_CHECKS:
        if (response := check()) is not None:
            return response
    return None


def _bind_restored_session(app: Flask, user: User) -> None:
    """Flask-Login restores a session from the remember cookie without the client identifier that
    "strong" protection compares, so the next request dropped the session and the cookie: "Keep me
    signed in" signed the user out (issue #8, finding 7). The restored session gets it here."""
    session["_id"] = login_manager._session_identifier_generator()


def _end_idle_session() -> None:
    """After PRISM_IDLE_MINUTES without a request the session ends. With a remember cookie the user
    comes back through it, not fresh: sensitive actions then ask for the password again."""
    if "_user_id" not in session:
        return
    now, last = int(time.time()), session.get(LAST_SEEN_KEY)
    idle_minutes = current_app.config["PRISM_IDLE_MINUTES"]
    if isinstance(last, int) and now - last > idle_minutes * 60:
        clear_session_keeping_locale()
        if not request.cookies.get(current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token")):
            flash(_("You were signed out after %(minutes)d minutes without activity.", minutes=idle_minutes), "info")
        return
    if not isinstance(last, int) or now - last >= 60:  # the cookie is rewritten at most once a minute
        session[LAST_SEEN_KEY] = now


# The before_request chain, in order; ``check_session`` runs the same list, so the two cannot drift.
_SESSION_CHECKS = (_end_idle_session, _require_new_password, _require_two_step)


def fresh_login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """For sensitive actions (exports, role changes, new API tokens): the password must have been typed
    in this session. A session restored from the remember cookie, which a thief may hold, is sent to
    the login page first, and comes back to where it was."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if current_user.is_authenticated and not login_fresh():
            flash(_("Please enter your password again to do this."), "info")
            return redirect(url_for("auth.login", next=_return_path()))
        return view(*args, **kwargs)

    return guarded


def _return_path() -> str:
    """Where to come back after the password: this page, or for a form post the page that had it."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    referrer = urlsplit(request.referrer or "")
    path = referrer.path + (f"?{referrer.query}" if referrer.query else "")
    return path if referrer.netloc == request.host and is_safe_redirect(path) else url_for("main.index")


@login_manager.user_loader
def load_user(session_token: str) -> User | None:
    """Load by the rotating session token, not the id, so logout revokes copied cookies."""
    return db.session.scalar(select(User).where(User.session_token == session_token, User.active.is_(True)))
