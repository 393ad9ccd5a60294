"""Teachers' pages: rubrics, assignments, uploading homework into one, grading, the summary and the CSV.

Teachers (the roles of the education scenario) see and change only their own rubrics and
assignments: another teacher's id is a 404, as a missing one. Admins may read everything, never
change it, and each read of someone else's work is audited, as on the record page.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload
from werkzeug.exceptions import NotFound

from .. import audit
from ..access import note_audited, owned_or_404, visible_or_404
from ..analyses import AnalysisInputError, confidence_policy, pending_ids
from ..auth import fresh_login_required
from ..dashboards import score_distribution_chart
from ..extensions import db
from ..forms import EmptyForm
from ..history.explanations import explanation_view
from ..jobs import enqueue_analyses
from ..kept_forms import KeptForm, keeps_form
from ..models import Analysis
from ..models.education import Assignment, GradePrediction, Rubric, RubricCriterion, Submission, points
from ..ratelimit import limit, user_key
from ..reviews import ReviewInputError
from ..scenarios import SCENARIO_PAGES
from . import (
    SCENARIO,
    SUBMISSIONS_LOAD,
    VIEWED_BY_OTHER,
    GradeInputError,
    add_submissions,
    grades_csv,
    highest_scores_given,
    neighbours,
    next_ungraded,
    progress,
    record_grade,
    summarize,
)
from .forms import AssignmentForm, RubricForm, StudentNameForm, UploadForm, grade_form

bp = Blueprint("education", __name__, url_prefix="/education")


def _is_teacher() -> bool:
    return SCENARIO_PAGES[SCENARIO].may_submit(current_user)


@bp.before_request
@login_required
def require_teacher() -> None:
    """Teachers work here; admins may only read; every other role gets 403."""
    if _is_teacher():
        return
    if not current_user.is_admin or request.method != "GET":
        abort(403)


def _visible_or_404(model, object_id: int, *, part: str, options=()):
    """The teacher's own rubric or assignment (any, for an admin, whose read is audited); else 404."""
    return visible_or_404(model, object_id, part=part, action=VIEWED_BY_OTHER, options=options)


def _own_list(model, *options):
    """The teacher's rows of ``model``, newest first; everyone's for an admin."""
    statement = select(model).options(*options).order_by(model.created_at.desc(), model.id.desc())
    if not current_user.is_admin:
        statement = statement.where(model.user_id == current_user.id)
    return db.session.scalars(statement).all()


def _submission_or_404(assignment: Assignment, submission_id: int) -> Submission:
    found = next((s for s in assignment.submissions if s.id == submission_id), None)
    if found is None:
        abort(404)
    return found


# --- Rubrics --------------------------------------------------------------------------------------


@bp.route("/rubrics/")
def rubrics():
    found = _own_list(Rubric, selectinload(Rubric.criteria), selectinload(Rubric.user))
    return render_template("education/rubrics.html", rubrics=found, delete_form=EmptyForm())


@bp.route("/rubrics/new", methods=["GET", "POST"])
def new_rubric():
    if not _is_teacher():
        abort(403)
    return _rubric_form(None)


@bp.route("/rubrics/<int:rubric_id>", methods=["GET", "POST"])
def edit_rubric(rubric_id: int):
    options = (selectinload(Rubric.criteria),)
    if request.method == "GET":
        rubric = _visible_or_404(Rubric, rubric_id, part="rubric", options=options)
    else:
        rubric = owned_or_404(Rubric, rubric_id, options=options)
    return _rubric_form(rubric)


def _rubric_form(rubric: Rubric | None):
    """Create or edit a rubric. "Add rows" posts the form back with blank rows added, saving nothing."""
    in_use = highest_scores_given(rubric) if rubric is not None else {}
    if request.method == "GET" and rubric is not None:
        form = RubricForm(
            data={
                "title": rubric.title,
                "criteria": [
                    {
                        "criterion_id": str(c.id),
                        "title": c.title,
                        "description": c.description,
                        "max_points": points(c.max_points),
                    }
                    for c in rubric.criteria
                ],
            }
        )
    else:
        form = RubricForm()
    status = 200
    if form.is_submitted() and form.add_rows.data:
        form.pad()
        return _render_rubric_form(form, rubric, in_use), 200
    if form.validate_on_submit():
        errors = _save_rubric(form, rubric, in_use)
        if not errors:
            db.session.commit()
            flash(_("The rubric is saved."), "success")
            return redirect(url_for("education.rubrics"))
        db.session.rollback()
        form.form_errors.extend(errors)
        status = 400
    elif form.is_submitted():
        status = 400
    if request.method == "GET":
        form.pad()
    return _render_rubric_form(form, rubric, in_use), status


