"""Accounts and personal API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pyotp
from flask_login import UserMixin
from sqlalchemy import ForeignKey, Index, String, false, func, select, text
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from ..extensions import db
from .base import utcnow

if TYPE_CHECKING:
    from .analysis import Analysis

ROLES = ("user", "teacher", "clinician", "admin")
LAST_USED_RESOLUTION = timedelta(minutes=1)
TOTP_STEP_SECONDS = 30  # RFC 6238's default, which every authenticator app uses
API_TOKEN_PREFIX = "prism_"  # noqa: S105 (a public prefix)


class User(UserMixin, db.Model):
    # "Alice" and "alice" are one account: a case-insensitive unique index, and lookups by lower().
    __table_args__ = (Index("uq_user_username_lower", text("lower(username)"), unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="user")
    active: Mapped[bool] = mapped_column(default=True)
    # Rotated on logout and password change; Flask-Login's session and remember cookies carry it
    # (get_id), so a copied cookie stops working once the user logs out (ASVS 7.4.1).
    session_token: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: secrets.token_hex(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Two-step sign-in (RFC 6238 TOTP, any authenticator app); None: not set up. The last accepted
    # time step is kept so a code, once used, is refused (a code seen over a shoulder is spent).
    totp_secret: Mapped[str | None] = mapped_column(String(32))
    totp_last_step: Mapped[int | None] = mapped_column()
    # Display preferences: an IANA zone (zoneinfo) that times are shown in, and the interface
    # language (``i18n.LOCALES``) restored at each sign-in; None until chosen (the browser's is used).
    time_zone: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(8))
    # Set when an admin resets the password to a temporary one: until the owner chooses a new
    # password, every page sends them to /account/password (``auth._require_new_password``).
    must_change_password: Mapped[bool] = mapped_column(default=False, server_default=false())

    analyses: Mapped[list[Analysis]] = relationship(back_populates="user", cascade="all, delete-orphan")
    api_tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")

    @classmethod
    def by_username(cls, username: str):
        """Select the user whose name matches ``username`` ignoring case."""
        return select(cls).where(func.lower(cls.username) == username.strip().lower())

    def set_password(self, password: str, method: str) -> None:
        self.password_hash = generate_password_hash(password, method=method)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def rotate_session_token(self) -> None:
        self.session_token = secrets.token_hex(16)

    @property
    def has_two_step(self) -> bool:
        return self.totp_secret is not None

    def check_code(self, code: str, secret: str | None = None, now: float | None = None) -> bool:
        """Whether ``code`` is the TOTP code of ``secret`` (default: the user's) for the current 30 s
        step or one either side (clock drift), and newer than the last accepted one; it is then spent."""
        secret = secret or self.totp_secret
        if not secret or not (code := code.strip().replace(" ", "")).isdigit():
            return False
        totp, current = pyotp.TOTP(secret), int((time.time() if now is None else now) // TOTP_STEP_SECONDS)
        for step in (current - 1, current, current + 1):
            if step > (self.totp_last_step or -1) and hmac.compare_digest(totp.at(step * TOTP_STEP_SECONDS), code):
                self.totp_last_step = step
                return True
        return False

    def sign_out_everywhere(self) -> int:
        """End every session and remember cookie (the session token rotates) and revoke every API
        token still active, as a password change or disabling the account must; returns how many
        tokens were revoked."""
        self.rotate_session_token()
        active = [token for token in self.api_tokens if token.revoked_at is None]
        now = utcnow()
        for token in active:
            token.revoked_at = now
        return len(active)

    def get_id(self) -> str:
        return self.session_token

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class ApiToken(db.Model):
    """A personal API token. Only its SHA-256 is stored; the secret is shown once at creation."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))  # first characters, to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="api_tokens")

    @staticmethod
    def hash_secret(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def issue(cls, user: User, name: str) -> tuple[ApiToken, str]:
        """Create a token for ``user``; returns the row and the one-time plaintext secret."""
        secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls(user=user, name=name, token_hash=cls.hash_secret(secret), hint=secret[:10])
        return token, secret

    @classmethod
    def select_active(cls, secret: str):
        return select(cls).where(cls.token_hash == cls.hash_secret(secret), cls.revoked_at.is_(None))

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def mark_used(self, now: datetime) -> bool:
        """Stamp ``last_used_at`` at most once a minute; True when it changed (the caller commits).

        A program calling the API in a loop would otherwise turn every request into a database write.
        """
        if self.last_used_at is not None and now - self.last_used_at < LAST_USED_RESOLUTION:
            return False
        self.last_used_at = now
        return True
