"""Admin area: one guard for every route, all users' history, role changes, and the append-only audit log."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from werkzeug.routing import IntegerConverter

from tests.conftest import add_analysis, audit_rows, client_for, csrf_token, login, make_user, user_id
from webapp.extensions import db
from webapp.models import Analysis, AuditEvent, Review, User


def admin_urls(app, ids: dict) -> list[tuple[str, str]]:
    """(method, path) for every rule under /admin, with ids and format values substituted."""
    adapter = app.url_map.bind("localhost")
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin."):
            continue
        values = {}
        for name in rule.arguments:
            converter = rule._converters[name]
            values[name] = ids[name] if isinstance(converter, IntegerConverter) else "csv"
        method = "POST" if "POST" in rule.methods else "GET"
        found.append((method, adapter.build(rule.endpoint, values, method=method)))
    return found


def prediction_id(app, analysis_id: int, kind: str) -> int:
    with app.app_context():
        return db.session.get(Analysis, analysis_id).prediction(kind).id


def decide(client, analysis_id: int, prediction: int, decision: str, value: str | None = None):
    """Post a review decision with the CSRF token of the record page's form, as a browser would."""
    data = {"csrf_token": csrf_token(client, f"/history/{analysis_id}"), "decision": decision}
    if value is not None:
        data["value"] = value
    return client.post(f"/review/predictions/{prediction}", data=data)


@pytest.fixture
def reviewed(app, alice):
    """Three of alice's positive records: one corrected to negative, one rejected, one left as the AI said."""
    alice_id = user_id(app, "alice")
    records = {name: add_analysis(app, alice_id, text=name, sentiment="positive") for name in ("fixed", "no", "as-is")}
    for name, decision, value in (("fixed", "correct", "negative"), ("no", "reject", None)):
        response = decide(alice, records[name], prediction_id(app, records[name], "sentiment"), decision, value)
        assert response.status_code == 303
    return records


def role_of(app, username: str) -> str:
    with app.app_context():
        return db.session.scalar(db.select(User.role).where(User.username == username))


@pytest.fixture
def ids(app, alice):
    alice_id = user_id(app, "alice")
    return {"user_id": alice_id, "analysis_id": add_analysis(app, alice_id, text="alice's")}


def test_admin_routes_enumerated(app, ids):
    """The url_map enumeration finds the known admin routes (guards the loops below)."""
    paths = {path for _, path in admin_urls(app, ids)}
    assert {"/admin/", "/admin/users", "/admin/analyses", "/admin/audit", "/admin/analyses/export.csv"} <= paths
    assert ("POST", f"/admin/users/{ids['user_id']}/role") in admin_urls(app, ids)


def test_anonymous_is_sent_to_login_for_every_admin_route(app, ids):
    """Every /admin route redirects an anonymous visitor to /login (POSTs carry a valid CSRF token)."""
    anonymous = app.test_client()
    token = csrf_token(anonymous, "/login")
    for method, path in admin_urls(app, ids):
        response = anonymous.open(path, method=method, data={"csrf_token": token} if method == "POST" else None)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login"), path


@pytest.mark.parametrize("role", ["user", "teacher", "clinician"])
def test_non_admin_roles_get_403_for_every_admin_route(app, ids, role):
    """user, teacher and clinician get 403 on every /admin route, and a role POST changes nothing."""
    member = client_for(app, f"member-{role}", role=role)
    token = csrf_token(member, "/account/")
    for method, path in admin_urls(app, ids):
        data = None
        if method == "POST":
            data = {"csrf_token": token, f"u{ids['user_id']}-role": "admin"}
        assert member.open(path, method=method, data=data).status_code == 403, path
    assert role_of(app, "alice") == "user"
    assert audit_rows(app, "history.export") == []
    assert audit_rows(app, "admin.role_change") == []


