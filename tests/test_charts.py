"""Dashboards and charts: the aggregates on known data, who sees whose numbers, the pages' chart
data and tables, and the vendored Chart.js."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import add_analysis, client_for, user_id
from webapp import dashboards
from webapp.extensions import db
from webapp.models import Analysis, CaptionPrediction, Prediction, Review, SentimentPrediction
from webapp.models.base import utcnow

# Day buckets, GROUP BY and time zones are SQL that differs between the two databases.
pytestmark = pytest.mark.both_databases

NOW = datetime(2026, 3, 10, 12, 0)
ROOT = Path(__file__).resolve().parent.parent


def sentiment_record(app, owner: int, label: str, created_at: datetime, scenario: str = "service") -> int:
    return add_analysis(app, owner, sentiment=label, created_at=created_at, scenario=scenario)


def model_result(app, owner: int, created_at: datetime, *, latency_ms: float, model_id: str, scenario="service"):
    """A record with one caption by ``model_id`` that took ``latency_ms``; returns the prediction id."""
    with app.app_context():
        analysis = Analysis(user_id=owner, scenario=scenario, app_version="test", status="done", created_at=created_at)
        caption = CaptionPrediction(model_id=model_id, revision="1", latency_ms=latency_ms, output={"text": "a cat"})
        analysis.predictions.append(caption)
        db.session.add(analysis)
        db.session.commit()
        return caption.id


def decide(app, prediction_id: int, *decisions: tuple[str, object]):
    """Append reviews to a prediction through the engine's ``apply`` (the latest one counts)."""
    with app.app_context():
        prediction = db.session.get(Prediction, prediction_id)
        for decision, value in decisions:
            prediction.apply(Review(reviewer_name="rita", decision=decision, value=value))
        db.session.commit()


@pytest.fixture
def owners(app):
    """alice and bob with sentiment records: alice 2 positive + 1 negative on 03-09, 1 neutral in
    education on 03-10, one 40 days old; bob 5 negatives on 03-09."""
    alice, bob = (client_for(app, name) for name in ("alice", "bob"))
    ids = {name: user_id(app, name) for name in ("alice", "bob")}
    for label in ("positive", "positive", "negative"):
        sentiment_record(app, ids["alice"], label, datetime(2026, 3, 9, 8, 0))
    sentiment_record(app, ids["alice"], "neutral", datetime(2026, 3, 10, 9, 0), scenario="education")
    sentiment_record(app, ids["alice"], "positive", datetime(2026, 1, 29, 9, 0))  # outside both windows
    for _ in range(5):
        sentiment_record(app, ids["bob"], "negative", datetime(2026, 3, 9, 10, 0))
    return {"alice": alice, "bob": bob, **{f"{name}_id": value for name, value in ids.items()}}


# --- The aggregates -------------------------------------------------------------------------------


def test_window_is_the_last_days_with_today_last():
    """A window of 3 days ends today and starts at the first day's midnight, in UTC or in the zone given."""
    days, start = dashboards.window(3, now=NOW)
    assert days == ["2026-03-08", "2026-03-09", "2026-03-10"] and start == datetime(2026, 3, 8)
    days, start = dashboards.window(3, "Asia/Shanghai", now=datetime(2026, 3, 10, 20, 0))  # 04:00 on the 11th there
    assert days == ["2026-03-09", "2026-03-10", "2026-03-11"] and start == datetime(2026, 3, 8, 16, 0)


def test_sentiment_per_day_counts_one_owner_and_fills_empty_days(app, owners):
    """Per day and label, only the owner's results in the window; days without any are zeros."""
    with app.app_context():
        days, counts = dashboards.sentiment_per_day(owners["alice_id"], days=3, now=NOW)
        assert days == ["2026-03-08", "2026-03-09", "2026-03-10"]
        assert counts == {"negative": [0, 1, 0], "neutral": [0, 0, 1], "positive": [0, 2, 0]}
        _days, everyone = dashboards.sentiment_per_day(None, days=3, now=NOW)
        assert everyone["negative"] == [0, 6, 0]


def test_sentiment_counts_the_value_that_counts(app, owners):
    """A corrected sentiment counts as the human label; a rejected one does not count."""
    with app.app_context():
        ids = db.session.scalars(
            db.select(SentimentPrediction.id)
            .where(SentimentPrediction.user_id == owners["alice_id"], SentimentPrediction.final_label == "positive")
            .order_by(SentimentPrediction.id)
        ).all()
    decide(app, ids[0], ("correct", "negative"))
    decide(app, ids[1], ("reject", None))
    with app.app_context():
        _days, counts = dashboards.sentiment_per_day(owners["alice_id"], days=3, now=NOW)
    assert counts["positive"] == [0, 0, 0] and counts["negative"] == [0, 2, 0]


def test_day_bucket_follows_the_time_zone(app, owners):
    """A record at 20:00 UTC on 03-09 is on 03-10 in Shanghai (UTC+8) and on 03-09 in UTC."""
    sentiment_record(app, owners["alice_id"], "neutral", datetime(2026, 3, 9, 20, 0))
    with app.app_context():
        _days, utc = dashboards.sentiment_per_day(owners["alice_id"], days=3, now=NOW)
        days, shanghai = dashboards.sentiment_per_day(owners["alice_id"], days=3, tz="Asia/Shanghai", now=NOW)
    assert utc["neutral"] == [0, 1, 1]
    assert days == ["2026-03-08", "2026-03-09", "2026-03-10"] and shanghai["neutral"] == [0, 0, 2]


