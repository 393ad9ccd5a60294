"""The append-only audit trail's table (``webapp/audit.py`` writes it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import utcnow


class AuditEvent(db.Model):
    """Who did what, when, from where. Append-only (enforced by triggers, see the migration) and sealed
    in a chain (``prev_hash``, ``row_hash``) that ``manage.py audit verify`` checks."""

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
    # The chain (webapp/audit.py): the previous row's seal, and this row's HMAC over it and its fields.
    # Empty on rows written before migration 0008.
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))
