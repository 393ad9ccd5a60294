"""ORM models (SQLAlchemy 2.0 style).

An ``Analysis`` keeps the AI output together with the model id and revision that produced it, so a
record can always be traced to the weights behind it. ``AuditEvent`` rows are append-only: the
migration installs SQLite triggers that abort any UPDATE or DELETE on them.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from flask_login import UserMixin
from sqlalchemy import JSON, ForeignKey, Index, String, Text, func, select, text
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db

ROLES = ("user", "teacher", "clinician", "admin")
SCENARIOS = ("service", "medical", "education")
SENTIMENT_LABELS = ("negative", "neutral", "positive")
LAST_USED_RESOLUTION = timedelta(minutes=1)
API_TOKEN_PREFIX = "prism_"  # noqa: S105 (a public prefix)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


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

    def get_id(self) -> str:
        return self.session_token

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Analysis(db.Model):
    """One submission and what the models said about it."""

    __table_args__ = (
        Index("ix_analysis_user_created", "user_id", "created_at"),
        Index("ix_analysis_user_scenario_created", "user_id", "scenario", "created_at"),
        Index("ix_analysis_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    scenario: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    text: Mapped[str | None] = mapped_column(Text)
    image_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    image_format: Mapped[str | None] = mapped_column(String(8))
    image_width: Mapped[int | None]
    image_height: Mapped[int | None]
    image_filename: Mapped[str | None] = mapped_column(String(255))
    caption: Mapped[str | None] = mapped_column(Text)
    caption_model: Mapped[str | None] = mapped_column(String(255))
    caption_revision: Mapped[str | None] = mapped_column(String(64))
    caption_precision: Mapped[str | None] = mapped_column(String(8))
    caption_ms: Mapped[float | None]
    sentiment_label: Mapped[str | None] = mapped_column(String(16), index=True)
    sentiment_score: Mapped[float | None]
    sentiment_scores: Mapped[dict[str, float] | None] = mapped_column(JSON)
    sentiment_raw_scores: Mapped[dict[str, float] | None] = mapped_column(JSON)
    sentiment_model: Mapped[str | None] = mapped_column(String(255))
    sentiment_revision: Mapped[str | None] = mapped_column(String(64))
    sentiment_precision: Mapped[str | None] = mapped_column(String(8))
    sentiment_ms: Mapped[float | None]
    app_version: Mapped[str] = mapped_column(String(32))

    user: Mapped[User] = relationship(back_populates="analyses")

    @property
    def confidence_band(self) -> str | None:
        """High/Medium/Low as users of helpdesk triage expect next to the number."""
        if self.sentiment_score is None:
            return None
        if self.sentiment_score >= 0.8:
            return "high"
        return "medium" if self.sentiment_score >= 0.6 else "low"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scenario": self.scenario,
            "created_at": self.created_at.isoformat() + "Z",
            "owner": self.user.username,
            "text": self.text,
            "image": None
            if self.image_sha256 is None
            else {
                "sha256": self.image_sha256,
                "format": self.image_format,
                "width": self.image_width,
                "height": self.image_height,
                "filename": self.image_filename,
            },
            "caption": None
            if self.caption is None
            else {
                "text": self.caption,
                "model": self.caption_model,
                "revision": self.caption_revision,
                "precision": self.caption_precision,
                "latency_ms": self.caption_ms,
            },
            "sentiment": None
            if self.sentiment_label is None
            else {
                "label": self.sentiment_label,
                "score": self.sentiment_score,
                "band": self.confidence_band,
                "scores": self.sentiment_scores,
                "raw_scores": self.sentiment_raw_scores,
                "model": self.sentiment_model,
                "revision": self.sentiment_revision,
                "precision": self.sentiment_precision,
                "latency_ms": self.sentiment_ms,
            },
            "app_version": self.app_version,
        }


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


class AuditEvent(db.Model):
    """Who did what, when, from where. Append-only (enforced by triggers, see the migration)."""

    __table_args__ = (Index("ix_audit_created", "created_at"), Index("ix_audit_action_created", "action", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(index=True)  # no FK: audit rows outlive users
    actor_name: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(48))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


def count(statement) -> int:
    """Row count of a select, without loading the rows."""
    return db.session.scalar(select(func.count()).select_from(statement.order_by(None).subquery())) or 0
