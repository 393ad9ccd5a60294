"""The numbers behind the dashboards' charts: SQL aggregates over a bounded window, as plain values.

Every function takes the owner to count (``user_id``; None counts everyone's records, for admins):
scoping is the caller's decision, made once in each view, and the functions never read
``current_user``. Windows are bounded by ``Analysis.created_at`` (indexed alone and after
``user_id``), so a chart reads at most ``days`` of records however old the database is; results
and reviews are counted through the analyses they belong to. Sentiment counts the value that counts
(``final_label``: a correction wins, a rejected result counts for nothing), as the admin totals do.

A chart is a ``Chart``: labels along one axis and one ``Series`` per key (a sentiment, a scenario, a
review outcome). ``Chart.payload`` is the JSON that ``static/js/charts.js`` draws; the template
shows the same numbers as a table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from sqlalchemy import ColumnElement, Select, func, literal_column, select

from .extensions import db
from .i18n import KIND_NAMES, REVIEW_NAMES, SENTIMENT_NAMES
from .models import SCENARIOS, SENTIMENT_LABELS, Analysis, Prediction
from .models.base import utcnow
from .models.prediction import ACCEPTED, CORRECTED, REJECTED
from .scenarios import SCENARIO_PAGES

DAYS_PER_DAY_CHART = 30  # charts by day: one month of bars stays readable on a phone
DAYS_PER_SUMMARY = 90  # totals (by scenario, per model): a quarter of records
OUTCOMES = (ACCEPTED, CORRECTED, REJECTED)
DEFAULT_TZ = "UTC"


@dataclass(frozen=True)
class Series:
    key: str  # a stored code (picks the colour); ``name`` is what people read
    name: str
    values: list[float]


@dataclass(frozen=True)
class Chart:
    """One chart and its table: ``labels`` are the rows (x axis), one column (dataset) per series."""

    id: str
    kind: str  # "line" or "bar"
    title: str
    labels: list[str]
    series: list[Series]
    label_heading: str  # the table's first column heading (what a label is: a day, a model ...)
    value_heading: str  # the value axis (analyses, milliseconds ...)
    empty_message: str
    stacked: bool = False
    horizontal: bool = False

    @property
    def is_empty(self) -> bool:
        return not any(value for series in self.series for value in series.values)

    @property
    def rows(self) -> list[tuple[str, list[float]]]:
        """The table's rows: each label with its value in every series."""
        return [(label, [series.values[index] for series in self.series]) for index, label in enumerate(self.labels)]

    @property
    def payload(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "labels": self.labels,
            "series": [{"key": s.key, "name": s.name, "values": s.values} for s in self.series],
            "stacked": self.stacked,
            "horizontal": self.horizontal,
            "valueTitle": self.value_heading,
        }


# --- Days ---------------------------------------------------------------------------------------


def day_bucket(column: Any, tz: str = DEFAULT_TZ) -> ColumnElement[str]:
    """The calendar day ("YYYY-MM-DD") in time zone ``tz`` (an IANA name) of a naive-UTC timestamp column.

    The one place that decides which day a record belongs to, so that per-user time zones change
    only the argument. PostgreSQL converts with its time-zone database, daylight saving included.
    SQLite has none: it shifts by the zone's offset *now*, so records within an hour of midnight
    can land a day off across a daylight-saving change inside the window (UTC, the default, is exact).
    The zone and format are inlined as literals (the name is checked by ``ZoneInfo`` first): with
    bound parameters PostgreSQL would not see that GROUP BY repeats the selected expression.
    """
    zone = ZoneInfo(tz)  # raises for an unknown name before anything reaches SQL
    if db.session.get_bind().dialect.name == "postgresql":
        local = column if tz == "UTC" else func.timezone(_quoted(zone.key), func.timezone("UTC", column))
        return func.to_char(local, literal_column("'YYYY-MM-DD'"))
    offset = datetime.now(zone).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    return func.strftime(literal_column("'%Y-%m-%d'"), column, literal_column(f"'{minutes:+d} minutes'"))


def _quoted(name: str) -> ColumnElement[str]:
    if not all(char.isalnum() or char in "/_+-" for char in name):  # IANA names are only these
        raise ValueError(f"unexpected time-zone name {name!r}")
    return literal_column(f"'{name}'")


def window(days: int, tz: str = DEFAULT_TZ, *, now: datetime | None = None) -> tuple[list[str], datetime]:
    """The last ``days`` calendar days in ``tz``, today last, as "YYYY-MM-DD", and the naive-UTC
    instant the first one starts (what ``created_at`` is compared with)."""
    zone = ZoneInfo(tz)
    local_today = (now or utcnow()).replace(tzinfo=ZoneInfo("UTC")).astimezone(zone).date()
    first = local_today - timedelta(days=days - 1)
    start = datetime.combine(first, time(), tzinfo=zone).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
    return [(first + timedelta(days=n)).isoformat() for n in range(days)], start


def _owned(statement: Select, user_id: int | None) -> Select:
    return statement if user_id is None else statement.where(Analysis.user_id == user_id)


