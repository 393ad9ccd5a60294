"""The API's docs page: a server-rendered reading of the OpenAPI document (``webapp.api.openapi``).

A blueprint of its own, outside /api/: the API blueprint demands a token on every route, and paths
under /api/ answer errors as JSON and always in English (``errors.wants_json``), while this page is
for people, in their language. It is public, like the document it shows.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask_babel import format_number
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from limits import parse_many

from .openapi import RESPONSES, operations

bp = Blueprint("api_docs", __name__)

# The units a `limits` string may use ("10 per minute", "100/hour"), for the reader's language.
_UNITS = {
    "second": _l("second"),
    "minute": _l("minute"),
    "hour": _l("hour"),
    "day": _l("day"),
    "month": _l("month"),
    "year": _l("year"),
}
# The same after a number above one ("3 per 2 minutes").
_PLURAL_UNITS = {
    "second": _l("seconds"),
    "minute": _l("minutes"),
    "hour": _l("hours"),
    "day": _l("days"),
    "month": _l("months"),
    "year": _l("years"),
}

# The error answers every client meets, in the order the page lists them (503 is /predict's own).
ERROR_STATUSES = (
    (400, "BadRequest"),
    (401, "Unauthorized"),
    (403, "Forbidden"),
    (404, "NotFound"),
    (413, "TooLarge"),
    (429, "RateLimited"),
)


def describe_limits(setting: str) -> list[str] | None:
    """A rate-limit setting in words ("600 per minute"), one entry per limit; None when limits are off."""
    config = current_app.config
    if not config["PRISM_RATELIMIT_ENABLED"]:
        return None
    found = []
    for item in parse_many(config[setting]):
        name = item.GRANULARITY.name
        amount = format_number(item.amount)
        if item.multiples == 1:
            found.append(_("%(amount)s per %(unit)s", amount=amount, unit=_UNITS[name]))
        else:
            unit = _PLURAL_UNITS[name]
            found.append(_("%(amount)s per %(multiples)s %(unit)s", amount=amount, multiples=item.multiples, unit=unit))
    return found


@bp.route("/docs/api")
def index():
    return render_template(
        "api/docs.html",
        operations=operations(),
        errors=[(status, RESPONSES[name]["description"]) for status, name in ERROR_STATUSES],
        api_limits=describe_limits("PRISM_RATELIMIT_API"),
        submit_limits=describe_limits("PRISM_RATELIMIT_SUBMIT"),
        inference_timeout=format_number(current_app.config["PRISM_INFERENCE_TIMEOUT"]),
    )