def _render_rubric_form(form: RubricForm, rubric: Rubric | None, in_use: dict) -> str:
    return render_template(
        "education/rubric_form.html",
        form=form,
        rubric=rubric,
        in_use=in_use,
        read_only=rubric is not None and rubric.user_id != current_user.id,
    )


def _save_rubric(form: RubricForm, rubric: Rubric | None, in_use: dict) -> list[str]:
    """Apply the form to ``rubric`` (a new one when None); returns the reasons it cannot be saved.

    A criterion that grades use keeps its row: it may be renamed, and its maximum may go no lower than
    the most points it was given, so no stored grade ever exceeds its rubric.
    """
    if rubric is None:
        rubric = Rubric(user_id=current_user.id)
        db.session.add(rubric)
    rubric.title = form.title.data.strip()
    existing = {str(c.id): c for c in rubric.criteria}
    kept, errors = [], []
    for position, row in enumerate(form.filled_rows):
        criterion = existing.get(row.criterion_id.data or "")
        if criterion is None:
            criterion = RubricCriterion()
            rubric.criteria.append(criterion)
        kept.append(criterion)
        criterion.position = position
        criterion.title = row.title.data.strip()
        criterion.description = (row.description.data or "").strip()
        criterion.max_points = points(row.max_points.data)
        given = in_use.get(str(criterion.id)) if criterion.id else None
        if given is not None and criterion.max_points < given:
            errors.append(
                _(
                    "%(criterion)s: a grade already gives it %(given)s, so its maximum cannot be lower.",
                    criterion=criterion.title,
                    given=f"{given:g}",
                )
            )
    for key, criterion in existing.items():
        if criterion not in kept:
            if key in in_use:
                errors.append(_("%(criterion)s is used by grades and cannot be removed.", criterion=criterion.title))
            rubric.criteria.remove(criterion)
    return errors


@bp.route("/rubrics/<int:rubric_id>/delete", methods=["POST"])
def delete_rubric(rubric_id: int):
    rubric = owned_or_404(Rubric, rubric_id)
    if EmptyForm().validate_on_submit():
        if db.session.scalar(select(Assignment.id).where(Assignment.rubric_id == rubric.id).limit(1)):
            flash(_("This rubric grades an assignment, so it cannot be deleted."), "error")
        else:
            db.session.delete(rubric)
            db.session.commit()
            flash(_("The rubric was deleted."), "info")
    return redirect(url_for("education.rubrics"))


# --- Assignments ----------------------------------------------------------------------------------


@bp.route("/assignments/")
def assignments():
    found = _own_list(Assignment, *SUBMISSIONS_LOAD, selectinload(Assignment.user))
    return render_template("education/assignments.html", assignments=found)


@bp.route("/assignments/new", methods=["GET", "POST"])
def new_assignment():
    if not _is_teacher():
        abort(403)
    form = AssignmentForm()
    own_rubrics = _own_list(Rubric)
    form.offer(own_rubrics)
    status = 200
    if form.validate_on_submit():
        assignment = Assignment(
            user_id=current_user.id,
            title=form.title.data.strip(),
            reference_text=(form.reference_text.data or "").strip() or None,
            rubric_id=form.rubric.data,
        )
        db.session.add(assignment)
        db.session.commit()
        flash(_("The assignment is created: upload the homework photos."), "success")
        return redirect(url_for("education.assignment", assignment_id=assignment.id))
    if form.is_submitted():
        status = 400
    return render_template("education/assignment_form.html", form=form, has_rubrics=bool(own_rubrics)), status


