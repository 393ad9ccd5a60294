"""Teaching: rubrics, assignments, the homework photos handed in for them, and the grade kind of prediction.

A submission is one homework photo stored as an ``Analysis`` of the education scenario (so its job
reads the photo like any other upload) and linked to its assignment here. A grade is a human
decision: Prism proposes none. When a teacher first grades a submission, its analysis gets a
``GradePrediction`` placeholder (model ``prism/rubric``, revision = the rubric id, output
``{"scores": {}, "feedback": ""}``) and the grade is a ``Review`` correcting it, through the one
review engine: the latest review counts, earlier grades are kept, and every decision is audited.

The placeholder is made at grading time, not at upload: a prediction made at upload would count as
a finished model result in the job's progress and would wait in the review queue, where a grade
cannot be given.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from flask_babel import lazy_gettext as _l
from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import utcnow
from .prediction import CORRECTED, CorrectionError, Prediction

if TYPE_CHECKING:
    from .analysis import Analysis
    from .prediction import Review
    from .user import User

MAX_FEEDBACK_CHARS = 5000
MAX_POINTS = 1000
Points = int | float


def points(value: float) -> Points:
    """A score as stored and shown: an int when whole (3, not 3.0), else rounded to two places."""
    value = float(value)
    return int(value) if value.is_integer() else round(value, 2)


class Rubric(db.Model):
    """A teacher's list of criteria, reusable across assignments."""

    __table_args__ = (Index("ix_rubric_user_created", "user_id", "created_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()
    criteria: Mapped[list[RubricCriterion]] = relationship(
        back_populates="rubric",
        cascade="all, delete-orphan",
        order_by=lambda: [RubricCriterion.position, RubricCriterion.id],
    )

    @property
    def max_total(self) -> Points:
        return points(sum(criterion.max_points for criterion in self.criteria))


class RubricCriterion(db.Model):
    __tablename__ = "rubric_criterion"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    rubric_id: Mapped[int] = mapped_column(ForeignKey("rubric.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(default=0)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    max_points: Mapped[float]

    rubric: Mapped[Rubric] = relationship(back_populates="criteria")

    @property
    def key(self) -> str:
        """How a grade's ``scores`` name this criterion (JSON object keys are strings)."""
        return str(self.id)


class Assignment(db.Model):
    """Homework a teacher grades with one rubric; ``reference_text`` is the answer key or model answer."""

    __table_args__ = (Index("ix_assignment_user_created", "user_id", "created_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    reference_text: Mapped[str | None] = mapped_column(Text)
    # RESTRICT: a rubric that grades an assignment cannot go (the view says so before the database must).
    rubric_id: Mapped[int] = mapped_column(ForeignKey("rubric.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()
    rubric: Mapped[Rubric] = relationship()
    submissions: Mapped[list[Submission]] = relationship(
        back_populates="assignment", cascade="all, delete-orphan", order_by="Submission.id"
    )


class Submission(db.Model):
    """One homework photo for one assignment: an analysis (deleting the record deletes this row too)."""

    __table_args__ = (
        UniqueConstraint("analysis_id", name="uq_submission_analysis"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id", ondelete="CASCADE"), index=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analysis.id", ondelete="CASCADE"))
    student_name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    assignment: Mapped[Assignment] = relationship(back_populates="submissions")
    analysis: Mapped[Analysis] = relationship()

    def agreement(self) -> float | None:
        """How much of the page's text (OCR, the value that counts) matches the assignment's reference
        text, 0..1; None without both. Compared without spaces, punctuation or case: OCR drops the
        spaces between English words, and a Chinese answer has none to compare."""
        reading = self.analysis.prediction("ocr")
        reference = self.assignment.reference_text
        if reading is None or not reading.value or not reference:
            return None
        return text_agreement(reading.value, reference)

    @property
    def grade(self) -> GradePrediction | None:
        return self.analysis.prediction(GradePrediction.KIND)

    @property
    def grade_review(self) -> Review | None:
        """The review that holds the grade that counts; None while ungraded."""
        grade = self.grade
        return grade.latest_review if grade is not None and grade.review_state == CORRECTED else None

    @property
    def is_graded(self) -> bool:
        return self.grade_review is not None

    def scores(self) -> dict[str, Points]:
        return dict(self.grade.value["scores"]) if self.is_graded else {}

    def feedback(self) -> str:
        return self.grade.value["feedback"] if self.is_graded else ""

    def total(self) -> Points | None:
        """The sum over the rubric's current criteria (a score for a criterion since removed is not counted)."""
        if not self.is_graded:
            return None
        scores = self.scores()
        return points(sum(scores.get(criterion.key, 0) for criterion in self.assignment.rubric.criteria))


class GradeValue(dict):
    """A grade (``{"scores": {criterion id: points}, "feedback": str}``) that prints as its total and
    feedback, not as a Python repr, wherever a prediction's value becomes text (the record page, the
    history CSV); the API and the JSON export keep the whole structure."""

    def __str__(self) -> str:
        scores = self.get("scores") or {}
        total = f"{points(sum(scores.values())):g}" if scores else "—"
        return f"{total} · {self['feedback']}" if self.get("feedback") else total


class GradePrediction(Prediction):
    """A rubric grade. The "model" proposes nothing (``output`` is an empty grade); the teacher's grade
    is the correction. Not a job task: ``webapp.education`` creates it when a teacher grades."""

    KIND = "grade"
    MODEL_ID = "prism/rubric"
    GENERIC_REVIEW = False  # graded on the grading page, against the assignment's rubric
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "grade"}

    @classmethod
    def from_result(cls, result: Rubric) -> GradePrediction:
        """The placeholder for grading with the rubric ``result`` (no model runs; the rubric is the input)."""
        return cls(model_id=cls.MODEL_ID, revision=str(result.id), output={"scores": {}, "feedback": ""})

    @property
    def ai_value(self) -> GradeValue:
        return GradeValue(self.output)

    @property
    def human_value(self) -> GradeValue | None:
        value = super().human_value
        return None if value is None else GradeValue(value)

    @classmethod
    def parse_correction(cls, raw: Any) -> dict[str, Any]:
        """Points (>= 0) per criterion id and a feedback text. Which criteria and what maximum depend on
        the assignment's rubric, which the grading view checks before it records the review."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("scores"), Mapping) or not raw["scores"]:
            raise CorrectionError(_l("A grade gives points for each criterion of the rubric."))
        scores = {}
        for key, value in raw["scores"].items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_POINTS:
                raise CorrectionError(_l("Points are a number from 0 to %(max)d.", max=MAX_POINTS))
            scores[str(key)] = points(value)
        feedback = raw.get("feedback") or ""
        if not isinstance(feedback, str):
            raise CorrectionError(_l("Feedback is text."))
        feedback = feedback.strip()
        if len(feedback) > MAX_FEEDBACK_CHARS:
            raise CorrectionError(_l("Feedback has at most %(max)d characters.", max=MAX_FEEDBACK_CHARS))
        return {"scores": scores, "feedback": feedback}

    @property
    def total(self) -> Points | None:
        """The sum of the points of the grade that counts (the rubric-aware total is ``Submission.total``)."""
        value = self.value
        return points(sum(value["scores"].values())) if value and value["scores"] else None

    @classmethod
    def csv_columns(cls) -> tuple[str, ...]:
        return ("grade_total",)

    def csv_extra(self) -> tuple[Any, ...]:
        return (self.total,)

    def search_terms(self) -> list[str]:
        value = self.human_value
        return [value["feedback"]] if value and value["feedback"] else []


def _comparable(text: str) -> str:
    return "".join(char.lower() for char in text if char.isalnum())


AGREEMENT_MAX_CHARS = 4000  # a handwritten page holds far less; longer texts are compared by their start


def text_agreement(reading: str, reference: str) -> float:
    """difflib's matching-blocks ratio of the two texts as ``_comparable`` strings (1.0 = the same),
    each cut to ``AGREEMENT_MAX_CHARS``: the ratio is quadratic, and exports compute it per row."""
    import difflib

    reading, reference = _comparable(reading)[:AGREEMENT_MAX_CHARS], _comparable(reference)[:AGREEMENT_MAX_CHARS]
    return difflib.SequenceMatcher(None, reading, reference, autojunk=False).ratio()
