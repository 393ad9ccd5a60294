"""What a model said (``Prediction``) and what a person decided about it (``Review``).

Predictions follow Label Studio's split of predictions from annotations and MONAI Label's
ORIGINAL / FINAL tags: the model's output (``output``, ``confidence``, ``margin``) is
written once and never changed. Reviews are appended, never edited; the latest one counts, and
``review_state`` / ``final_label`` cache its effect so history can filter on it with an index.

Each kind of output is one subclass (single-table inheritance on ``kind``): adding OCR or a
category is one new class that says how to build itself from a model result, what its value is,
how a correction is parsed, and what it adds to a CSV row. Pages, exports, the API and the bench
read every kind through that one mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from flask_babel import lazy_gettext as _l
from sqlalchemy import JSON, ColumnElement, ForeignKey, Index, String, Text, UniqueConstraint, and_, event, or_, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import utcnow

if TYPE_CHECKING:
    from .analysis import Analysis

SENTIMENT_LABELS = ("negative", "neutral", "positive")
UNREVIEWED, ACCEPTED, CORRECTED, REJECTED = "unreviewed", "accepted", "corrected", "rejected"
REVIEW_STATES = (UNREVIEWED, ACCEPTED, CORRECTED, REJECTED)
# The state of a kind nobody reviews (an explanation): never "unreviewed", so no queue, count or filter
# of unreviewed work ever includes it, and those queries need no list of kinds.
NOT_REVIEWABLE = "none"
# A decision and the state it leaves the prediction in ("reopen" undoes the previous decisions).
DECISIONS = {"accept": ACCEPTED, "correct": CORRECTED, "reject": REJECTED, "reopen": UNREVIEWED}
BANDS = ("high", "medium", "low")
MAX_CORRECTION_CHARS = 2000


class CorrectionError(ValueError):
    """A human value that this kind of prediction cannot take; the message (a lazy string) is safe to show."""


@dataclass(frozen=True)
class ConfidencePolicy:
    """When a confidence is High / Medium / Low, and when a result is *uncertain*.

    Uncertain means the top class barely beats the next one (``margin`` below ``min_margin``) or is
    weak on its own (``confidence`` below ``min_score``): such a result is never shown as a
    confident label and goes to the top of the review queue. Settings: PRISM_CONFIDENCE_*.
    """

    high: float = 0.8
    medium: float = 0.6
    min_score: float = 0.5
    min_margin: float = 0.1

    @classmethod
    def from_config(cls, config: Mapping) -> ConfidencePolicy:
        policy = cls(
            high=float(config["PRISM_CONFIDENCE_HIGH"]),
            medium=float(config["PRISM_CONFIDENCE_MEDIUM"]),
            min_score=float(config["PRISM_UNCERTAIN_MIN_SCORE"]),
            min_margin=float(config["PRISM_UNCERTAIN_MIN_MARGIN"]),
        )
        if not 0.0 <= policy.medium <= policy.high <= 1.0:
            raise ValueError("PRISM_CONFIDENCE_MEDIUM <= PRISM_CONFIDENCE_HIGH, both within 0..1")
        return policy

    def band(self, confidence: float | None) -> str | None:
        if confidence is None:
            return None
        if confidence >= self.high:
            return "high"
        return "medium" if confidence >= self.medium else "low"

    def is_uncertain(self, confidence: float | None, margin: float | None) -> bool:
        if confidence is not None and confidence < self.min_score:
            return True
        return margin is not None and margin < self.min_margin

    def uncertain_clause(self) -> ColumnElement[bool]:
        """``is_uncertain`` as SQL (NULLs compare false, as in Python)."""
        return or_(Prediction.confidence < self.min_score, Prediction.margin < self.min_margin)

    def band_clause(self, band: str) -> ColumnElement[bool]:
        """``band(confidence) == band`` as SQL."""
        confidence = Prediction.confidence
        if band == "high":
            return confidence >= self.high
        if band == "medium":
            return and_(confidence >= self.medium, confidence < self.high)
        return confidence < self.medium


class Prediction(db.Model):
    """One model output for one analysis; at most one per kind (re-running a job adds nothing)."""

    __table_args__ = (
        UniqueConstraint("analysis_id", "kind", name="uq_prediction_analysis_kind"),
        # History filters: a count reads (kind, final_label) or (review_state) with the analysis id
        # from the index alone; a page's per-analysis EXISTS reads the other columns it tests.
        Index("ix_prediction_kind_final", "kind", "final_label", "analysis_id"),
        Index("ix_prediction_review_state", "review_state", "analysis_id"),
        Index("ix_prediction_analysis_filters", "analysis_id", "review_state", "confidence", "margin"),
        # The review queue: one user's results in one scenario, in one range of one index that also
        # holds what the queue sorts by, so the queue reads no other table (reviews.select_queue).
        Index(
            "ix_prediction_queue", "user_id", "scenario", "review_state", "confidence", "margin", "analysis_id", "id"
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analysis.id", ondelete="CASCADE"))
    # Copies of the analysis's owner and scenario (neither ever changes), set on insert by
    # ``_copy_owner_and_scenario``: the review queue filters on them without joining its analyses.
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    scenario: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    model_id: Mapped[str] = mapped_column(String(255))
    revision: Mapped[str | None] = mapped_column(String(64))
    precision: Mapped[str | None] = mapped_column(String(8))
    latency_ms: Mapped[float | None]
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    confidence: Mapped[float | None]
    margin: Mapped[float | None]  # top score minus the runner-up's
    # The latest review's effect, kept in step by ``apply`` (never by hand).
    review_state: Mapped[str] = mapped_column(String(16), default=UNREVIEWED)
    final_label: Mapped[str | None] = mapped_column(String(64))

    analysis: Mapped[Analysis] = relationship(back_populates="predictions")
    reviews: Mapped[list[Review]] = relationship(
        back_populates="prediction", cascade="all, delete-orphan", order_by="Review.id"
    )

    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_on": "kind"}
    KIND: ClassVar[str] = ""
    HAS_CLASSES: ClassVar[bool] = False  # its value is one of a fixed set of labels (cached in final_label)
    # Whether the record page's and the API's generic review forms may decide it; a kind with its own
    # page and checks (a rubric grade) says no.
    GENERIC_REVIEW: ClassVar[bool] = True
    # Whether CSV exports have columns for it (an explanation's maps are no spreadsheet value).
    EXPORTED: ClassVar[bool] = True
    KINDS: ClassVar[dict[str, type[Prediction]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Prediction.KINDS[cls.KIND] = cls

    @staticmethod
    def provenance(result: Any) -> dict[str, Any]:
        """The columns every kind fills from a model-service result: which model, in what number
        format, and how long it took."""
        return {
            "model_id": result.model_id,
            "revision": result.revision,
            "precision": result.precision,
            "latency_ms": round(result.latency_ms, 1),
        }

    @staticmethod
    def classification(result: Any) -> dict[str, Any]:
        """``final_label``, ``confidence`` and ``margin`` (top score minus the runner-up) of a result that
        has a ``label``, its ``score`` and ``scores`` per class."""
        ranked = sorted(result.scores.values(), reverse=True)
        return {
            "final_label": result.label,
            "confidence": round(result.score, 4),
            "margin": round(ranked[0] - ranked[1], 4) if len(ranked) > 1 else None,
        }

    # --- what each kind defines -------------------------------------------------------------
    @classmethod
    def from_result(cls, result: Any) -> Prediction:
        """A row from the model service's result dataclass."""
        raise NotImplementedError

    @property
    def ai_value(self) -> Any:
        """The model's answer in this kind's value form (what a correction replaces)."""
        raise NotImplementedError

    @classmethod
    def parse_correction(cls, raw: Any) -> Any:
        """A human value from form or JSON input; raises ``CorrectionError``."""
        raise NotImplementedError

    @classmethod
    def csv_columns(cls) -> tuple[str, ...]:
        """Extra CSV columns of this kind, beyond the ones every kind has (see ``csv_values``)."""
        return ()

    def csv_extra(self) -> tuple[Any, ...]:
        return ()

    def search_terms(self) -> list[str]:
        """Text that history search should find this record by (kinds that write text say what)."""
        return []

    # --- shared behaviour ---------------------------------------------------------------------
    @property
    def latest_review(self) -> Review | None:
        return self.reviews[-1] if self.reviews else None

    @property
    def human_value(self) -> Any:
        """The reviewer's value when the latest decision is a correction."""
        review = self.latest_review
        return review.value if review is not None and self.review_state == CORRECTED else None

    @property
    def value(self) -> Any:
        """The value that counts: the human one wins; a rejected prediction counts for nothing."""
        if self.review_state == CORRECTED:
            return self.human_value
        if self.review_state == REJECTED:
            return None
        return self.ai_value

    @property
    def human_confirmed(self) -> bool:
        return self.review_state in (ACCEPTED, CORRECTED)

    def apply(self, review: Review) -> None:
        """Make ``review`` the one that counts (reviews are appended; the model output is untouched)."""
        self.reviews.append(review)
        self.review_state = DECISIONS[review.decision]
        value = self.value
        self.final_label = value if self.HAS_CLASSES else None
        self.analysis.refresh_search_text()

    def as_dict(self, policy: ConfidencePolicy) -> dict[str, Any]:
        review = self.latest_review
        return {
            "id": self.id,
            "kind": self.kind,
            "model": self.model_id,
            "revision": self.revision,
            "precision": self.precision,
            "latency_ms": self.latency_ms,
            "output": self.output,
            "confidence": self.confidence,
            "band": policy.band(self.confidence),
            "uncertain": policy.is_uncertain(self.confidence, self.margin),
            "value": self.value,
            "human_confirmed": self.human_confirmed,
            "review": {
                "state": self.review_state,
                "value": self.human_value,
                "reviewer": review.reviewer_name if review else None,
                "at": review.created_at.isoformat() + "Z" if review else None,
                "comment": review.comment if review else None,
            },
        }


