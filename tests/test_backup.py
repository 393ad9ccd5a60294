"""Issue #8: ``manage.py backup`` → damage → ``manage.py restore`` brings back the rows, the files,
a clean integrity check and an intact audit chain; a damaged backup is refused before anything is
touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import client_for, csrf_token, png_bytes, record_id, submit
from webapp import audit
from webapp.extensions import db
from webapp.models import Analysis, AuditEvent, Prediction

pytestmark = pytest.mark.both_databases


def _counts(app) -> dict[str, int]:
    with app.app_context():
        found = {
            model.__name__: db.session.scalar(db.select(db.func.count()).select_from(model))
            for model in (Analysis, Prediction, AuditEvent)
        }
        db.session.rollback()
        return found


def _backup(runner, tmp_path) -> Path:
    result = runner.invoke(args=["backup", "--to", str(tmp_path / "backups")])
    assert result.exit_code == 0, result.output
    [target] = (tmp_path / "backups").iterdir()
    assert result.output.strip() == f"Backup written to {target}"
    return target


def test_backup_damage_restore(app, runner, tmp_path):
    alice = client_for(app, "alice")
    inputs = (("Where is my parcel?", (200, 10, 10)), ("Thanks, great help", (10, 10, 200)))
    ids = [record_id(submit(alice, text=words, image=png_bytes(color=color))) for words, color in inputs]
    images = {analysis_id: alice.get(f"/history/{analysis_id}/image").data for analysis_id in ids}
    before = _counts(app)
    with app.app_context():
        head = audit.verify_chain()
    target = _backup(runner, tmp_path)
    assert (target / "manifest.json").is_file() and len(list((target / "uploads").rglob("*.png"))) == 2

    # Damage: one record deleted through the app (its image goes too), the other image overwritten,
    # and rows removed behind the app's back.
    alice.post(f"/history/{ids[0]}/delete", data={"csrf_token": csrf_token(alice, f"/history/{ids[0]}")})
    with app.app_context():
        second = db.session.get(Analysis, ids[1])
        stored = Path(app.config["UPLOAD_FOLDER"]) / f"{second.image_sha256[:2]}/{second.image_sha256}.png"
        db.session.execute(text("DELETE FROM prediction"))
        db.session.commit()
    stored.write_bytes(b"not an image any more")
    assert _counts(app) != before

    result = runner.invoke(args=["restore", str(target), "--yes"])
    assert result.exit_code == 0, result.output
    assert "Restored; 2 file(s) written back." in result.output
    assert "Integrity: OK; audit chain: intact." in result.output
    assert _counts(app) == before
    with app.app_context():
        after = audit.verify_chain()
        assert (after.head_id, after.head_hash) == (head.head_id, head.head_hash)
    assert {analysis_id: alice.get(f"/history/{analysis_id}/image").data for analysis_id in ids} == images


def test_a_damaged_backup_is_refused_before_anything_changes(app, runner, tmp_path):
    alice = client_for(app, "alice")
    record_id(submit(alice, text=None, image=png_bytes()))
    target = _backup(runner, tmp_path)
    [upload] = list((target / "uploads").rglob("*.png"))
    upload.write_bytes(upload.read_bytes() + b"x")
    submit(alice, text="written after the backup")
    before = _counts(app)
    result = runner.invoke(args=["restore", str(target), "--yes"])
    assert result.exit_code != 0
    assert f"uploads/{upload.relative_to(target / 'uploads').as_posix()} does not match its hash" in result.output
    assert _counts(app) == before
