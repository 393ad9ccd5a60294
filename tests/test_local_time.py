"""Local time: times shown in the viewer's zone (stored in UTC), date filters read in it, refused
filters named; the zone and the language saved on the account (migration 0010)."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from tests.conftest import add_analysis, csrf_token, login, make_user, user_id
from webapp.extensions import db
from webapp.models import User

pytestmark = pytest.mark.both_databases


def set_zone(app, username: str, zone: str | None) -> None:
    with app.app_context():
        db.session.scalar(db.select(User).where(User.username == username)).time_zone = zone
        db.session.commit()


def saved(app, username: str) -> tuple[str | None, str | None]:
    """(time_zone, language) stored on the account."""
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.username == username))
        return user.time_zone, user.language


def listed(body: str) -> list[int]:
    return [int(found) for found in re.findall(r'class="row-link" href="/history/(\d+)[?"]', body)]


def test_utc_plus_8_user_sees_0800_for_a_midnight_utc_record(app, alice):
    """A record stored at 00:00 UTC reads 08:00 for a user in Asia/Shanghai; the machine value stays UTC."""
    set_zone(app, "alice", "Asia/Shanghai")
    record = add_analysis(app, user_id(app, "alice"), created_at=datetime(2026, 3, 1, 0, 0), text="midnight")
    listing = alice.get("/history/").get_data(as_text=True)
    assert '<time datetime="2026-03-01T00:00:00Z" title="Asia/Shanghai, UTC+08:00">2026-03-01 08:00</time>' in listing
    assert "Times are shown in Asia/Shanghai, UTC+08:00." in listing  # the page names its zone
    detail = alice.get(f"/history/{record}").get_data(as_text=True)
    assert ">2026-03-01 08:00:00</time>" in detail


def test_without_a_zone_times_are_utc_and_say_so(app, alice):
    """A user with no zone yet (no JavaScript ran) sees UTC, labelled."""
    add_analysis(app, user_id(app, "alice"), created_at=datetime(2026, 3, 1, 0, 0))
    body = alice.get("/history/").get_data(as_text=True)
    assert ">2026-03-01 00:00</time>" in body and "Times are shown in UTC." in body


def test_date_filter_reads_days_in_the_viewers_zone(app, alice):
    """For a UTC+8 user, from=2026-03-02 includes a record of 2026-03-01T17:00Z (01:00 on the 2nd there)."""
    record = add_analysis(app, user_id(app, "alice"), created_at=datetime(2026, 3, 1, 17, 0))
    assert listed(alice.get("/history/?from=2026-03-02").get_data(as_text=True)) == []  # UTC: still the 1st
    set_zone(app, "alice", "Asia/Shanghai")
    assert listed(alice.get("/history/?from=2026-03-02").get_data(as_text=True)) == [record]
    assert listed(alice.get("/history/?to=2026-03-01").get_data(as_text=True)) == []
    body = alice.get("/history/?from=2026-03-02&to=2026-03-02").get_data(as_text=True)
    assert listed(body) == [record]
    # The form keeps the days asked for and says which zone they are in.
    assert '<input id="f-from" type="date" name="from" value="2026-03-02" aria-describedby="f-zone">' in body
    assert '<input id="f-to" type="date" name="to" value="2026-03-02" aria-describedby="f-zone">' in body
    assert '<p class="help" id="f-zone">Days in Asia/Shanghai, UTC+08:00</p>' in body


def test_export_reads_dates_in_the_viewers_zone(app, alice):
    """The CSV export applies the same local days as the page."""
    set_zone(app, "alice", "Asia/Shanghai")
    record = add_analysis(app, user_id(app, "alice"), created_at=datetime(2026, 3, 1, 17, 0), text="late")
    text = alice.get("/history/export.csv?from=2026-03-02").get_data(as_text=True)
    assert [row["id"] for row in csv.DictReader(io.StringIO(text.lstrip("\ufeff")))] == [str(record)]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=notadate", "From: “notadate” is not a date (YYYY-MM-DD)."),
        ("to=2026-02-30", "To: “2026-02-30” is not a date (YYYY-MM-DD)."),
        ("from=2026-03-05&to=2026-03-01", "The date range ends before it starts: the dates were not applied."),
        ("scenario=cooking", "Scenario: “cooking” is not one of the choices."),
    ],
)
def test_invalid_filters_are_named_not_ignored(app, alice, query, message):
    """A refused filter re-renders the list with a message saying which value was refused (never a 500)."""
    add_analysis(app, user_id(app, "alice"), text="kept")
    response = alice.get(f"/history/?{query}")
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Some filters were not applied:" in body and message in body
    assert "kept" in body  # the refused filter is not applied


def test_export_with_an_invalid_filter_goes_back_to_the_list(alice):
    """An export whose filters were refused exports nothing: it sends the reader to the list that names them."""
    response = alice.get("/history/export.csv?from=notadate")
    assert response.status_code == 302 and response.headers["Location"] == "/history/?from=notadate"


def test_timezone_script_is_included_until_the_account_has_a_zone(app, alice):
    """base.html loads timezone.js (with its save URL and CSRF token) only while the user has no zone."""
    body = alice.get("/history/").get_data(as_text=True)
    assert re.search(
        r'<script src="/static/js/timezone.js" data-save="/account/time-zone" data-csrf="[^"]+" defer>', body
    )
    set_zone(app, "alice", "Europe/Berlin")
    assert "timezone.js" not in alice.get("/history/").get_data(as_text=True)


def test_browser_zone_is_saved_once_and_never_overrides_a_choice(app, alice):
    """The script's POST stores the browser's zone when none is set; a later one changes nothing."""
    token = csrf_token(alice, "/account/")
    assert alice.post("/account/time-zone", data={"time_zone": "Asia/Shanghai", "csrf_token": token}).status_code == 204
    assert saved(app, "alice")[0] == "Asia/Shanghai"
    assert alice.post("/account/time-zone", data={"time_zone": "Europe/Paris", "csrf_token": token}).status_code == 204
    assert saved(app, "alice")[0] == "Asia/Shanghai"


def test_browser_zone_refuses_unknown_names_and_missing_csrf(app, alice):
    """An unknown zone name, or a POST without the CSRF token, is a 400 and saves nothing."""
    token = csrf_token(alice, "/account/")
    assert alice.post("/account/time-zone", data={"time_zone": "Mars/Olympus", "csrf_token": token}).status_code == 400
    assert alice.post("/account/time-zone", data={"time_zone": "Asia/Shanghai"}).status_code == 400
    assert saved(app, "alice")[0] is None


def test_an_unknown_browser_zone_stops_the_script_for_the_session(app, alice):
    """After the server refuses the browser's zone as unknown, pages stop loading timezone.js (which
    would post the same refused name on every page); times stay in UTC."""
    assert "timezone.js" in alice.get("/history/").get_data(as_text=True)
    token = csrf_token(alice, "/account/")
    assert alice.post("/account/time-zone", data={"time_zone": "Mars/Olympus", "csrf_token": token}).status_code == 400
    body = alice.get("/history/").get_data(as_text=True)
    assert "timezone.js" not in body and saved(app, "alice")[0] is None


def test_account_page_changes_zone_and_language(app, alice):
    """The account page's preferences form sets the zone (a select of IANA names) and the language."""
    body = alice.get("/account/").get_data(as_text=True)
    assert '<option value="Asia/Shanghai">Asia/Shanghai</option>' in body
    token = csrf_token(alice, "/account/")
    response = alice.post(
        "/account/preferences", data={"time_zone": "America/New_York", "language": "zh", "csrf_token": token}
    )
    assert response.status_code == 302
    assert saved(app, "alice") == ("America/New_York", "zh")
    assert 'lang="zh-Hans"' in alice.get("/account/").get_data(as_text=True)
    refused = alice.post("/account/preferences", data={"time_zone": "Nowhere", "language": "en", "csrf_token": token})
    assert refused.status_code == 400 and saved(app, "alice")[0] == "America/New_York"


