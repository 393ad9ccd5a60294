"""An audit that reads well: one row per page an admin opens (not one per thumbnail or status poll),
naming owners by username; /admin/audit filtered by actor, action and local days."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from tests.conftest import audit_rows, client_for, png_bytes, record_id, submit
from webapp import audit
from webapp.audit import verify_chain
from webapp.extensions import db
from webapp.models import User

pytestmark = pytest.mark.both_databases


def thumbnails(body: str) -> list[str]:
    return re.findall(r'<img class="thumb" src="(/history/\d+/image)"', body)


@pytest.fixture
def pictures(app):
    """Three of alice's records with images, submitted through the real form."""
    clinician = client_for(app, "alice", role="clinician")
    return [record_id(submit(clinician, "medical", text=None, image=png_bytes(color=(n, 40, 40)))) for n in range(3)]


def test_admin_listing_writes_one_row_for_the_page_and_none_per_thumbnail(app, admin_client, pictures):
    """An admin's "All history" page with N thumbnails adds one audit row naming the N records and their
    owner; fetching the thumbnails adds none."""
    before = len(audit_rows(app))
    body = admin_client.get("/admin/analyses").get_data(as_text=True)
    images = thumbnails(body)
    assert len(images) == 3
    for url in images:
        assert admin_client.get(url).status_code == 200
    rows = audit_rows(app)[before:]
    assert [(row["action"], row["actor_name"]) for row in rows] == [("history.list_other", "root")]
    assert sorted(rows[0]["details"]["ids"]) == sorted(pictures)
    assert rows[0]["details"]["owners"] == ["alice"] and rows[0]["details"]["page"] == 1
    with app.app_context():
        assert verify_chain().ok


def test_each_page_an_admin_opens_is_one_row(app, admin_client, pictures):
    """Opening the list twice (two page views) writes two rows, still none for the images."""
    before = len(audit_rows(app))
    for _ in range(2):
        for url in thumbnails(admin_client.get("/admin/analyses").get_data(as_text=True)):
            admin_client.get(url)
    assert [row["action"] for row in audit_rows(app)[before:]] == ["history.list_other"] * 2


def test_admin_listing_of_only_own_records_writes_nothing(app, admin_client):
    """A page showing only the admin's own records reads nobody else's: no row."""
    admin = client_for(app, "boss", role="admin")
    record_id(submit(admin, "service", text="mine"))
    before = len(audit_rows(app))
    admin.get("/admin/analyses?owner=boss")
    assert audit_rows(app)[before:] == []


def test_record_opened_directly_is_audited_once_with_its_image_and_status(app, admin_client, pictures):
    """An admin opening one record writes one row (naming the owner); the page's image and status requests add none."""
    before = len(audit_rows(app))
    body = admin_client.get(f"/history/{pictures[0]}").get_data(as_text=True)
    assert f'src="/history/{pictures[0]}/image"' in body
    assert admin_client.get(f"/history/{pictures[0]}/image").status_code == 200
    assert admin_client.get(f"/history/{pictures[0]}/status").status_code == 200
    rows = audit_rows(app)[before:]
    assert [(row["action"], row["target_id"], row["details"]["part"], row["details"]["owner"]) for row in rows] == [
        ("analysis.view_other", str(pictures[0]), "record", "alice")
    ]


def test_image_fetched_without_its_page_is_still_audited(app, pictures):
    """An image URL opened in a session that never saw an audited page naming it writes its own row."""
    other_admin = client_for(app, "auditor", role="admin")
    before = len(audit_rows(app))
    assert other_admin.get(f"/history/{pictures[1]}/image").status_code == 200
    rows = audit_rows(app)[before:]
    assert [(row["action"], row["target_id"], row["details"]["part"]) for row in rows] == [
        ("analysis.view_other", str(pictures[1]), "image")
    ]


def test_a_listing_covers_only_the_records_it_showed(app, admin_client, pictures):
    """After a filtered listing, an image of a record the page did not show is audited."""
    app.config["PRISM_PAGE_SIZE"] = 1
    body = admin_client.get("/admin/analyses").get_data(as_text=True)
    shown = {int(n) for n in re.findall(r"/history/(\d+)/image", body)}
    hidden = next(n for n in pictures if n not in shown)
    before = len(audit_rows(app))
    admin_client.get(f"/history/{hidden}/image")
    assert [row["details"]["part"] for row in audit_rows(app)[before:]] == ["image"]


# --- /admin/audit filters ----------------------------------------------------------------------------


def listed_actions(body: str) -> list[str]:
    return re.findall(r"<td><code>([\w.]+)</code></td>", body)


def listed_actors(body: str) -> list[str]:
    return re.findall(r"</time></td>\s*<td>([^<]+)</td>", body)


def test_audit_filters_by_actor_ignoring_case(app, admin_client):
    """?actor= matches the username whatever its case."""
    client_for(app, "Alice")
    body = admin_client.get("/admin/audit?actor=alice").get_data(as_text=True)
    assert set(listed_actors(body)) == {"Alice"}
    assert set(listed_actions(body)) == {"auth.login"}


