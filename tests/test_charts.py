"""Dashboards and charts: the aggregates on known data, who sees whose numbers, the pages' chart
data and tables, and the vendored Chart.js."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from tests.conftest import add_analysis, client_for, user_id
from tests.test_education import homework, post_grade, teacher  # noqa: F401 (fixtures used by name)
from webapp import dashboards
from webapp.extensions import db
from webapp.models import Analysis, CaptionPrediction, Prediction, Review, SentimentPrediction, User
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
    with app.app_context(), pytest.raises(ZoneInfoNotFoundError):
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
    assert list(counts) == ["service", "education"]  # the app's order, as the other charts list scenarios
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
    made = [model_result(app, owner, datetime(2026, 3, 9), latency_ms=1, model_id="org/captioner") for _ in range(4)]
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
    recorded = re.search(
        r"`chartjs/chart\.umd\.min\.js`.*?`([0-9a-f]{64})`", (ROOT / "static/vendor/README.md").read_text()
    )
    assert recorded and hashlib.sha256(vendored.read_bytes()).hexdigest() == recorded.group(1)
    assert vendored.read_text(encoding="utf-8").startswith("/*!\n * Chart.js v4.")
    assert "MIT License" in (ROOT / "static/vendor/chartjs/LICENSE.md").read_text()


# --- Pages ----------------------------------------------------------------------------------------

CHARTJS = "/static/vendor/chartjs/chart.umd.min.js"


def chart_data(page: str, chart_id: str) -> dict:
    """The JSON a page hands to charts.js for ``chart_id``."""
    match = re.search(rf'<script type="application/json" id="{chart_id}-data">(.*?)</script>', page, re.S)
    assert match, f"no data for {chart_id}"
    return json.loads(match.group(1))


def table_rows(page: str, chart_id: str) -> list[list[str]]:
    """The body rows of the chart's table: the row heading, then each cell's text."""
    table = re.search(rf'<table class="records chart-table" id="{chart_id}-table">(.*?)</table>', page, re.S)
    assert table, f"no table for {chart_id}"
    body = table.group(1).split("<tbody>", 1)[1]
    return [re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def assert_no_inline_script(page: str):
    """Every script is a file from this site or a JSON data block (the CSP allows no inline script)."""
    for tag in re.findall(r"<script[^>]*>", page):
        assert re.search(r'src="/static/[^"]+"[^>]* defer', tag) or 'type="application/json"' in tag, tag


@pytest.fixture
def today_records(app):
    """alice: 2 positive and 1 neutral today; bob: 3 negative today. Returns signed-in clients."""
    alice, bob = client_for(app, "alice"), client_for(app, "bob")
    now = utcnow()
    for label in ("positive", "positive", "neutral"):
        sentiment_record(app, user_id(app, "alice"), label, now)
    for _ in range(3):
        sentiment_record(app, user_id(app, "bob"), "negative", now)
    return {"alice": alice, "bob": bob}


def test_dashboard_shows_the_users_own_numbers_as_chart_and_table(today_records):
    """The dashboard's JSON and its tables hold alice's counts only; bob's three negatives appear nowhere."""
    response = today_records["alice"].get("/dashboard")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    per_day = chart_data(page, "sentiment-per-day")
    totals = {series["key"]: sum(series["values"]) for series in per_day["series"]}
    assert totals == {"negative": 0, "neutral": 1, "positive": 2}
    assert len(per_day["labels"]) == dashboards.DAYS_PER_DAY_CHART and per_day["stacked"] is True
    assert table_rows(page, "sentiment-per-day")[-1] == [per_day["labels"][-1], "0", "1", "2"]
    assert table_rows(page, "sentiment-by-scenario") == [["Customer service", "0", "1", "2"]]
    assert 'role="img"' in page and 'aria-label="Sentiment per day, last 30 days.' in page
    assert '<th scope="col">Day</th>' in page and "<caption>Sentiment per day, last 30 days</caption>" in page
    assert f'<script src="{CHARTJS}" defer></script>' in page
    assert_no_inline_script(page)
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    bobs = chart_data(today_records["bob"].get("/dashboard").get_data(as_text=True), "sentiment-per-day")
    assert {series["key"]: sum(series["values"]) for series in bobs["series"]}["negative"] == 3


def test_dashboard_empty_states(app):
    """No records: "No analyses yet" and no chart; records without sentiment: each chart's own empty message."""
    carol = client_for(app, "carol")
    page = carol.get("/dashboard").get_data(as_text=True)
    assert "No analyses yet." in page and "<canvas" not in page and CHARTJS not in page
    add_analysis(app, user_id(app, "carol"), caption="a cat", created_at=utcnow())
    page = carol.get("/dashboard").get_data(as_text=True)
    assert "No sentiment results in the last 30 days." in page and "<canvas" not in page


def test_dashboard_needs_sign_in_and_is_in_the_nav(client, alice):
    """Anonymous visitors are sent to sign in; signed-in pages link the dashboard; only chart pages load Chart.js."""
    assert client.application.test_client().get("/dashboard").status_code == 302
    home = alice.get("/").get_data(as_text=True)
    assert 'href="/dashboard"' in home and CHARTJS not in home