def test_language_switch_is_remembered_on_the_account(app, alice):
    """/lang/zh saves the choice on the signed-in user; signing in elsewhere later uses it."""
    alice.get("/lang/zh?next=/")
    assert saved(app, "alice")[1] == "zh"
    elsewhere = app.test_client()
    assert 'lang="en"' in elsewhere.get("/login").get_data(as_text=True)
    login(elsewhere, "alice")
    assert 'lang="zh-Hans"' in elsewhere.get("/history/").get_data(as_text=True)


def test_language_switch_while_signed_out_changes_no_account(app, client):
    """Switching language before signing in keeps working (session only) and writes no account."""
    make_user(app, "carol")
    assert client.get("/lang/zh?next=/").status_code == 302
    assert saved(app, "carol") == (None, None)


def test_migration_0010_up_and_down(app):
    """0010 adds user.time_zone and user.language and the admin-sort indexes; its downgrade removes them."""
    directory = app.extensions["migrate"].directory

    def schema() -> tuple[set[str], set[str]]:
        inspector = inspect(db.engine)
        return (
            {column["name"] for column in inspector.get_columns("user")},
            {index["name"] for index in inspector.get_indexes("analysis")},
        )

    with app.app_context():
        columns, indexes = schema()
        assert {"time_zone", "language"} <= columns
        assert {"ix_analysis_scenario_created", "ix_analysis_status_created"} <= indexes
        downgrade(directory=directory, revision="0009")
        db.session.remove()
        columns, indexes = schema()
        assert not {"time_zone", "language"} & columns
        assert not {"ix_analysis_scenario_created", "ix_analysis_status_created"} & indexes
        upgrade(directory=directory)
        db.session.remove()
        assert {"time_zone", "language"} <= schema()[0]