@bp.route("/assignments/<int:assignment_id>")
def assignment(assignment_id: int):
    found = _visible_or_404(Assignment, assignment_id, part="assignment", options=SUBMISSIONS_LOAD)
    if found.user_id != current_user.id:  # the admin's audited read covers the page's thumbnails
        note_audited(Analysis, [submission.analysis_id for submission in found.submissions])
    return _render_assignment(found, UploadForm()), 200


def _render_assignment(assignment: Assignment, form: UploadForm) -> str:
    return render_template(
        "education/assignment.html",
        assignment=assignment,
        form=form,
        progress=progress(assignment),
        policy=confidence_policy(),
        first_ungraded=next_ungraded(assignment),
    )


@bp.route("/assignments/<int:assignment_id>/upload", methods=["POST"])
@limit("PRISM_RATELIMIT_SUBMIT", lambda: user_key(current_user))  # one upload of many photos counts once
def upload(assignment_id: int):
    assignment = owned_or_404(Assignment, assignment_id, options=SUBMISSIONS_LOAD)
    form = UploadForm()
    if form.validate_on_submit():
        files = form.files
        try:
            batch, refused = add_submissions(
                assignment, current_user._get_current_object(), [(f.read(), f.filename) for f in files]
            )
        except AnalysisInputError as exc:
            db.session.rollback()
            form.images.errors.append(str(exc))
        else:
            db.session.commit()
            enqueue_analyses(pending_ids(batch))
            if accepted := len(files) - len(refused):
                flash(_("Photos added: %(count)d. Prism is reading them.", count=accepted), "success")
            for analysis in refused:
                flash(
                    _("%(file)s was not added: %(reason)s", file=analysis.image_filename, reason=analysis.error),
                    "error",
                )
            return redirect(url_for("education.assignment", assignment_id=assignment_id))
    assignment = owned_or_404(Assignment, assignment_id, options=SUBMISSIONS_LOAD)
    return _render_assignment(assignment, form), 400


@bp.route("/assignments/<int:assignment_id>/status")
def assignment_status(assignment_id: int):
    """Progress of the assignment's photos, for the page's script (it reloads the page when this changes)."""
    statuses = selectinload(Assignment.submissions).selectinload(Submission.analysis)  # polled: nothing more
    found = _visible_or_404(Assignment, assignment_id, part="status", options=(statuses,))
    return jsonify(progress(found))


@bp.route("/assignments/<int:assignment_id>/summary")
def summary(assignment_id: int):
    found = _visible_or_404(Assignment, assignment_id, part="summary", options=SUBMISSIONS_LOAD)
    summed = summarize(found)
    chart = score_distribution_chart(summed.distribution)
    return render_template("education/summary.html", assignment=found, summary=summed, chart=chart)


