"""Times in the reader's time zone: stored in UTC (naive ``datetime``s, as ``models.utcnow`` writes
them), shown and filtered in the viewer's zone.

The viewer's zone is the signed-in user's ``time_zone`` (an IANA name, chosen on the account page or
taken once from the browser by ``static/js/timezone.js``), else UTC. Every template shows a time with
the one ``|localtime`` filter, which writes ``<time datetime="…Z">local text</time>``: the machine
value stays UTC, and the page says which zone its text is in (``zone_label``). Date filters
(``from``/``to``) name days in the same zone (``day_bounds``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from flask import g, has_request_context
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup

DEFAULT_ZONE = "UTC"
FORMATS = {"minutes": "%Y-%m-%d %H:%M", "seconds": "%Y-%m-%d %H:%M:%S", "date": "%Y-%m-%d"}


@cache
def zone_names() -> tuple[str, ...]:
    """The IANA zones this system knows, sorted: the choices of the account page's select."""
    return tuple(sorted(name for name in available_timezones() if "/" in name or name == DEFAULT_ZONE))


@cache
def _zone_set() -> frozenset[str]:
    return frozenset(zone_names())


def is_zone(name: str | None) -> bool:
    return bool(name) and name in _zone_set()


@cache
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def viewer_zone_name() -> str:
    """The signed-in user's zone if they have a valid one, else UTC (outside a request too)."""
    if not has_request_context():
        return DEFAULT_ZONE
    if "viewer_zone" not in g:  # once per request: a listing formats dozens of times
        zone = current_user.time_zone if current_user.is_authenticated else None
        g.viewer_zone = zone if is_zone(zone) else DEFAULT_ZONE
    return g.viewer_zone


def viewer_zone() -> ZoneInfo:
    return _zone(viewer_zone_name())


def to_local(value: datetime, zone: ZoneInfo | None = None) -> datetime:
    """``value`` (naive UTC, or aware) in ``zone`` (default: the viewer's)."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return aware.astimezone(zone or viewer_zone())


def utc_offset(zone: ZoneInfo, at: datetime | None = None) -> str:
    """The offset as "UTC+08:00": readable in every language, unlike abbreviations such as "CST"."""
    offset = (at or datetime.now(UTC)).astimezone(zone).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def zone_label() -> str:
    """The viewer's zone as pages name it: "Asia/Shanghai, UTC+08:00", or "UTC" (once per request)."""
    if has_request_context() and "zone_label" in g:
        return g.zone_label
    name = viewer_zone_name()
    label = name if name == DEFAULT_ZONE else f"{name}, {utc_offset(_zone(name))}"
    if has_request_context():
        g.zone_label = label
    return label


def localtime(value: datetime | None, style: str = "minutes") -> Markup:
    """The ``|localtime`` filter: ``<time datetime="UTC ISO">local text</time>``; ``style`` is
    "minutes" (default), "seconds" or "date". An empty value renders nothing."""
    if value is None:
        return Markup("")
    utc = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    local = to_local(utc)
    return Markup('<time datetime="{}Z" title="{}">{}</time>').format(
        utc.isoformat(timespec="seconds"), zone_label(), local.strftime(FORMATS.get(style, FORMATS["minutes"]))
    )


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of ``day`` in ``zone`` as naive UTC datetimes, to compare with stored times.
    A day is not always 24 hours (daylight saving): both ends are local midnights."""
    start = datetime.combine(day, time.min, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
    return (start.astimezone(UTC).replace(tzinfo=None), end.astimezone(UTC).replace(tzinfo=None))


def parse_day(value: str | None) -> date | None:
    """A YYYY-MM-DD date, or None; raises ``ValueError`` for anything else that is not blank."""
    value = (value or "").strip()
    return datetime.strptime(value, "%Y-%m-%d").date() if value else None


def parse_day_range(args, errors: list) -> tuple[date | None, date | None]:
    """The ``from`` and ``to`` days of a query string (both included), for every listing's date
    filter. A malformed day, or a range that ends before it starts, is left out and named in ``errors``."""

    def day(name: str, label) -> date | None:
        try:
            return parse_day(args.get(name))
        except ValueError:
            errors.append(
                _l("%(filter)s: “%(value)s” is not a date (YYYY-MM-DD).", filter=label, value=args[name][:40])
            )
            return None

    date_from, date_to = day("from", _l("From")), day("to", _l("To"))
    if date_from and date_to and date_from > date_to:
        errors.append(_l("The date range ends before it starts: the dates were not applied."))
        return None, None
    return date_from, date_to


def within_days(column, date_from: date | None, date_to: date | None, zone: ZoneInfo) -> list:
    """The WHERE clauses that keep ``column`` (a naive UTC time) within the days ``date_from`` to
    ``date_to`` of ``zone``, both included; either end may be None (open)."""
    clauses = []
    if date_from:
        clauses.append(column >= day_bounds(date_from, zone)[0])
    if date_to:
        clauses.append(column < day_bounds(date_to, zone)[1])
    return clauses