@event.listens_for(Prediction, "before_insert", propagate=True)
def _copy_owner_and_scenario(_mapper, connection, prediction: Prediction) -> None:
    """Every way a prediction is made (a job, a migration's test data, a fixture) gets its analysis's
    owner and scenario here, so the copies can never disagree with the analysis."""
    if prediction.user_id is not None and prediction.scenario is not None:
        return
    analysis = prediction.__dict__.get("analysis")  # already loaded: no query
    if analysis is not None:
        prediction.user_id, prediction.scenario = analysis.user_id, analysis.scenario
        return
    from .analysis import Analysis

    prediction.user_id, prediction.scenario = connection.execute(
        select(Analysis.user_id, Analysis.scenario).where(Analysis.id == prediction.analysis_id)
    ).one()


MAX_OCR_CHARS = 20_000  # a dense page of text is a few thousand characters


class TextValue:
    """For kinds whose value is a text (a caption, an OCR reading, a reply draft): ``output["text"]`` is
    the model's, a correction is a stripped text of at most ``MAX_CHARS``, empty only when
    ``EMPTY_MESSAGE`` is None; ``SEARCHABLE`` kinds add both texts to the record's search text."""

    MAX_CHARS: ClassVar[int] = MAX_CORRECTION_CHARS
    EMPTY_MESSAGE: ClassVar[Any] = None  # a lazy string refusing an empty correction; None allows it
    LONG_MESSAGE: ClassVar[Any]
    SEARCHABLE: ClassVar[bool] = True

    @property
    def ai_value(self) -> str:
        return self.output["text"]

    def search_terms(self) -> list[str]:
        if not self.SEARCHABLE:
            return []
        human = self.human_value
        return [term for term in (self.ai_value, human if isinstance(human, str) else None) if term]

    @classmethod
    def parse_correction(cls, raw: Any) -> str:
        text = raw.strip() if isinstance(raw, str) else ""
        if not text and cls.EMPTY_MESSAGE is not None:
            raise CorrectionError(cls.EMPTY_MESSAGE)
        if len(text) > cls.MAX_CHARS:
            raise CorrectionError(cls.LONG_MESSAGE)
        return text