def test_admin_pages_render(admin_client, ids):
    """An admin can open each admin page."""
    for path in ("/admin/", "/admin/users", "/admin/analyses", "/admin/audit"):
        assert admin_client.get(path).status_code == 200, path


def test_admin_sees_all_users_records_and_filters_by_owner(app, admin_client):
    """The all-history view lists every user's records; ?owner= narrows to one user."""
    alice_id, bob_id = make_user(app, "alice"), make_user(app, "bob")
    alices = add_analysis(app, alice_id, text="from alice")
    bobs = add_analysis(app, bob_id, text="from bob")
    everything = admin_client.get("/admin/analyses").get_data(as_text=True)
    assert "from alice" in everything and "from bob" in everything
    only_bob = admin_client.get("/admin/analyses?owner=bob").get_data(as_text=True)
    assert f'href="/history/{bobs}?owner=bob"' in only_bob
    assert f'href="/history/{alices}' not in only_bob


def test_admin_export_covers_all_users_and_is_audited(app, admin_client):
    """The admin JSON export contains every user's records and writes a history.export row."""
    add_analysis(app, make_user(app, "alice"), text="a")
    add_analysis(app, make_user(app, "bob"), text="b")
    data = json.loads(admin_client.get("/admin/analyses/export.json").get_data(as_text=True))
    assert sorted(item["owner"] for item in data) == ["alice", "bob"]
    rows = audit_rows(app, "history.export")
    assert [(r["actor_name"], r["details"]["scope"]) for r in rows] == [("root", "prism-all-history")]


def test_admin_export_honours_owner_filter(app, admin_client):
    """?owner= narrows the admin CSV export to that user's records."""
    add_analysis(app, make_user(app, "alice"), text="from alice")
    bobs = add_analysis(app, make_user(app, "bob"), text="from bob")
    text = admin_client.get("/admin/analyses/export.csv?owner=bob").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert [(r["id"], r["owner"], r["text"]) for r in rows] == [(str(bobs), "bob", "from bob")]


def test_admin_viewing_another_users_record_is_audited(app, admin_client):
    """An admin may open another user's record; each view writes analysis.view_other."""
    alice_id = make_user(app, "alice")
    analysis_id = add_analysis(app, alice_id, text="alice's note")
    body = admin_client.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "alice&#39;s note" in body
    assert "you are viewing as admin; this view is audited" in body
    assert "Delete record" not in body  # admins audit, they do not delete
    rows = audit_rows(app, "analysis.view_other")
    assert [(r["actor_name"], r["target_id"], r["details"]) for r in rows] == [
        ("root", str(analysis_id), {"owner_id": alice_id, "owner": "alice", "part": "record"})
    ]


def test_admin_cannot_review_another_users_record(app, admin_client):
    """Admins audit: another user's record page has no review form, and a review POST is 403 and records nothing."""
    analysis_id = add_analysis(app, make_user(app, "alice"), text="alice's", sentiment="positive")
    prediction = prediction_id(app, analysis_id, "sentiment")
    body = admin_client.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert f'id="prediction-{prediction}"' in body
    assert "/review/predictions/" not in body and 'name="decision"' not in body
    token = csrf_token(admin_client, "/account/")
    response = admin_client.post(
        f"/review/predictions/{prediction}", data={"csrf_token": token, "decision": "correct", "value": "negative"}
    )
    assert response.status_code == 403
    with app.app_context():
        assert db.session.scalars(db.select(Review)).all() == []
        assert db.session.get(Analysis, analysis_id).prediction("sentiment").review_state == "unreviewed"
    assert audit_rows(app, "review.record") == []


def test_admin_dashboard_counts_the_sentiment_that_counts(admin_client, reviewed):
    """The dashboard's sentiment totals use the human value: a correction moves a record, a rejection removes it."""
    body = admin_client.get("/admin/").get_data(as_text=True)
    counts = dict(re.findall(r'sentiment-(\w+)-text">(\d+)</span>', body))
    assert counts == {"negative": "1", "neutral": "0", "positive": "1"}


