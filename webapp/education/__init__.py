"""Assignments: homework photos uploaded into an assignment, graded with its rubric, summed up and exported.

Uploading goes through ``analyses.submit_batch`` (scenario ``education``), so each photo is an
ordinary record whose job reads it, and a broken file fails alone. Grading goes through the review
engine (``reviews.record_review``): the grade is a correction of the submission's ``grade``
prediction, checked here against the assignment's rubric first, since a prediction kind's own
parser cannot know the rubric.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from .. import audit
from ..analyses import submit_batch
from ..exports import csv_cell
from ..extensions import db
from ..models import Analysis, Batch, Prediction, Review, User, job_progress
from ..models.education import (
    Assignment,
    GradePrediction,
    Points,
    Rubric,
    RubricCriterion,
    Submission,
    points,
)
from ..models.prediction import CORRECTED
from ..reviews import record_review
from ..uploads import display_filename

SCENARIO = "education"
AGREEMENT = "agreement"  # the prediction kind comparing a photo with its assignment (webapp.fusion)
# Audit action of an admin reading a teacher's rubrics, assignments, grades or exports.
VIEWED_BY_OTHER = audit.EDUCATION_VIEWED_BY_OTHER
MAX_STUDENT_NAME_CHARS = 120
CSV_COLUMNS_BEFORE, CSV_COLUMNS_AFTER = ("student", "total"), ("feedback", "graded_by", "graded_at", "agreement")

# What an assignment's pages show of each submission: its record, the record's results and their reviews.
SUBMISSIONS_LOAD = (
    selectinload(Assignment.rubric).selectinload(Rubric.criteria),
    selectinload(Assignment.submissions)
    .selectinload(Submission.analysis)
    .selectinload(Analysis.predictions)
    .selectinload(Prediction.reviews),
)


class GradeInputError(ValueError):
    """A grade that does not fit the assignment's rubric; the message (a lazy string) is safe to show."""


def student_name_from(filename: str | None) -> str:
    """The student a photo belongs to, by its file name: ``张伟.jpg`` -> ``张伟``, ``Li Na-p2.png`` -> ``Li Na-p2``."""
    name = display_filename(filename) or ""
    stem, dot, _extension = name.rpartition(".")
    return ((stem if dot and stem else name).strip() or name)[:MAX_STUDENT_NAME_CHARS]


def add_submissions(
    assignment: Assignment, teacher: User, files: Sequence[tuple[bytes, str | None]]
) -> tuple[Batch, list[Analysis]]:
    """Upload ``files`` as one batch and give each accepted photo a submission; the caller commits, then
    enqueues ``analyses.pending_ids(batch)``. Returns the batch and the records of refused files (each
    failed, with its reason), which get no submission.

    Raises what ``submit_batch`` raises (too many files, a role that may not submit).
    """
    batch = submit_batch(teacher, SCENARIO, files)
    refused = []
    for analysis, (_data, filename) in zip(batch.analyses, files, strict=True):
        if analysis.image_sha256 is None:
            refused.append(analysis)
        else:
            if AGREEMENT not in analysis.tasks:  # the photo is compared with its assignment (jobs.runner)
                analysis.tasks = [*analysis.tasks, AGREEMENT]
            db.session.add(
                Submission(assignment_id=assignment.id, analysis=analysis, student_name=student_name_from(filename))
            )
    db.session.flush()
    return batch, refused


def record_grade(
    submission: Submission, teacher: User, scores: Mapping[int | str, float], feedback: str | None
) -> Review | None:
    """Store a grade as a correction of the submission's grade prediction (made on its first grading);
    the caller commits. Returns None when this grade is already the one that counts (nothing to add).

    Raises ``GradeInputError`` (a criterion missing, unknown, or out of 0..max) and what
    ``reviews.record_review`` raises (``ScenarioForbidden``, ``ReviewInputError``).
    """
    rubric = submission.assignment.rubric
    criteria = {criterion.key: criterion for criterion in rubric.criteria}
    given = {str(key): value for key, value in scores.items()}
    if set(given) != set(criteria):
        raise GradeInputError(_l("Give points for every criterion of the rubric, and only those."))
    for key, value in given.items():
        criterion = criteria[key]
        if not 0 <= value <= criterion.max_points:
            raise GradeInputError(
                _l(
                    "%(criterion)s: points from 0 to %(max)s.",
                    criterion=criterion.title,
                    max=f"{criterion.max_points:g}",
                )
            )
    value = {"scores": given, "feedback": feedback or ""}
    prediction = submission.grade
    if prediction is None:
        prediction = GradePrediction.from_result(rubric)
        submission.analysis.predictions.append(prediction)
    elif prediction.review_state == CORRECTED and prediction.human_value == GradePrediction.parse_correction(value):
        return None
    return record_review(prediction, teacher, "correct", value)


def neighbours(assignment: Assignment, submission: Submission) -> tuple[Submission | None, Submission | None]:
    """The submissions before and after ``submission``, in upload order."""
    submissions = assignment.submissions
    index = submissions.index(submission)
    before = submissions[index - 1] if index > 0 else None
    after = submissions[index + 1] if index + 1 < len(submissions) else None
    return before, after