def _in_order(scenarios: Iterable[str]) -> list[str]:
    """Scenarios in the app's order (the nav's), unknown ones last."""
    present = set(scenarios)
    return [key for key in SCENARIOS if key in present] + sorted(present - set(SCENARIOS))


def _per_day(rows: Iterable[tuple[str, str, int]], days: list[str], keys: Iterable[str]) -> dict[str, list[int]]:
    """(day, key, count) rows as one list of counts per key, with a zero for every day without rows."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for day, key, count in rows:
        counts[key][day] = count
    return {key: [counts[key].get(day, 0) for day in days] for key in keys}


# --- The aggregates -------------------------------------------------------------------------------


def sentiment_per_day(
    user_id: int | None, days: int = DAYS_PER_DAY_CHART, tz: str = DEFAULT_TZ, *, now: datetime | None = None
) -> tuple[list[str], dict[str, list[int]]]:
    """Per day of the window (by the record's time), how many sentiments of each label count."""
    labels, start = window(days, tz, now=now)
    day = day_bucket(Analysis.created_at, tz).label("day")
    statement = _owned(
        select(day, Prediction.final_label, func.count())
        .join(Prediction, Prediction.analysis_id == Analysis.id)
        .where(Analysis.created_at >= start, Prediction.kind == "sentiment", Prediction.final_label.is_not(None))
        .group_by(literal_column("day"), Prediction.final_label),
        user_id,
    )
    return labels, _per_day(db.session.execute(statement).all(), labels, SENTIMENT_LABELS)


def sentiment_by_scenario(
    user_id: int | None, days: int = DAYS_PER_SUMMARY, *, now: datetime | None = None
) -> dict[str, dict[str, int]]:
    """Per scenario with any, how many sentiments of each label count among the window's records."""
    _days, start = window(days, now=now)
    statement = _owned(
        select(Analysis.scenario, Prediction.final_label, func.count())
        .join(Prediction, Prediction.analysis_id == Analysis.id)
        .where(Analysis.created_at >= start, Prediction.kind == "sentiment", Prediction.final_label.is_not(None))
        .group_by(Analysis.scenario, Prediction.final_label),
        user_id,
    )
    found: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SENTIMENT_LABELS, 0))
    for scenario, label, count in db.session.execute(statement):
        found[scenario][label] = count
    return dict(found)


def analyses_per_day(
    user_id: int | None, days: int = DAYS_PER_DAY_CHART, tz: str = DEFAULT_TZ, *, now: datetime | None = None
) -> tuple[list[str], dict[str, list[int]]]:
    """Per day of the window, how many records were submitted in each scenario that has any (in the app's order)."""
    labels, start = window(days, tz, now=now)
    day = day_bucket(Analysis.created_at, tz).label("day")
    statement = _owned(
        select(day, Analysis.scenario, func.count())
        .where(Analysis.created_at >= start)
        .group_by(literal_column("day"), Analysis.scenario),
        user_id,
    )
    rows = db.session.execute(statement).all()
    return labels, _per_day(rows, labels, _in_order(scenario for _, scenario, _ in rows))


@dataclass(frozen=True)
class Latency:
    kind: str
    model_id: str
    count: int
    mean_ms: float
    max_ms: float


def model_latency(user_id: int | None, days: int = DAYS_PER_SUMMARY, *, now: datetime | None = None) -> list[Latency]:
    """Per kind of result and model, how many results the window's records got and their mean and
    longest model time (``latency_ms``; kinds without a model run, such as grades, have none)."""
    _days, start = window(days, now=now)
    statement = _owned(
        select(
            Prediction.kind,
            Prediction.model_id,
            func.count(),
            func.avg(Prediction.latency_ms),
            func.max(Prediction.latency_ms),
        )
        .join(Analysis, Prediction.analysis_id == Analysis.id)
        .where(Analysis.created_at >= start, Prediction.latency_ms.is_not(None))
        .group_by(Prediction.kind, Prediction.model_id)
        .order_by(Prediction.kind, Prediction.model_id),
        user_id,
    )
    return [
        Latency(kind, model_id, count, round(float(mean), 1), round(float(longest), 1))
        for kind, model_id, count, mean, longest in db.session.execute(statement)
    ]


def review_outcomes(
    user_id: int | None, days: int = DAYS_PER_SUMMARY, *, now: datetime | None = None
) -> dict[tuple[str, str], dict[str, int]]:
    """Per (scenario, model), how many of the window's model results a person accepted, corrected or
    rejected (the latest decision counts). Kinds reviewed on their own page (grades, which no
    model proposes) are left out: every one of them is a "correction" by construction."""
    _days, start = window(days, now=now)
    reviewable = [kind for kind, cls in Prediction.KINDS.items() if cls.GENERIC_REVIEW]
    statement = _owned(
        select(Prediction.scenario, Prediction.model_id, Prediction.review_state, func.count())
        .join(Analysis, Prediction.analysis_id == Analysis.id)
        .where(Analysis.created_at >= start, Prediction.review_state.in_(OUTCOMES), Prediction.kind.in_(reviewable))
        .group_by(Prediction.scenario, Prediction.model_id, Prediction.review_state)
        .order_by(Prediction.scenario, Prediction.model_id),
        user_id,
    )
    found: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for scenario, model_id, state, count in db.session.execute(statement):
        found[scenario, model_id][state] = count
    return dict(found)


