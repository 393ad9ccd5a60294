"""Who may see or change a row: one rule for every area (records, batches, cases, conversations,
rubrics, assignments).

The owner sees and changes their rows; an admin sees everyone's, and each such read is audited (ASVS
16.3.2) but changes nothing. The ownership check is in the query, so another user's id behaves
exactly like a missing one: a 404, never a 403 that would confirm the row exists.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask_login import current_user
from sqlalchemy import select

from . import audit
from .extensions import db

Row = TypeVar("Row")


def _select(model: type[Row], row_id: int, options: tuple, where: dict[str, Any]):
    conditions = [model.id == row_id, *(getattr(model, column) == value for column, value in where.items())]
    return select(model).where(*conditions).options(*options)


def owned_or_404(model: type[Row], row_id: int, *, options: tuple = (), **where: Any) -> Row:
    """The signed-in user's own ``model`` row ``row_id`` (matching ``where`` too), to change; else 404."""
    return db.first_or_404(_select(model, row_id, options, where).where(model.user_id == current_user.id))


def visible_or_404(
    model: type[Row],
    row_id: int,
    *,
    part: str,
    action: str = audit.ANALYSIS_VIEWED_BY_OTHER,
    options: tuple = (),
    **where: Any,
) -> Row:
    """The row if the signed-in user may read it (theirs, or anyone's for an admin); else 404.
    An admin's read of someone else's row is audited as ``action``, naming the ``part`` read."""
    statement = _select(model, row_id, options, where)
    if not current_user.is_admin:
        statement = statement.where(model.user_id == current_user.id)
    found = db.first_or_404(statement)
    if found.user_id != current_user.id:
        audit.record(action, target=found, details={"owner_id": found.user_id, "part": part})
        db.session.commit()
    return found


__all__ = ["owned_or_404", "visible_or_404"]
