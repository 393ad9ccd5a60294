"""Issue #8, finding 5: no file without its row and no row without its file. ``manage.py check`` lists
what a crash left behind, ``--reap`` (and every worker at start-up) removes orphaned files, and a
record's image is removed only after its deletion is committed."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy.orm import Session

from tests.conftest import client_for, csrf_token, png_bytes, record_id, submit
from webapp import integrity
from webapp.extensions import db
from webapp.models import Analysis
from webapp.storage import get_storage
from webapp.uploads import image_key, validate_image

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 40_000_000}


def _crash_after_storing(app, color=(1, 2, 3), age_minutes: int = 60) -> str:
    """What a request killed between storing its upload and committing its row leaves: a file alone."""
    image = validate_image(png_bytes(color=color), "lost.png", **LIMITS)
    with app.app_context():
        get_storage().put(image.storage_key, image.data)
    path = Path(app.config["UPLOAD_FOLDER"]) / image.storage_key
    then = time.time() - age_minutes * 60
    os.utime(path, (then, then))
    return image.storage_key


def test_check_lists_orphans_and_reap_removes_only_the_old_ones(app, runner):
    alice = client_for(app, "alice")
    kept = record_id(submit(alice, text=None, image=png_bytes(color=(9, 9, 9))))
    old_orphan = _crash_after_storing(app)
    in_flight = _crash_after_storing(app, color=(4, 5, 6), age_minutes=1)  # an upload not committed yet
    leftover = Path(app.config["UPLOAD_FOLDER"]) / "ab" / ".upload-k2j3h4"  # a write that never finished
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half an image")
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))

    with app.app_context():
        report = integrity.check()
    assert (report.files, report.recent_unreferenced) == (4, 1)
    assert report.orphans == sorted([old_orphan, "ab/.upload-k2j3h4"])
    result = runner.invoke(args=["check"])
    assert result.exit_code == 1
    assert f"ORPHAN FILE: {old_orphan}" in result.output and "1 newer file(s) without a record yet" in result.output

    result = runner.invoke(args=["check", "--reap"])
    assert result.exit_code == 0 and "Removed 2 file(s) no record points to." in result.output
    stored = {key for key, _ in _keys(app)}
    assert old_orphan not in stored and in_flight in stored and "ab/.upload-k2j3h4" not in stored
    assert alice.get(f"/history/{kept}/image").status_code == 200  # the record's own image stays


def _keys(app):
    with app.app_context():
        return list(get_storage().keys())


def test_a_record_whose_file_is_missing_is_reported_not_fixed(app, runner):
    alice = client_for(app, "alice")
    analysis_id = record_id(submit(alice, text=None, image=png_bytes()))
    with app.app_context():
        analysis = db.session.get(Analysis, analysis_id)
        key = image_key(analysis.image_sha256, analysis.image_format)
        get_storage().delete(key)
    result = runner.invoke(args=["check", "--reap"])
    assert result.exit_code == 1 and f"MISSING FILE: {key} (a record points to it)" in result.output
    with app.app_context():
        assert db.session.get(Analysis, analysis_id) is not None


def test_workers_reap_at_start_up(app):
    orphan = _crash_after_storing(app)
    integrity.reap_in_background(app).join(timeout=30)
    assert orphan not in {key for key, _ in _keys(app)}


def test_a_clean_database_passes_and_a_broken_foreign_key_does_not(app, runner):
    client_for(app, "alice")
    result = runner.invoke(args=["check"])
    assert result.exit_code == 0 and "Integrity OK." in result.output
    # A plain sqlite3 connection enforces no foreign keys (Prism's turn them on): the forgery goes in.
    with sqlite3.connect(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")) as connection:
        connection.execute("INSERT INTO batch (user_id, scenario, created_at) VALUES (999, 'service', '2026-01-01')")
    result = runner.invoke(args=["check"])
    assert result.exit_code == 1 and "DATABASE: foreign key: batch row" in result.output


def test_an_image_is_removed_only_after_its_deletion_is_committed(app, monkeypatch):
    """Before, the file went first: a failed commit left a record without its image."""
    alice = client_for(app, "alice")
    analysis_id = record_id(submit(alice, text=None, image=png_bytes(color=(7, 7, 7))))
    with app.app_context():
        storage_class = type(get_storage())
    events: list[str] = []
    commit, delete = Session.commit, storage_class.delete

    def tracking_commit(self):
        events.append("commit")
        return commit(self)

    def tracking_delete(self, key):
        events.append("delete file")
        return delete(self, key)

    token = csrf_token(alice, f"/history/{analysis_id}")
    monkeypatch.setattr(Session, "commit", tracking_commit)
    monkeypatch.setattr(storage_class, "delete", tracking_delete)
    assert alice.post(f"/history/{analysis_id}/delete", data={"csrf_token": token}).status_code == 302
    assert events.count("delete file") == 1 and events.index("commit") < events.index("delete file")
    assert _keys(app) == []