def test_admin_analyses_filter_on_reviews_and_show_the_value_that_counts(app, admin_client, reviewed):
    """/admin/analyses filters by review state and by the counted sentiment, and shows the human value."""
    corrected = admin_client.get("/admin/analyses?review=corrected").get_data(as_text=True)
    assert re.findall(r'href="/history/(\d+)[?"]', corrected) == [str(reviewed["fixed"])]
    assert 'class="sentiment sentiment-negative"' in corrected and "✓ human" in corrected
    negative = admin_client.get("/admin/analyses?sentiment=negative&owner=alice").get_data(as_text=True)
    assert re.findall(r'href="/history/(\d+)[?"]', negative) == [str(reviewed["fixed"])]
    unreviewed = admin_client.get("/admin/analyses?review=unreviewed").get_data(as_text=True)
    assert re.findall(r'href="/history/(\d+)[?"]', unreviewed) == [str(reviewed["as-is"])]


def test_admin_csv_export_carries_reviews(app, admin_client, reviewed):
    """The admin CSV gives each record's counted sentiment, the reviewer, and the AI original beside it."""
    text = admin_client.get("/admin/analyses/export.csv?owner=alice").get_data(as_text=True)
    rows = {r["text"]: r for r in csv.DictReader(io.StringIO(text.lstrip("\ufeff")))}
    assert {name: (r["sentiment"], r["sentiment_ai"], r["sentiment_review"]) for name, r in rows.items()} == {
        "fixed": ("negative", "positive", "corrected"),
        "no": ("", "positive", "rejected"),
        "as-is": ("positive", "positive", "unreviewed"),
    }
    assert [rows[name]["sentiment_reviewer"] for name in ("fixed", "no", "as-is")] == ["alice", "alice", ""]
    assert [rows[name]["sentiment_human_confirmed"] for name in ("fixed", "no", "as-is")] == ["True", "False", "False"]


def test_admin_cannot_delete_another_users_record(app, admin_client):
    """Deletion is owner-only: an admin's delete POST is 404 and the record stays."""
    analysis_id = add_analysis(app, make_user(app, "alice"), text="keep")
    token = csrf_token(admin_client, "/account/")
    assert admin_client.post(f"/history/{analysis_id}/delete", data={"csrf_token": token}).status_code == 404
    with app.app_context():
        assert db.session.get(Analysis, analysis_id) is not None


def _set_role(client, target_id: int, role: str):
    token = csrf_token(client, "/account/")
    return client.post(
        f"/admin/users/{target_id}/role", data={f"u{target_id}-csrf_token": token, f"u{target_id}-role": role}
    )


def test_role_change_is_applied_and_audited(app, admin_client):
    """An admin changes another user's role; admin.role_change records from/to."""
    alice_id = make_user(app, "alice")
    response = _set_role(admin_client, alice_id, "clinician")
    assert response.status_code == 302
    assert role_of(app, "alice") == "clinician"
    rows = audit_rows(app, "admin.role_change")
    assert [(r["actor_name"], r["target_id"], r["details"]["from"], r["details"]["to"]) for r in rows] == [
        ("root", str(alice_id), "user", "clinician")
    ]
    assert "alice is now clinician." in admin_client.get("/admin/users").get_data(as_text=True)


def test_role_form_on_users_page_round_trips(app, admin_client):
    """The users page renders a prefixed role form per user whose token the role POST accepts."""
    alice_id = make_user(app, "alice")
    body = admin_client.get("/admin/users").get_data(as_text=True)
    token = re.search(rf'name="u{alice_id}-csrf_token" type="hidden" value="([^"]+)"', body).group(1)
    response = admin_client.post(
        f"/admin/users/{alice_id}/role", data={f"u{alice_id}-csrf_token": token, f"u{alice_id}-role": "teacher"}
    )
    assert response.status_code == 302
    assert role_of(app, "alice") == "teacher"


