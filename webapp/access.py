"""Who may see or change a row: one rule for every area (records, batches, cases, conversations,
rubrics, assignments).

The owner sees and changes their rows; an admin sees everyone's, and each such read is audited (ASVS
16.3.2) but changes nothing. The ownership check is in the query, so another user's id behaves
exactly like a missing one: a 404, never a 403 that would confirm the row exists.

One audit row per page an admin opens, not one per request the page makes: a page that shows other
users' rows (a record, a listing of records) is audited once and notes the rows it named in the
session (``note_audited``); the requests that page then makes for them (thumbnails, images, status
polls: ``within_page=True``) write nothing more while that note holds. The note lives in the signed
session cookie, so only pages actually served (and audited) can add to it; a thumbnail URL opened
on its own, in a session that never saw the page, is audited as usual.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import session
from flask_login import current_user
from sqlalchemy import select

from . import audit
from .extensions import db

Row = TypeVar("Row")
AUDITED_KEY = "_audited_reads"
AUDITED_MAX = 100  # ids remembered per model: a full page (``max_per_page``), well within the 4 KB cookie


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
    within_page: bool = False,
    **where: Any,
) -> Row:
    """The row if the signed-in user may read it (theirs, or anyone's for an admin); else 404.

    An admin's read of someone else's row is audited as ``action``, naming the ``part`` read and the
    owner, unless ``within_page`` (an image or status request of a page) and an audited page in
    this session already named the row (see the module's docstring).
    """
    statement = _select(model, row_id, options, where)
    if not current_user.is_admin:
        statement = statement.where(model.user_id == current_user.id)
    found = db.first_or_404(statement)
    if found.user_id != current_user.id and not (within_page and row_id in _audited(model)):
        owner = found.user.username if hasattr(found, "user") else None
        audit.record(action, target=found, details={"owner_id": found.user_id, "owner": owner, "part": part})
        db.session.commit()
        note_audited(model, [row_id])
    return found


def _audited(model: type) -> list[int]:
    noted = session.get(AUDITED_KEY)
    ids = noted.get(model.__name__) if isinstance(noted, dict) else None
    return ids if isinstance(ids, list) else []


def note_audited(model: type, row_ids: list[int]) -> None:
    """Note that an audit row written for this session's page names ``row_ids`` of ``model``: the
    page's own requests for them (``within_page``) are then not audited again."""
    kept = [row_id for row_id in _audited(model) if row_id not in row_ids]
    noted = session.get(AUDITED_KEY)
    noted = noted if isinstance(noted, dict) else {}
    session[AUDITED_KEY] = {**noted, model.__name__: (kept + list(row_ids))[-AUDITED_MAX:]}


__all__ = ["note_audited", "owned_or_404", "visible_or_404"]
