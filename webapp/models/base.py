"""Helpers every model module shares."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Select, func, select

from ..extensions import db


def utcnow() -> datetime:
    """Naive UTC, as stored in every timestamp column (a callable default, evaluated per row)."""
    return datetime.now(UTC).replace(tzinfo=None)


def count(statement: Select) -> int:
    """Row count of a select, without loading the rows."""
    return db.session.scalar(select(func.count()).select_from(statement.order_by(None).subquery())) or 0
