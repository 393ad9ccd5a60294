"""Bounds on what a request can carry, so that nothing reaches the database it cannot store.

Integers:

The id columns are ``sa.Integer``: 64-bit in SQLite, but 32-bit INTEGER in PostgreSQL, where a larger
id fails the query's ``::INTEGER`` cast ("integer out of range"), and past 64 bits every driver raises
OverflowError: a 500 either way. Every ``<int:...>`` route and every ``page`` parameter is therefore
bounded here, once, rather than in each view: an id past the range matches no route (404), and so does
a page past ``MAX_PAGE``. Integers read from forms and JSON bodies go through ``database_id``.

Text: a lone surrogate (JSON allows ``"\ud800"``) cannot be encoded for SQLite or PostgreSQL, and
PostgreSQL refuses NUL in text, in a stored value and in a query's search pattern alike. Either, in
any query parameter, form field or JSON string, is a 400 before any view runs. A text sent to the
models is held to more (``text_problem``): no control character but tab and line breaks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import chain
from typing import Any

from flask import Flask, abort, request
from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from werkzeug.routing import IntegerConverter, Map

# The largest id both databases store: PostgreSQL's INTEGER (SQLite's would go to 2**63 - 1). Ids
# count up from 1 and are never reused, so no real record comes near it.
MAX_ID = 2**31 - 1
MAX_PAGE = 1_000_000  # far past any listing's last page; its offset stays far inside 64 bits


class DatabaseIdConverter(IntegerConverter):
    """Flask's ``int`` converter, with ``max`` defaulting to ``MAX_ID``."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(url_map, *args, **kwargs)


def database_id(value: Any) -> int | None:
    """``value`` (an int, or a string of ASCII digits) as an id the database can hold, or None when
    it is missing, not a whole number, below 1 or past ``MAX_ID``."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID:
        return value
    return None


def _page_in_range() -> None:
    """A ``page`` past ``MAX_PAGE`` is a page that does not exist. Flask-SQLAlchemy reads ``page``
    itself (treating a non-number as page 1); this only adds the upper bound it lacks."""
    page = request.args.get("page", type=int)
    if page is not None and page > MAX_PAGE:
        abort(404)


_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text_problem(text: str) -> LazyString | None:
    """Why ``text`` cannot go to a model as it is (a lone surrogate, a control character), or None."""
    if _SURROGATE.search(text):
        return _l("The text contains a lone surrogate, which is not valid Unicode.")
    if _CONTROL.search(text):
        return _l("The text contains a control character (only tabs and line breaks are allowed).")
    return None


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, object keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _storable_input():
    from .errors import error_response

    payload = request.get_json(silent=True) if request.is_json else None
    texts = chain(request.args.values(), request.form.values(), _strings(payload))
    if any(_UNSTORABLE.search(text) for text in texts):
        return error_response(400, _l("The request contains a NUL character or a lone surrogate; nothing was saved."))
    return None


def install(app: Flask) -> None:
    """Bound every ``<int:...>`` route (call before the blueprints register), every ``page``, and the
    text of every query string, form and JSON body."""
    app.url_map.converters["int"] = DatabaseIdConverter
    app.before_request(_page_in_range)
    app.before_request(_storable_input)