def series(values: Mapping[str, list[float]], names: Mapping[str, Any]) -> list[Series]:
    """One ``Series`` per key of ``values``, named by ``names`` (display names, lazy strings allowed)."""
    return [Series(key, str(names.get(key, key)), list(counts)) for key, counts in values.items()]


# --- The dashboards' charts (display names in the reader's language) ------------------------------


def _scenario_name(key: str) -> str:
    page = SCENARIO_PAGES.get(key)
    return str(page.title) if page else key


def user_charts(user_id: int, tz: str = DEFAULT_TZ) -> list[Chart]:
    """A user's dashboard: the sentiment of their own records per day, and by scenario."""
    days, per_day = sentiment_per_day(user_id, tz=tz)
    by_scenario = sentiment_by_scenario(user_id)
    scenarios = _in_order(by_scenario)
    return [
        Chart(
            id="sentiment-per-day",
            kind="bar",
            title=_("Sentiment per day, last %(days)d days", days=DAYS_PER_DAY_CHART),
            labels=days,
            series=series(per_day, SENTIMENT_NAMES),
            label_heading=_("Day"),
            value_heading=_("Results"),
            empty_message=_("No sentiment results in the last %(days)d days.", days=DAYS_PER_DAY_CHART),
            stacked=True,
        ),
        Chart(
            id="sentiment-by-scenario",
            kind="bar",
            title=_("Sentiment by scenario, last %(days)d days", days=DAYS_PER_SUMMARY),
            labels=[_scenario_name(key) for key in scenarios],
            series=series(
                {label: [by_scenario[key][label] for key in scenarios] for label in SENTIMENT_LABELS}, SENTIMENT_NAMES
            ),
            label_heading=_("Scenario"),
            value_heading=_("Results"),
            empty_message=_("No sentiment results in the last %(days)d days.", days=DAYS_PER_SUMMARY),
            stacked=True,
        ),
    ]


def admin_charts(tz: str = DEFAULT_TZ) -> list[Chart]:
    """The admin overview: everyone's records per day, model latency, and review outcomes."""
    days, per_day = analyses_per_day(None, tz=tz)
    latencies = model_latency(None)
    outcomes = review_outcomes(None)
    order = _in_order(scenario for scenario, _model in outcomes)
    outcome_keys = sorted(outcomes, key=lambda key: (order.index(key[0]), key[1]))
    return [
        Chart(
            id="activity-per-day",
            kind="bar",
            title=_("Analyses per day, last %(days)d days", days=DAYS_PER_DAY_CHART),
            labels=days,
            series=series(per_day, {key: _scenario_name(key) for key in per_day}),
            label_heading=_("Day"),
            value_heading=_("Analyses"),
            empty_message=_("No analyses in the last %(days)d days.", days=DAYS_PER_DAY_CHART),
            stacked=True,
        ),
        Chart(
            id="model-latency",
            kind="bar",
            title=_("Model time per result, last %(days)d days", days=DAYS_PER_SUMMARY),
            labels=[f"{KIND_NAMES.get(row.kind, row.kind)} · {row.model_id}" for row in latencies],
            series=[
                Series("mean", _("Mean (ms)"), [row.mean_ms for row in latencies]),
                Series("max", _("Longest (ms)"), [row.max_ms for row in latencies]),
            ],
            label_heading=_("Model"),
            value_heading=_("Milliseconds"),
            empty_message=_("No model results in the last %(days)d days.", days=DAYS_PER_SUMMARY),
            horizontal=True,
        ),
        Chart(
            id="review-outcomes",
            kind="bar",
            title=_("Review outcomes by scenario and model, last %(days)d days", days=DAYS_PER_SUMMARY),
            labels=[f"{_scenario_name(scenario)} · {model_id}" for scenario, model_id in outcome_keys],
            series=series({state: [outcomes[key][state] for key in outcome_keys] for state in OUTCOMES}, REVIEW_NAMES),
            label_heading=_("Scenario and model"),
            value_heading=_("Results"),
            empty_message=_("No reviewed results in the last %(days)d days.", days=DAYS_PER_SUMMARY),
            stacked=True,
            horizontal=True,
        ),
    ]


def score_distribution_chart(distribution: list[tuple[str, int]]) -> Chart:
    """An assignment's totals as counted by ``education.distribution`` (lowest range first)."""
    return Chart(
        id="score-distribution",
        kind="bar",
        title=_("Score distribution"),
        labels=[label for label, _count in distribution],
        series=[Series("submissions", _("Submissions"), [count for _label, count in distribution])],
        label_heading=_("Total"),
        value_heading=_("Submissions"),
        empty_message=_("Nothing is graded yet."),
    )
