"""Progress pages: a batch's items, and the status every pending page polls (meta refresh without JS)."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template
from flask_login import login_required
from sqlalchemy.orm import selectinload

from ..access import visible_or_404
from ..analyses import confidence_policy
from ..models import Analysis, Batch, Prediction, job_progress
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
        **job_progress([item["status"] for item in items]),
        "items": items,
    }


@bp.route("/batches/<int:batch_id>")
def batch(batch_id: int):
    # The page shows each item's predictions: load them with the batch, not one query per item.
    items = selectinload(Batch.analyses).selectinload(Analysis.predictions).selectinload(Prediction.reviews)
    found = visible_or_404(Batch, batch_id, part="batch", options=(items,))
    return render_template(
        "jobs/batch.html",
        batch=found,
        summary=batch_summary(found),
        scenario_pages=SCENARIO_PAGES,
        policy=confidence_policy(),
    )


@bp.route("/batches/<int:batch_id>/status")
def batch_status(batch_id: int):
    return jsonify(batch_summary(visible_or_404(Batch, batch_id, part="batch status")))
