"""ORM models (SQLAlchemy 2.0 style), one module per area; import them from here.

``AuditEvent`` rows are append-only: the migration installs triggers that abort any UPDATE or DELETE.
"""

from .analysis import DONE, FAILED, PENDING, RUNNING, SCENARIOS, STATUSES, Analysis, Batch, job_progress
from .annotation import SHAPES, RegionAnnotation
from .audit import AuditEvent
from .base import count, utcnow
from .education import Assignment, GradePrediction, Rubric, RubricCriterion, Submission
from .explanation import ExplanationPrediction
from .fusion import AgreementPrediction, FusionPrediction
from .prediction import (
    BANDS,
    DECISIONS,
    NOT_REVIEWABLE,
    REVIEW_STATES,
    SENTIMENT_LABELS,
    UNREVIEWED,
    CaptionPrediction,
    ConfidencePolicy,
    CorrectionError,
    OcrPrediction,
    Prediction,
    Review,
    SentimentPrediction,
)
from .service_desk import CategoryPrediction, InquiryCategory, ReplyPrediction, ReplyTemplate
from .user import API_TOKEN_PREFIX, ROLES, ApiToken, User
from .worker import Worker

__all__ = [
    "API_TOKEN_PREFIX",
    "BANDS",
    "DECISIONS",
    "DONE",
    "FAILED",
    "NOT_REVIEWABLE",
    "PENDING",
    "REVIEW_STATES",
    "ROLES",
    "RUNNING",
    "SCENARIOS",
    "SENTIMENT_LABELS",
    "UNREVIEWED",
    "STATUSES",
    "AgreementPrediction",
    "Analysis",
    "ApiToken",
    "Assignment",
    "AuditEvent",
    "Batch",
    "CaptionPrediction",
    "CategoryPrediction",
    "InquiryCategory",
    "OcrPrediction",
    "RegionAnnotation",
    "ReplyPrediction",
    "SHAPES",
    "ReplyTemplate",
    "ConfidencePolicy",
    "CorrectionError",
    "ExplanationPrediction",
    "FusionPrediction",
    "GradePrediction",
    "Prediction",
    "Review",
    "Rubric",
    "RubricCriterion",
    "SentimentPrediction",
    "Submission",
    "User",
    "Worker",
    "count",
    "job_progress",
    "utcnow",
]