class CaptionPrediction(TextValue, Prediction):
    """A caption of the image. ``output``: ``{"text": ...}``; no confidence (generate() gives none)."""

    KIND = "caption"
    EMPTY_MESSAGE = _l("A corrected caption needs some text.")
    LONG_MESSAGE = _l("A corrected caption has at most %(max)d characters.", max=MAX_CORRECTION_CHARS)
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "caption"}

    @classmethod
    def from_result(cls, result: Any) -> CaptionPrediction:
        return cls(**cls.provenance(result), output={"text": result.text})


class LabelledOutput:
    """A kind whose model answer is one label (category, sentiment, agreement): ``output["label"]`` is
    the AI value, and ``output["scores"]``, where the model scores each class, its scores."""

    output: dict[str, Any]

    @property
    def ai_value(self) -> str:
        return self.output["label"]

    @property
    def scores(self) -> dict[str, float]:
        return self.output.get("scores") or {}


class ThreeLevelSentiment(LabelledOutput):
    """What a sentiment-valued kind shares (a model's sentiment, a fused one): ``output`` holds ``label``
    and ``scores`` per level; corrections are one of the three levels; CSV gets one column per level."""

    CSV_SCORE_PREFIX: ClassVar[str] = "score"

    @classmethod
    def parse_correction(cls, raw: Any) -> str:
        if raw not in SENTIMENT_LABELS:
            labels = ", ".join(SENTIMENT_LABELS)
            raise CorrectionError(_l("A corrected sentiment is one of: %(labels)s.", labels=labels))
        return raw

    @classmethod
    def csv_columns(cls) -> tuple[str, ...]:
        return tuple(f"{cls.CSV_SCORE_PREFIX}_{label}" for label in SENTIMENT_LABELS)

    def csv_extra(self) -> tuple[Any, ...]:
        return tuple(self.scores.get(label) for label in SENTIMENT_LABELS)