def test_unknown_time_zone_is_refused(app):
    """A time-zone name that is not in the tz database raises before any SQL is built."""
    with app.app_context(), pytest.raises(Exception, match="No time zone|Asia/Nowhere"):
        dashboards.day_bucket(Analysis.created_at, "Asia/Nowhere")


def test_sentiment_by_scenario(app, owners):
    """Per scenario and label, in the owner's window only (the 40-day-old record is out of a 30-day window)."""
    with app.app_context():
        found = dashboards.sentiment_by_scenario(owners["alice_id"], days=30, now=NOW)
        everyone = dashboards.sentiment_by_scenario(None, days=90, now=NOW)
    assert found == {
        "service": {"negative": 1, "neutral": 0, "positive": 2},
        "education": {"negative": 0, "neutral": 1, "positive": 0},
    }
    assert everyone["service"] == {"negative": 6, "neutral": 0, "positive": 3}


def test_analyses_per_day_by_scenario(app, owners):
    """Everyone's records per day and scenario; a scenario without records in the window has no series."""
    add_analysis(app, owners["bob_id"], scenario="medical", created_at=datetime(2026, 3, 1, 0, 0))  # out
    with app.app_context():
        days, counts = dashboards.analyses_per_day(None, days=2, now=NOW)
        _days, alice_only = dashboards.analyses_per_day(owners["alice_id"], days=2, now=NOW)
    assert days == ["2026-03-09", "2026-03-10"]
    assert counts == {"education": [0, 1], "service": [8, 0]}
    assert alice_only == {"education": [0, 1], "service": [3, 0]}


def test_model_latency_per_kind_and_model(app, owners):
    """Count, mean and longest model time per (kind, model), over the window; grades (no model) are left out."""
    owner = owners["alice_id"]
    for latency in (100.0, 200.0, 600.0):
        model_result(app, owner, datetime(2026, 3, 9), latency_ms=latency, model_id="org/captioner")
    model_result(app, owner, datetime(2025, 1, 1), latency_ms=9000.0, model_id="org/captioner")  # out of window
    model_result(app, owners["bob_id"], datetime(2026, 3, 9), latency_ms=50.0, model_id="org/other")
    with app.app_context():
        rows = dashboards.model_latency(None, now=NOW)
        alice_only = dashboards.model_latency(owner, now=NOW)
    by_model = {(row.kind, row.model_id): row for row in rows}
    assert by_model["caption", "org/captioner"] == dashboards.Latency("caption", "org/captioner", 3, 300.0, 600.0)
    assert by_model["caption", "org/other"].count == 1
    assert by_model["sentiment", "prism/fake-sentiment"].count == 10  # the fixture's, all within 90 days
    assert {row.model_id for row in alice_only} == {"org/captioner", "prism/fake-sentiment"}


def test_review_outcomes_per_scenario_and_model(app, owners):
    """The latest decision per result, counted per (scenario, model); unreviewed and reopened ones not at all."""
    owner = owners["alice_id"]
    made = [
        model_result(app, owner, datetime(2026, 3, 9), latency_ms=1, model_id="org/captioner") for _ in range(4)
    ]
    medical = model_result(app, owner, datetime(2026, 3, 9), latency_ms=1, model_id="org/captioner", scenario="medical")
    decide(app, made[0], ("accept", None))
    decide(app, made[1], ("reject", None), ("correct", "a dog"))  # the correction counts
    decide(app, made[2], ("accept", None), ("reopen", None))  # back to unreviewed
    decide(app, medical, ("reject", None))
    with app.app_context():
        found = dashboards.review_outcomes(None, now=NOW)
        bobs = dashboards.review_outcomes(owners["bob_id"], now=NOW)
    assert found == {
        ("service", "org/captioner"): {"accepted": 1, "corrected": 1, "rejected": 0},
        ("medical", "org/captioner"): {"accepted": 0, "corrected": 0, "rejected": 1},
    }
    assert bobs == {}


def test_chart_rows_and_emptiness():
    """A chart's table rows pair each label with its value in every series; all zeros is empty."""
    chart = dashboards.Chart(
        id="c",
        kind="bar",
        title="t",
        labels=["a", "b"],
        series=[dashboards.Series("x", "X", [1, 0]), dashboards.Series("y", "Y", [2, 3])],
        label_heading="l",
        value_heading="v",
        empty_message="none",
    )
    assert chart.rows == [("a", [1, 2]), ("b", [0, 3])] and not chart.is_empty
    assert dashboards.Chart(**{**chart.__dict__, "series": [dashboards.Series("x", "X", [0, 0])]}).is_empty


# --- Vendored library -----------------------------------------------------------------------------


def test_vendored_chartjs_matches_the_recorded_sha256():
    """static/vendor/README.md records the SHA-256 of the Chart.js file that is served, and its licence is kept."""
    vendored = ROOT / "static/vendor/chartjs/chart.umd.min.js"
    recorded = re.search(r"`chartjs/chart\.umd\.min\.js`.*?`([0-9a-f]{64})`", (ROOT / "static/vendor/README.md").read_text())
    assert recorded and hashlib.sha256(vendored.read_bytes()).hexdigest() == recorded.group(1)
    assert vendored.read_text(encoding="utf-8").startswith("/*!\n * Chart.js v4.")
    assert "MIT License" in (ROOT / "static/vendor/chartjs/LICENSE.md").read_text()