def test_audit_filters_by_action_from_a_select_of_known_actions(app, admin_client):
    """?action= keeps one action; the select lists every known action."""
    client_for(app, "alice")
    body = admin_client.get("/admin/audit?action=auth.login").get_data(as_text=True)
    assert set(listed_actions(body)) == {"auth.login"} and len(listed_actions(body)) == 2  # root, alice
    assert '<option value="history.list_other"' in body


def add_audit_rows(app, actor: str, at: datetime, count: int = 1) -> None:
    """``count`` sealed audit rows by ``actor`` stamped ``at`` (UTC), as if written then."""
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.username == actor))
        for _ in range(count):
            audit.record(audit.HISTORY_EXPORTED, actor=user).created_at = at
        db.session.commit()


def test_audit_filters_by_days_in_the_viewers_zone(app, admin_client):
    """For an admin at UTC+8, from=2026-03-02 includes a row of 2026-03-01T17:00Z (01:00 on the 2nd there)."""
    add_audit_rows(app, "root", datetime(2026, 3, 1, 17, 0))
    assert listed_actions(admin_client.get("/admin/audit?from=2026-03-02&to=2026-03-02").get_data(as_text=True)) == []
    with app.app_context():
        db.session.scalar(db.select(User).where(User.username == "root")).time_zone = "Asia/Shanghai"
        db.session.commit()
    body = admin_client.get("/admin/audit?from=2026-03-02&to=2026-03-02").get_data(as_text=True)
    assert listed_actions(body) == ["history.export"]
    assert ">2026-03-02 01:00:00</time>" in body
    # The form keeps the days asked for and says which zone they are in.
    assert '<input id="a-from" type="date" name="from" value="2026-03-02" aria-describedby="a-zone">' in body
    assert '<input id="a-to" type="date" name="to" value="2026-03-02" aria-describedby="a-zone">' in body
    assert '<p class="help" id="a-zone">Days in Asia/Shanghai, UTC+08:00</p>' in body
    assert listed_actions(admin_client.get("/admin/audit?to=2026-03-01").get_data(as_text=True)) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=notadate", "“notadate” is not a date (YYYY-MM-DD)."),
        ("from=2026-03-05&to=2026-03-01", "The date range ends before it starts: the dates were not applied."),
        ("action=auth.teleport", "“auth.teleport” is not one of the actions listed."),
    ],
)
def test_audit_refused_filters_are_named(admin_client, query, message):
    """A malformed date, a reversed range or an unknown action re-renders the log with a message, never a 500."""
    response = admin_client.get(f"/admin/audit?{query}")
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and message in body
    assert "auth.login" in listed_actions(body)  # the refused filter was not applied


def test_audit_pages_keep_the_filters(app, admin_client):
    """Page links of a filtered audit log carry actor, action and dates."""
    add_audit_rows(app, "root", datetime(2026, 3, 1, 12, 0), count=51)
    body = admin_client.get("/admin/audit?actor=root&action=history.export&from=2026-03-01").get_data(as_text=True)
    assert len(listed_actions(body)) == 50
    assert 'href="/admin/audit?page=2&amp;action=history.export&amp;actor=root&amp;from=2026-03-01"' in body
    with app.app_context():
        assert verify_chain().ok


def test_admin_reading_an_assignment_is_one_row_with_its_thumbnails(app, admin_client):
    """An admin opening a teacher's assignment page writes its one row; the submissions' thumbnails add none."""
    from tests.test_education import create_assignment, create_rubric, rubric_ids, upload

    teacher = client_for(app, "tina", role="teacher")
    assert create_rubric(teacher).status_code == 302
    assignment_id = record_id(create_assignment(teacher, rubric_ids(app)[0]))
    files = [(png_bytes(color=(n, 10, 10)), f"{n}.png") for n in (10, 20)]
    assert upload(teacher, assignment_id, files).status_code == 302
    before = len(audit_rows(app))
    body = admin_client.get(f"/education/assignments/{assignment_id}").get_data(as_text=True)
    images = thumbnails(body)
    assert len(images) == 2
    for url in images:
        assert admin_client.get(url).status_code == 200
    assert [row["action"] for row in audit_rows(app)[before:]] == ["education.view_other"]


def test_audited_listing_does_not_reload_its_rows(app, admin_client):
    """Writing the listing's audit row costs the same statements for 2 records as for 6 (no row reloaded after it)."""
    from tests.conftest import add_analysis, make_user, queries_during

    alice = make_user(app, "alice")
    for _ in range(2):
        add_analysis(app, alice, text="a", caption="a cat", sentiment="positive")
    two = queries_during(app, lambda: admin_client.get("/admin/analyses"))
    for _ in range(4):
        add_analysis(app, alice, text="a", caption="a cat", sentiment="positive")
    six = queries_during(app, lambda: admin_client.get("/admin/analyses"))
    assert two == six


def test_the_sessions_note_of_audited_rows_stays_small(app):
    """The note keeps the newest AUDITED_MAX ids per model, so the session cookie cannot grow without bound."""
    from flask import session

    from webapp.access import AUDITED_KEY, AUDITED_MAX, note_audited
    from webapp.models import Analysis

    with app.test_request_context():
        note_audited(Analysis, list(range(AUDITED_MAX)))
        note_audited(Analysis, [5, 1000])
        noted = session[AUDITED_KEY]["Analysis"]
        assert len(noted) == AUDITED_MAX and noted[-2:] == [5, 1000] and 0 not in noted
