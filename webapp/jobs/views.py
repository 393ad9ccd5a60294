"""Progress pages: a batch's items, and the status every pending page polls (meta refresh without JS)."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, render_template
from flask_login import current_user, login_required
from sqlalchemy import select

from ..analyses import confidence_policy
from ..extensions import db
from ..models import DONE, FAILED, Batch
from ..scenarios import SCENARIO_PAGES

bp = Blueprint("jobs", __name__)


@bp.before_request
@login_required
def require_login() -> None:
    """Every progress route needs a signed-in user."""


def batch_summary(batch: Batch) -> dict:
    """``total``, ``done``, ``failed`` and each item's id and status: the page's and the API's numbers."""
    items = [{"id": analysis.id, "status": analysis.status} for analysis in batch.analyses]
    return {
        "id": batch.id,
        "scenario": batch.scenario,
        "created_at": batch.created_at.isoformat() + "Z",
        "total": len(items),
        "done": sum(item["status"] == DONE for item in items),
        "failed": sum(item["status"] == FAILED for item in items),
        "finished": all(item["status"] in (DONE, FAILED) for item in items),
        "items": items,
    }


def visible_batch_or_404(batch_id: int) -> Batch:
    statement = select(Batch).where(Batch.id == batch_id)
    if not current_user.is_admin:
        statement = statement.where(Batch.user_id == current_user.id)
    batch = db.session.scalar(statement)
    if batch is None:
        abort(404)
    return batch


@bp.route("/batches/<int:batch_id>")
def batch(batch_id: int):
    found = visible_batch_or_404(batch_id)
    return render_template(
        "jobs/batch.html",
        batch=found,
        summary=batch_summary(found),
        scenario_pages=SCENARIO_PAGES,
        policy=confidence_policy(),
    )


@bp.route("/batches/<int:batch_id>/status")
def batch_status(batch_id: int):
    return jsonify(batch_summary(visible_batch_or_404(batch_id)))