def test_dashboard_survives_chinese_interface(today_records):
    """In Chinese the page and its JSON still render and parse (numbers are not formatted the English way)."""
    alice = today_records["alice"]
    alice.get("/lang/zh")
    page = alice.get("/dashboard").get_data(as_text=True)
    assert 'lang="zh-Hans"' in page
    assert sum(chart_data(page, "sentiment-per-day")["series"][2]["values"]) == 2


def test_admin_overview_charts_everyone(app, today_records, admin_client):
    """The admin overview charts everyone's records, model latency (a CJK model name intact) and review outcomes."""
    caption = model_result(app, user_id(app, "alice"), utcnow(), latency_ms=250.0, model_id="实验室/图像描述")
    decide(app, caption, ("reject", None))
    page = admin_client.get("/admin/").get_data(as_text=True)
    activity = chart_data(page, "activity-per-day")
    assert {series["key"]: sum(series["values"]) for series in activity["series"]} == {"service": 7}
    latency = chart_data(page, "model-latency")
    assert "Caption · 实验室/图像描述" in latency["labels"] and latency["horizontal"] is True
    assert ["Caption · 实验室/图像描述", "250", "250"] in table_rows(page, "model-latency")
    assert table_rows(page, "review-outcomes") == [["Customer service · 实验室/图像描述", "0", "0", "1"]]
    assert f'<script src="{CHARTJS}" defer></script>' in page
    assert_no_inline_script(page)


def test_admin_charts_are_admins_only(today_records):
    """A user asking for the admin overview gets 403 and none of the chart data."""
    response = today_records["alice"].get("/admin/")
    assert response.status_code == 403 and "activity-per-day" not in response.get_data(as_text=True)


def test_admin_overview_empty_states(admin_client):
    """With no records, each admin chart says so instead of drawing an empty chart."""
    page = admin_client.get("/admin/").get_data(as_text=True)
    for message in ("No analyses in the last 30 days.", "No model results in the last 90 days."):
        assert message in page
    assert "No reviewed results in the last 90 days." in page and "<canvas" not in page


def test_teacher_summary_charts_its_own_assignment(app, teacher, homework):  # noqa: F811
    """The summary's score distribution is charted from the same counts as its table, lowest total first;
    another teacher gets 404 and no data."""
    assignment_id, (one, two, _three) = homework["assignment"], homework["submissions"]
    post_grade(teacher, assignment_id, one, {homework["method"]: 4, homework["answer"]: 5})
    post_grade(teacher, assignment_id, two, {homework["method"]: 1, homework["answer"]: 2})
    url = f"/education/assignments/{assignment_id}/summary"
    page = teacher.get(url).get_data(as_text=True)
    data = chart_data(page, "score-distribution")
    assert data["labels"] == [str(total) for total in range(11)]
    assert data["series"][0]["values"] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0]
    table = dict(re.findall(r'<tr><th scope="row">(\d+)</th><td>(\d+)</td>', page))
    assert [int(table[label]) for label in data["labels"]] == data["series"][0]["values"]
    assert 'id="score-distribution-canvas" role="img"' in page and CHARTJS in page
    assert_no_inline_script(page)
    other = client_for(app, "otto", "teacher")
    response = other.get(url)
    assert response.status_code == 404 and "score-distribution" not in response.get_data(as_text=True)


def test_teacher_summary_without_grades_loads_no_chart(teacher, homework):  # noqa: F811
    """Before any grade the summary says so and loads no chart script."""
    page = teacher.get(f"/education/assignments/{homework['assignment']}/summary").get_data(as_text=True)
    assert "Nothing is graded yet" in page and CHARTJS not in page and "<canvas" not in page


def test_dashboards_count_days_in_the_viewers_time_zone(app, admin_client):
    """A record at 17:00 UTC yesterday is today's in Shanghai (UTC+8): alice's dashboard and, for an admin
    whose zone is Shanghai, the activity chart count it under today's local date."""
    alice = client_for(app, "alice")
    now = utcnow()
    shanghai = ZoneInfo("Asia/Shanghai")
    local_today = now.replace(tzinfo=ZoneInfo("UTC")).astimezone(shanghai).date()
    # 1 minute after local midnight in Shanghai, i.e. 16:01 UTC of the day before.
    just_after_midnight = (
        (datetime.combine(local_today, datetime.min.time(), tzinfo=shanghai) + timedelta(minutes=1))
        .astimezone(ZoneInfo("UTC"))
        .replace(tzinfo=None)
    )
    sentiment_record(app, user_id(app, "alice"), "positive", just_after_midnight)
    with app.app_context():
        for name in ("alice", "root"):
            db.session.scalar(db.select(User).where(User.username == name)).time_zone = "Asia/Shanghai"
        db.session.commit()
    page = alice.get("/dashboard").get_data(as_text=True)
    per_day = chart_data(page, "sentiment-per-day")
    assert per_day["labels"][-1] == local_today.isoformat()
    positive = next(series for series in per_day["series"] if series["key"] == "positive")
    assert positive["values"][-1] == 1
    assert "Days are in your time zone, Asia/Shanghai" in page
    activity = chart_data(admin_client.get("/admin/").get_data(as_text=True), "activity-per-day")
    assert activity["labels"][-1] == local_today.isoformat()
    assert sum(series["values"][-1] for series in activity["series"]) == 1