@bp.route("/assignments/<int:assignment_id>/grades.csv")
@fresh_login_required
def export_grades(assignment_id: int):
    found = _visible_or_404(Assignment, assignment_id, part="export", options=SUBMISSIONS_LOAD)
    audit.record(audit.HISTORY_EXPORTED, target=found, details={"format": "csv", "scope": "assignment-grades"})
    db.session.commit()
    body = grades_csv(found)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    response = Response(body, mimetype="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="prism-grades-{found.id}-{stamp}.csv"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


# --- Grading --------------------------------------------------------------------------------------


@bp.route("/records/<int:analysis_id>")
def grade_record(analysis_id: int):
    """The grading page of the submission that a record is (linked from the record page)."""
    submission = db.session.scalar(select(Submission).where(Submission.analysis_id == analysis_id))
    if submission is None or not (current_user.is_admin or submission.assignment.user_id == current_user.id):
        abort(404)  # the grading page itself audits an admin's read
    return redirect(url_for("education.grade", assignment_id=submission.assignment_id, submission_id=submission.id))


@bp.route("/assignments/<int:assignment_id>/submissions/<int:submission_id>", methods=["GET", "POST"])
def grade(assignment_id: int, submission_id: int):
    if request.method == "GET":
        assignment = _visible_or_404(Assignment, assignment_id, part="grading", options=SUBMISSIONS_LOAD)
    else:
        assignment = owned_or_404(Assignment, assignment_id, options=SUBMISSIONS_LOAD)
    submission = _submission_or_404(assignment, submission_id)
    current = submission.grade.value if submission.is_graded else None
    data = None
    if current is not None:
        data = {"feedback": current["feedback"]}
        data |= {f"criterion_{key}": value for key, value in current["scores"].items()}
    form = grade_form(assignment.rubric, data=data)
    status = 200
    if form.validate_on_submit():
        scores = {criterion_id: form[name].data for criterion_id, name in form.criterion_fields}
        try:
            review = record_grade(submission, current_user._get_current_object(), scores, form.feedback.data)
        except (GradeInputError, ReviewInputError) as exc:
            db.session.rollback()
            form.form_errors.append(str(exc))
            status = 400
        except IntegrityError:  # a second tab graded this submission first: the first grade stays
            db.session.rollback()
            flash(
                _("This submission was graded at the same moment elsewhere; check the grade and save again."), "error"
            )
            return redirect(url_for("education.grade", assignment_id=assignment_id, submission_id=submission_id))
        else:
            db.session.commit()
            flash(_("The grade is saved.") if review else _("Nothing changed."), "success")
            if form.save_next.data:
                return _redirect_to_next_ungraded(assignment_id, submission_id)
            return redirect(url_for("education.grade", assignment_id=assignment_id, submission_id=submission_id))
    elif form.is_submitted():
        status = 400
    return _grade_page(assignment, submission, form, status)


@keeps_form("education.grade")
def kept_grade_page(kept: KeptForm, assignment_id: int, submission_id: int):
    """The grading form with the points and feedback typed, after a refusal that came before the view
    (an expired session, kept_forms): a teacher's long feedback is not lost. Only the assignment's
    owner, who alone may post it, gets it back."""
    if not current_user.is_authenticated:
        return None
    try:  # the same rule as the post itself (``grade``): the owner's assignment and its submission
        assignment = owned_or_404(Assignment, assignment_id, options=SUBMISSIONS_LOAD)
        submission = _submission_or_404(assignment, submission_id)
    except NotFound:
        return None  # the plain error page, as for anyone who may not post this form
    form = grade_form(assignment.rubric, formdata=kept.formdata)
    kept.show_on(form)
    return _grade_page(assignment, submission, form, kept.status)


def _grade_page(assignment: Assignment, submission: Submission, form, status: int):
    before, after = neighbours(assignment, submission)
    return render_template(
        "education/grade.html",
        assignment=assignment,
        submission=submission,
        a=submission.analysis,
        form=form,
        name_form=StudentNameForm(student_name=submission.student_name),
        before=before,
        after=after,
        policy=confidence_policy(),
        can_edit=assignment.user_id == current_user.id,
        grade_kind=GradePrediction.KIND,
        explanation=explanation_view(submission.analysis),
    ), status


def _redirect_to_next_ungraded(assignment_id: int, submission_id: int):
    # Read again after the commit: the grade just saved counts now.
    assignment = db.session.scalar(select(Assignment).where(Assignment.id == assignment_id).options(*SUBMISSIONS_LOAD))
    following = next_ungraded(assignment, _submission_or_404(assignment, submission_id))
    if following is None:
        flash(_("Every submission of this assignment is graded."), "success")
        return redirect(url_for("education.summary", assignment_id=assignment_id))
    return redirect(url_for("education.grade", assignment_id=assignment_id, submission_id=following.id))


@bp.route("/assignments/<int:assignment_id>/submissions/<int:submission_id>/name", methods=["POST"])
def rename(assignment_id: int, submission_id: int):
    assignment = owned_or_404(Assignment, assignment_id, options=SUBMISSIONS_LOAD)
    submission = _submission_or_404(assignment, submission_id)
    form = StudentNameForm()
    if form.validate_on_submit():
        submission.student_name = form.student_name.data.strip()
        db.session.commit()
        flash(_("The student's name is saved."), "success")
    else:
        for errors in form.errors.values():
            for error in errors:
                flash(str(error), "error")
    return redirect(url_for("education.grade", assignment_id=assignment_id, submission_id=submission_id))
