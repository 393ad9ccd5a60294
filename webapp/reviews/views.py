"""Review pages: a queue per scenario (least confident first) and the one POST every decision goes through."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from ..analyses import confidence_policy, get_visible_analysis
from ..extensions import db
from ..models import UNREVIEWED, Prediction
from ..pagination import IdsFirstPagination
from ..scenarios import SCENARIO_PAGES
from . import ReviewInputError, may_review, record_review, select_queue
from .forms import ReviewForm

bp = Blueprint("reviews", __name__, url_prefix="/review")


@bp.before_request
@login_required
def require_login() -> None:
    """Every review route needs a signed-in user."""


def _reviewable_scenario_or_403(scenario: str):
    page = SCENARIO_PAGES.get(scenario)
    if page is None:
        abort(404)
    if not page.may_review(current_user):
        abort(403)
    return page


@bp.route("/")
def index():
    pages = {key: page for key, page in SCENARIO_PAGES.items() if page.may_review(current_user)}
    waiting = dict(
        db.session.execute(
            select(Prediction.scenario, func.count(Prediction.id))
            .where(Prediction.user_id == current_user.id, Prediction.review_state == UNREVIEWED)
            .group_by(Prediction.scenario)
        ).all()
    )
    return render_template("reviews/index.html", pages=pages, waiting=waiting)


@bp.route("/<scenario>/")
def queue(scenario: str):
    page = _reviewable_scenario_or_403(scenario)
    statement = select_queue(current_user, scenario).options(selectinload(Prediction.analysis))
    items = IdsFirstPagination(  # the queue's order is computed: sort ids, not whole predictions
        select=statement,
        session=db.session(),
        key=Prediction.id,
        per_page=current_app.config["PRISM_PAGE_SIZE"],
        error_out=False,
    )
    return render_template("reviews/queue.html", page=page, items=items, policy=confidence_policy())


@bp.route("/<scenario>/next")
def next_item(scenario: str):
    _reviewable_scenario_or_403(scenario)
    prediction = db.session.scalar(select_queue(current_user, scenario).limit(1))
    if prediction is None:
        flash(_("Nothing left to review here."), "success")
        return redirect(url_for("reviews.queue", scenario=scenario))
    return redirect(
        url_for(
            "history.detail",
            analysis_id=prediction.analysis_id,
            queue=scenario,
            _anchor=f"prediction-{prediction.id}",
        )
    )


@bp.route("/predictions/<int:prediction_id>", methods=["POST"])
def review(prediction_id: int):
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None or get_visible_analysis(prediction.analysis_id, current_user) is None:
        abort(404)
    if not may_review(current_user, prediction.analysis):
        abort(403)
    if not prediction.GENERIC_REVIEW:
        abort(404)  # decided on its own page (a grade: the grading view)
    form = ReviewForm()
    target = url_for("history.detail", analysis_id=prediction.analysis_id, _anchor=f"prediction-{prediction.id}")
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(str(error), "error")
        return redirect(target, code=303)
    try:
        record_review(
            prediction, current_user._get_current_object(), form.decision.data, form.value.data, form.comment.data
        )
    except ReviewInputError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(target, code=303)
    db.session.commit()
    flash(_("Your decision is saved; it now counts wherever this result appears."), "success")
    if form.queue.data in SCENARIO_PAGES:
        return redirect(url_for("reviews.next_item", scenario=form.queue.data), code=303)
    return redirect(target, code=303)