def next_ungraded(assignment: Assignment, current: Submission | None = None) -> Submission | None:
    """The first ungraded submission after ``current`` in upload order, wrapping around; never ``current``."""
    submissions = assignment.submissions
    start = submissions.index(current) + 1 if current is not None else 0
    for submission in submissions[start:] + submissions[:start]:
        if submission is not current and not submission.is_graded:
            return submission
    return None


def progress(assignment: Assignment) -> dict:
    """How far the jobs of the assignment's photos are, as a batch's (the page's script polls it)."""
    return job_progress([submission.analysis.status for submission in assignment.submissions])


@dataclass(frozen=True)
class Summary:
    submissions: int
    graded: int
    max_total: Points
    mean_total: float | None
    criteria: list[tuple[RubricCriterion, float | None]]  # each criterion with its mean over graded work
    distribution: list[tuple[str, int]]  # (range of totals, how many) from the lowest range up

    @property
    def ungraded(self) -> int:
        return self.submissions - self.graded


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def distribution(totals: Sequence[float], max_total: float) -> list[tuple[str, int]]:
    """Totals counted per point up to 10 points, else in ten equal ranges (the last one includes the maximum)."""
    if max_total <= 10:
        width, count = 1.0, math.floor(max_total) + 1
    else:
        width, count = max_total / 10, 10
    counts = [0] * count
    for total in totals:
        counts[min(max(int(total // width), 0), count - 1)] += 1
    if width == 1.0:
        labels = [str(index) for index in range(count)]
    else:
        labels = [f"{points(index * width):g}–{points((index + 1) * width):g}" for index in range(count)]
    return list(zip(labels, counts, strict=True))


def summarize(assignment: Assignment) -> Summary:
    graded = [submission for submission in assignment.submissions if submission.is_graded]
    criteria = assignment.rubric.criteria
    max_total = assignment.rubric.max_total
    totals = [submission.total() for submission in graded]
    return Summary(
        submissions=len(assignment.submissions),
        graded=len(graded),
        max_total=max_total,
        mean_total=_mean(totals),
        criteria=[
            (criterion, _mean([s.scores()[criterion.key] for s in graded if criterion.key in s.scores()]))
            for criterion in criteria
        ],
        distribution=distribution(totals, max_total),
    )


def grades_csv(assignment: Assignment) -> str:
    """The assignment's grades as CSV: a BOM (Excel then reads Chinese names as UTF-8), the header, one row
    per submission in upload order (ungraded ones with empty grades), every cell formula-neutralised."""
    criteria = assignment.rubric.criteria
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer)
    header = [*CSV_COLUMNS_BEFORE, *(f"{c.title} (/{c.max_points:g})" for c in criteria), *CSV_COLUMNS_AFTER]
    writer.writerow([csv_cell(cell) for cell in header])
    for submission in assignment.submissions:
        review = submission.grade_review
        scores = submission.scores()
        row = [
            submission.student_name,
            submission.total(),
            *(scores.get(criterion.key) for criterion in criteria),
            submission.feedback() if review else None,
            review.reviewer_name if review else None,
            review.created_at.isoformat() + "Z" if review else None,
            None if (agreement := submission.agreement()) is None else round(agreement, 3),
        ]
        writer.writerow([csv_cell(cell) for cell in row])
    return buffer.getvalue()


def highest_scores_given(rubric: Rubric) -> dict[str, Points]:
    """Per criterion key, the most points a grade that counts gives it, over every assignment using ``rubric``.

    A rubric edit may not drop a criterion that grades use, nor lower its maximum below a score given.
    """
    submissions = db.session.scalars(
        select(Submission)
        .join(Submission.assignment)
        .where(Assignment.rubric_id == rubric.id)
        .options(selectinload(Submission.analysis).selectinload(Analysis.predictions).selectinload(Prediction.reviews))
    )
    highest: dict[str, Points] = {}
    for submission in submissions:
        for key, value in submission.scores().items():
            highest[key] = max(highest.get(key, 0), value)
    return highest


def assignment_dict(assignment: Assignment, *, with_submissions: bool = False) -> dict:
    """An assignment as the JSON API gives it: its rubric, progress, and (on request) every submission
    with its scores (the teacher's grade: the value that counts), feedback and OCR agreement."""
    body = {
        "id": assignment.id,
        "title": assignment.title,
        "reference_text": assignment.reference_text,
        "created_at": assignment.created_at.isoformat() + "Z",
        "rubric": {
            "id": assignment.rubric.id,
            "title": assignment.rubric.title,
            "criteria": [
                {"key": c.key, "title": c.title, "description": c.description, "max_points": c.max_points}
                for c in assignment.rubric.criteria
            ],
        },
        "progress": progress(assignment),
    }
    if with_submissions:
        body["submissions"] = [
            {
                "id": submission.id,
                "analysis_id": submission.analysis_id,
                "student": submission.student_name,
                "status": submission.analysis.status,
                "graded": submission.is_graded,
                "scores": submission.scores(),
                "total": submission.total(),
                "feedback": submission.feedback() if submission.grade_review else None,
                "graded_by": submission.grade_review.reviewer_name if submission.grade_review else None,
                "agreement": submission.agreement(),
            }
            for submission in assignment.submissions
        ]
    return body