def test_admin_cannot_change_own_role(app, admin_client):
    """An admin's own role cannot be changed through the form."""
    response = _set_role(admin_client, user_id(app, "root"), "user")
    assert response.status_code == 302
    assert role_of(app, "root") == "admin"
    assert audit_rows(app, "admin.role_change") == []
    assert "You cannot change your own role" in admin_client.get("/admin/users").get_data(as_text=True)


def test_invalid_role_is_rejected(app, admin_client):
    """A role outside the allowed list is refused and nothing changes."""
    alice_id = make_user(app, "alice")
    _set_role(admin_client, alice_id, "superuser")
    assert role_of(app, "alice") == "user"
    assert audit_rows(app, "admin.role_change") == []
    assert "Choose one of the listed roles." in admin_client.get("/admin/users").get_data(as_text=True)


def test_role_change_for_missing_user_is_404(admin_client):
    """Changing the role of a user id that does not exist is 404."""
    assert _set_role(admin_client, 424242, "teacher").status_code == 404


def test_promoted_user_gains_admin_access(app, admin_client):
    """After promotion to admin the user's next request passes the admin guard."""
    alice = client_for(app, "alice")
    assert alice.get("/admin/").status_code == 403
    _set_role(admin_client, user_id(app, "alice"), "admin")
    assert alice.get("/admin/").status_code == 200


def test_audit_log_lists_and_filters_by_action(app, admin_client):
    """The audit page lists events newest first and filters by action and by actor."""
    make_user(app, "alice")
    login(app.test_client(), "alice", "wrong password!")
    login(app.test_client(), "alice")
    everything = admin_client.get("/admin/audit").get_data(as_text=True)
    assert "<code>auth.login_failed</code>" in everything and "<code>auth.login</code>" in everything
    failed_only = admin_client.get("/admin/audit?action=auth.login_failed").get_data(as_text=True)
    assert "<code>auth.login_failed</code>" in failed_only
    assert "<code>auth.login</code>" not in failed_only
    assert "username=alice" in failed_only
    by_actor = admin_client.get("/admin/audit?actor=alice").get_data(as_text=True)
    assert "<code>auth.login</code>" in by_actor and "<code>auth.login_failed</code>" not in by_actor


def test_audit_log_escapes_details(app, admin_client):
    """Attacker-controlled details (a login username) are HTML-escaped on the audit page."""
    login(app.test_client(), "<img src=x onerror=alert(1)>", "whatever123")
    body = admin_client.get("/admin/audit?action=auth.login_failed").get_data(as_text=True)
    assert "<img src=x" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body


@pytest.mark.both_databases
@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_event SET action = 'tampered' WHERE id = :id", "DELETE FROM audit_event WHERE id = :id"],
    ids=["update", "delete"],
)
def test_audit_rows_are_append_only(app, admin_client, statement):
    """Raw UPDATE or DELETE on audit_event is aborted by the trigger and the row is unchanged."""
    [first] = audit_rows(app, "auth.login")
    with app.app_context():
        with pytest.raises(DatabaseError, match="append-only"):  # SQLite: IntegrityError; PostgreSQL: its RAISE
            db.session.execute(text(statement), {"id": first["id"]})
        db.session.rollback()
    with app.app_context():
        event = db.session.get(AuditEvent, first["id"])
        assert event is not None and event.action == "auth.login"


def test_audit_targets_read_as_usernames(app, admin_client):
    """Issue #9: a target account reads as its username (linking to its own audit rows), not "User #2",
    on the audit page and the overview."""
    alice_id = make_user(app, "alice")
    _set_role(admin_client, alice_id, "teacher")
    for page in (admin_client.get("/admin/audit"), admin_client.get("/admin/")):
        body = page.get_data(as_text=True)
        assert f"User #{alice_id}" not in body
        assert '<a href="/admin/audit?actor=alice">alice</a>' in body