class SentimentPrediction(ThreeLevelSentiment, Prediction):
    """A sentiment. ``output``: ``label``, ``scores`` (normalised classes), ``raw_scores`` (the model's own),
    and ``text_source`` "image" when it scored the text read from the image (absent: the typed text)."""

    KIND = "sentiment"
    HAS_CLASSES = True
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "sentiment"}

    @classmethod
    def from_result(cls, result: Any) -> SentimentPrediction:
        scores = {label: round(score, 4) for label, score in result.scores.items()}
        return cls(
            **cls.provenance(result),
            **cls.classification(result),
            output={
                "label": result.label,
                "scores": scores,
                "raw_scores": {label: round(score, 4) for label, score in result.raw_scores.items()},
            },
        )

    label = LabelledOutput.ai_value  # the model's class, by its usual name

    @property
    def raw_scores(self) -> dict[str, float]:
        return self.output.get("raw_scores") or {}

    @property
    def read_from_image(self) -> bool:
        """Whether the scored text is what OCR read from the image (nothing was typed)."""
        return self.output.get("text_source") == "image"

    def mark_read_from_image(self) -> None:
        self.output = {**self.output, "text_source": "image"}


class Review(db.Model):
    """One decision about one prediction. Rows are only ever added; the latest one counts."""

    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("prediction.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    reviewer_name: Mapped[str] = mapped_column(String(64))  # kept if the account goes
    decision: Mapped[str] = mapped_column(String(16))
    value: Mapped[Any] = mapped_column(JSON, nullable=True)  # the human value of a correction
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prediction: Mapped[Prediction] = relationship(back_populates="reviews")


class OcrPrediction(TextValue, Prediction):
    """Text read from the image (a screenshot, a homework page). ``output``: ``text`` (lines in reading
    order) and ``lines`` ([text, score, box] each); ``confidence`` is the mean line score. An empty
    correction is valid: "there is no text in this image"."""

    KIND = "ocr"
    MAX_CHARS = MAX_OCR_CHARS
    LONG_MESSAGE = _l("A corrected reading has at most %(max)d characters.", max=MAX_OCR_CHARS)
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "ocr"}

    @classmethod
    def from_result(cls, result: Any) -> OcrPrediction:
        return cls(
            **cls.provenance(result),
            output={
                "text": result.text,
                "lines": [[text, round(score, 4), [list(point) for point in box]] for text, score, box in result.lines],
            },
            confidence=None if result.score is None else round(result.score, 4),
        )
