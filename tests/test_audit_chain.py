"""Issue #8, finding 4: a sealed audit chain names the first modified, deleted, inserted or reordered
row; init-db restores dropped triggers; anonymous failures cannot flood the table."""

# ruff: noqa: S608 (these tests write SQL by hand, as someone with the database would)

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from tests.conftest import audit_rows, client_for, submit
from webapp import audit, ratelimit
from webapp.extensions import db
from webapp.models import AuditEvent

pytestmark = pytest.mark.both_databases


def _history(app) -> list[int]:
    """A few audited actions (registration, login, analyses, a logout); returns the audit row ids."""
    alice = client_for(app, "alice")
    for words in ("Where is my parcel?", "Thanks, great help"):
        submit(alice, text=words)
    client_for(app, "bob")
    with app.app_context():
        return list(db.session.scalars(db.select(AuditEvent.id).order_by(AuditEvent.id)))


def _tamper(app, *statements: str) -> None:
    """What an attacker with the database can do: drop the triggers, then change rows."""
    with app.app_context():
        postgresql = db.engine.dialect.name == "postgresql"
        for name in audit.APPEND_ONLY_TRIGGERS:
            db.session.execute(text(f"DROP TRIGGER {name}" + (" ON audit_event" if postgresql else "")))
        for statement in statements:
            db.session.execute(text(statement))
        db.session.commit()


def _verify(app) -> audit.ChainReport:
    with app.app_context():
        return audit.verify_chain()


def test_every_row_is_sealed_and_the_chain_verifies(app, runner):
    ids = _history(app)
    assert len(ids) >= 4  # two logins, two analyses
    with app.app_context():
        rows = [
            {"prev_hash": row.prev_hash, "row_hash": row.row_hash}
            for row in db.session.scalars(db.select(AuditEvent).order_by(AuditEvent.id))
        ]
    assert all(len(row["row_hash"]) == 64 for row in rows)
    assert [row["prev_hash"] for row in rows[1:]] == [row["row_hash"] for row in rows[:-1]]
    assert rows[0]["prev_hash"] == audit.GENESIS
    report = _verify(app)
    assert (report.ok, report.rows, report.head_id, report.head_hash) == (True, len(ids), ids[-1], rows[-1]["row_hash"])
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert f"Chain intact. Head: row #{ids[-1]} {rows[-1]['row_hash']}" in result.output


def test_a_modified_row_is_named(app, runner):
    ids = _history(app)
    _tamper(app, f"UPDATE audit_event SET actor_name = 'mallory' WHERE id = {ids[2]}")
    assert _verify(app).problem == f"row #{ids[2]}: its fields do not match its seal (modified, or forged)"
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert "MISSING TRIGGERS: audit_event_no_update, audit_event_no_delete" in result.output
    assert f"TAMPERED: row #{ids[2]}" in result.output


def test_a_deleted_row_is_named_by_the_row_after_it(app):
    ids = _history(app)
    _tamper(app, f"DELETE FROM audit_event WHERE id = {ids[1]}")
    expected = f"row #{ids[2]}: does not follow row #{ids[0]} (a row before it was deleted, or rows reordered)"
    assert _verify(app).problem == expected


def test_the_first_rows_deleted_are_noticed(app):
    ids = _history(app)
    _tamper(app, f"DELETE FROM audit_event WHERE id = {ids[0]}")
    assert _verify(app).problem == f"row #{ids[1]}: the chain does not start here (its first rows were deleted)"


def test_a_forged_back_dated_insert_is_named(app):
    """The finding's forged back-dated INSERT, with a seal made up and without one."""
    ids = _history(app)
    columns = "(created_at, action, actor_name, prev_hash, row_hash)"
    _tamper(
        app,
        f"INSERT INTO audit_event {columns} VALUES ('2020-01-01 00:00:00', 'auth.login', 'mallory', "
        f"(SELECT row_hash FROM audit_event WHERE id = {ids[-1]}), '{'ab' * 32}')",
    )
    assert _verify(app).problem == f"row #{ids[-1] + 1}: its fields do not match its seal (modified, or forged)"


def test_an_unsealed_insert_after_the_chain_began_is_named(app):
    ids = _history(app)
    _tamper(app, "INSERT INTO audit_event (created_at, action) VALUES ('2020-01-01 00:00:00', 'auth.login')")
    expected = f"row #{ids[-1] + 1}: not sealed, after the chain began (inserted around the app)"
    assert _verify(app).problem == expected


def test_reordered_rows_are_named(app):
    """Swapping two rows' contents, seals included, breaks the chain where the first one now stands."""
    ids = _history(app)
    first, second = ids[1], ids[3]
    fields = ("created_at", "actor_id", "actor_name", "action", "target_type", "target_id", "ip_address")
    fields += ("details", "prev_hash", "row_hash")
    with app.app_context():
        rows = {
            row_id: db.session.execute(text(f"SELECT {', '.join(fields)} FROM audit_event WHERE id = {row_id}")).one()
            for row_id in (first, second)
        }
    sets = ", ".join(f"{field} = :{field}" for field in fields)
    _tamper(app)
    with app.app_context():
        for row_id, other in ((first, second), (second, first)):
            values = dict(zip(fields, rows[other], strict=True))
            if isinstance(values["details"], dict):  # PostgreSQL's JSON comes back parsed
                values["details"] = json.dumps(values["details"])
            db.session.execute(text(f"UPDATE audit_event SET {sets} WHERE id = {row_id}"), values)
        db.session.commit()
    expected = f"row #{first}: does not follow row #{ids[0]} (a row before it was deleted, or rows reordered)"
    assert _verify(app).problem == expected


def test_rows_from_before_the_chain_are_counted_not_failed(app):
    with app.app_context():
        legacy = "INSERT INTO audit_event (created_at, action) VALUES ('2025-01-01 00:00:00', 'auth.login')"
        db.session.execute(text(legacy))
        db.session.commit()
    ids = _history(app)
    report = _verify(app)
    assert (report.ok, report.unsealed_before_chain, report.rows) == (True, 1, len(ids))


def test_init_db_restores_dropped_triggers(app):
    """Before, re-running init-db left the dropped triggers dropped."""
    _history(app)
    _tamper(app)
    with app.app_context():
        assert audit.missing_triggers() == list(audit.APPEND_ONLY_TRIGGERS)
        assert audit.restore_triggers() == list(audit.APPEND_ONLY_TRIGGERS)
        assert audit.missing_triggers() == []
        with pytest.raises(Exception, match="append-only"):
            db.session.execute(text("UPDATE audit_event SET action = 'x'"))
        db.session.rollback()


def test_a_flood_of_bad_tokens_writes_a_bounded_number_of_rows(app):
    """Before: 3,000 anonymous bad-token requests added 3,000 rows. Now 10 a minute per address, and the
    next row written says how many were left out."""
    client = app.test_client()
    answers = [
        client.get("/api/v1/analyses", headers={"Authorization": f"Bearer bad-{n}"}).status_code for n in range(40)
    ]
    assert answers == [401] * 40
    assert len(audit_rows(app, "api.auth_failed")) == 10
    app.extensions[ratelimit.EXTENSION_KEY] = ratelimit.RateLimits(app.config)  # the next minute
    client.get("/api/v1/analyses", headers={"Authorization": "Bearer bad-again"})
    rows = audit_rows(app, "api.auth_failed")
    assert len(rows) == 11 and rows[-1]["details"]["suppressed"] == 30
    assert _verify(app).ok
