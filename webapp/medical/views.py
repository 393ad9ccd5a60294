"""Clinical case actions: add or remove a region annotation, sign the case off, export it as JSON.

Only the clinician who owns a case changes it; an admin may read its export (audited, as every read
of someone else's record is).
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from .. import audit
from ..access import owned_or_404, visible_or_404
from ..auth import fresh_login_required
from ..extensions import db
from ..forms import EmptyForm
from ..history.views import render_record
from ..models import DONE, UNREVIEWED, Analysis, RegionAnnotation, utcnow
from . import AnnotationInputError, case_export, parse_annotation

bp = Blueprint("medical", __name__, url_prefix="/cases")


@bp.before_request
@login_required
def require_login() -> None:
    return None


def _own_case_to_change(analysis_id: int) -> Analysis:
    """The clinician's own case, for a POST that carries a valid CSRF token; else 404 or 400."""
    analysis = owned_or_404(Analysis, analysis_id, scenario="medical")
    if not EmptyForm().validate_on_submit():
        abort(400)
    return analysis


def _back(analysis_id: int):
    return redirect(url_for("history.detail", analysis_id=analysis_id, _anchor="annotations"))


@bp.route("/<int:analysis_id>/annotations", methods=["POST"])
def add_annotation(analysis_id: int):
    analysis = _own_case_to_change(analysis_id)
    if analysis.signed_off_at is not None:
        flash(_("This case is signed off; its annotations can no longer change."), "error")
        return _back(analysis_id)
    try:
        annotation = parse_annotation(request.form, analysis)
    except AnnotationInputError as exc:  # the page again, with what was entered and why it was refused
        return render_record(analysis, annotation_input=request.form, annotation_error=str(exc)), 400
    annotation.author = current_user.username
    analysis.annotations.append(annotation)
    db.session.flush()
    audit.record(audit.ANNOTATION_ADDED, target=analysis, details={"annotation": annotation.id})
    db.session.commit()
    return _back(analysis_id)


@bp.route("/<int:analysis_id>/annotations/<int:annotation_id>/delete", methods=["POST"])
def delete_annotation(analysis_id: int, annotation_id: int):
    analysis = _own_case_to_change(analysis_id)
    annotation = db.first_or_404(
        select(RegionAnnotation).where(
            RegionAnnotation.id == annotation_id, RegionAnnotation.analysis_id == analysis.id
        )
    )
    if analysis.signed_off_at is None:
        audit.record(audit.ANNOTATION_REMOVED, target=analysis, details=annotation.as_dict())
        db.session.delete(annotation)
        db.session.commit()
    return _back(analysis_id)


@bp.route("/<int:analysis_id>/sign-off", methods=["POST"])
def sign_off(analysis_id: int):
    analysis = _own_case_to_change(analysis_id)
    if analysis.status != DONE:
        flash(_("Wait for the AI findings before signing the case off."), "error")
    elif any(p.review_state == UNREVIEWED for p in analysis.predictions):
        flash(_("Accept, correct or reject every AI finding before signing the case off."), "error")
    elif analysis.signed_off_at is None:
        analysis.signed_off_at, analysis.signed_off_by = utcnow(), current_user.username
        audit.record(audit.CASE_SIGNED_OFF, target=analysis)
        db.session.commit()
        flash(_("Case signed off."), "success")
    return _back(analysis_id)


@bp.route("/<int:analysis_id>/export.json")
@fresh_login_required
def export(analysis_id: int):
    analysis = visible_or_404(Analysis, analysis_id, part="case export", scenario="medical")
    response = jsonify(case_export(analysis))
    response.headers["Content-Disposition"] = f'attachment; filename="case-{analysis.id}.json"'
    response.headers["Cache-Control"] = "private, no-store"
    return response
