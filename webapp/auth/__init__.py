"""Accounts: registration, login/logout, the account page and personal API tokens."""

from __future__ import annotations

from flask import Flask
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..extensions import db, login_manager
from ..models import User


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


@login_manager.user_loader
def load_user(session_token: str) -> User | None:
    """Load by the rotating session token, not the id, so logout revokes copied cookies."""
    return db.session.scalar(select(User).where(User.session_token == session_token, User.active.is_(True)))
