"""Pages of large listings that stay fast on SQLite and on PostgreSQL (see ``manage.py bench``).

Two costs dominate a page of a user's 80,000 records, and each has a fix here:
- **The total.** An exact count of a filter that reads predictions (sentiment, review state,
  confidence) or a text search visits every matching record. ``capped_count`` stops at
  ``COUNT_CAP`` matches and says so; pages then read "more than 1,000", as a search engine does.
- **The page itself when its order needs a sort** (the review queue sorts by a computed "uncertain
  first"). ``IdsFirstPagination`` sorts only ids, from covering indexes, then loads the page's
  rows by id: PostgreSQL otherwise sorts whole rows, JSON outputs included.
"""

from __future__ import annotations

from typing import Any

from flask_sqlalchemy.pagination import SelectPagination
from sqlalchemy import Select, func, select

from .extensions import db

COUNT_CAP = 1000


def capped_count(statement: Select, cap: int | None = None) -> tuple[int, bool]:
    """(matches, capped): the row count of ``statement``, stopping at ``cap`` (``COUNT_CAP``); capped
    when there are more."""
    cap = COUNT_CAP if cap is None else cap
    limited = statement.order_by(None).limit(cap + 1).subquery()
    found = db.session.scalar(select(func.count()).select_from(limited)) or 0
    return min(found, cap), found > cap


class IdsFirstPagination(SelectPagination):
    """A page of ``select`` (ordered), chosen by ``key`` (the entity's id column) first, with a capped total.

    Build it as ``IdsFirstPagination(select=..., session=db.session(), key=Model.id, per_page=...)``;
    ``page`` comes from the request's ``?page=`` as with ``db.paginate``. ``total_capped`` says the
    total stopped at ``COUNT_CAP``.
    """

    total_capped: bool = False

    def _query_items(self) -> list[Any]:
        select_ = self._query_args["select"]
        key = self._query_args["key"]
        page_keys = select_.with_only_columns(key).limit(self.per_page).offset(self._query_offset)
        return list(self._query_args["session"].execute(select_.where(key.in_(page_keys))).unique().scalars())

    def _query_count(self) -> int:
        total, self.total_capped = capped_count(self._query_args["select"])
        return total
