"""Creating, finding and deleting analyses: the one code path shared by the web pages and the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from datetime import time as day_time

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import Select, func, or_, select

from . import __version__, audit
from .extensions import db
from .inference import get_model_service
from .models import SCENARIOS, SENTIMENT_LABELS, Analysis, User
from .storage import ImageStore, ValidatedImage, validate_image


class AnalysisInputError(ValueError):
    """The submission cannot be analysed; the message is safe to show to the user (a plain or lazy string)."""


def image_store() -> ImageStore:
    return ImageStore(current_app.config["UPLOAD_FOLDER"])


def validate_upload(data: bytes, filename: str | None) -> ValidatedImage:
    """Validate uploaded bytes with this app's limits (raises ``storage.UploadRejected``)."""
    return validate_image(
        data,
        filename,
        max_bytes=current_app.config["PRISM_MAX_IMAGE_BYTES"],
        max_pixels=current_app.config["PRISM_MAX_IMAGE_PIXELS"],
    )


def create_analysis(user: User, scenario: str, text: str | None, image: ValidatedImage | None) -> Analysis:
    """Run the models on the inputs and store the record, its image and its audit row.

    Raises ``AnalysisInputError`` for unusable input and ``ModelUnavailable`` when a model is not
    ready; in both cases nothing is written. The caller commits.
    """
    text = (text or "").strip() or None
    if scenario not in SCENARIOS:
        raise AnalysisInputError(_l("Unknown scenario %(scenario)r.", scenario=scenario))
    if text is None and image is None:
        raise AnalysisInputError(_l("Add an image, a text, or both."))
    max_chars = current_app.config["PRISM_MAX_TEXT_CHARS"]
    if text is not None and len(text) > max_chars:
        raise AnalysisInputError(_l("The text is longer than %(max)d characters.", max=max_chars))

    # Every SQLite transaction here is BEGIN IMMEDIATE (see database.py), and loading the user opened
    # one. End it before inference so a slow model never holds the database's write lock.
    db.session.rollback()

    service = get_model_service()
    service.start_loading(caption=image is not None, sentiment=text is not None)
    caption = service.caption(image.to_rgb()) if image is not None else None
    sentiment = service.sentiment(text) if text is not None else None

    if image is not None:
        image_store().save(image)
    analysis = Analysis(
        user=user,
        scenario=scenario,
        text=text,
        app_version=__version__,
    )
    if image is not None:
        analysis.image_sha256 = image.sha256
        analysis.image_format = image.format
        analysis.image_width = image.width
        analysis.image_height = image.height
        analysis.image_filename = image.filename
    if caption is not None:
        analysis.caption = caption.text
        analysis.caption_model = caption.model_id
        analysis.caption_revision = caption.revision
        analysis.caption_precision = caption.precision
        analysis.caption_ms = round(caption.latency_ms, 1)
    if sentiment is not None:
        analysis.sentiment_label = sentiment.label
        analysis.sentiment_score = round(sentiment.score, 4)
        analysis.sentiment_scores = {k: round(v, 4) for k, v in sentiment.scores.items()}
        analysis.sentiment_raw_scores = {k: round(v, 4) for k, v in sentiment.raw_scores.items()}
        analysis.sentiment_model = sentiment.model_id
        analysis.sentiment_revision = sentiment.revision
        analysis.sentiment_precision = sentiment.precision
        analysis.sentiment_ms = round(sentiment.latency_ms, 1)
    db.session.add(analysis)
    db.session.flush()
    audit.record(
        audit.ANALYSIS_CREATED,
        actor=user,
        target=analysis,
        details={"scenario": scenario, "image": image is not None, "text": text is not None},
    )
    return analysis


def delete_analysis(analysis: Analysis) -> None:
    """Delete the row; remove its image file unless another record shares the same content."""
    sha256, image_format = analysis.image_sha256, analysis.image_format
    audit.record(audit.ANALYSIS_DELETED, target=analysis, details={"owner_id": analysis.user_id})
    db.session.delete(analysis)
    db.session.flush()
    if sha256 and image_format:
        still_used = db.session.scalar(select(Analysis.id).where(Analysis.image_sha256 == sha256).limit(1))
        if still_used is None:
            image_store().delete(sha256, image_format)


@dataclass(frozen=True)
class HistoryFilters:
    """Filters shared by the history page, the admin view and the exports (all optional)."""

    scenario: str | None = None
    sentiment: str | None = None
    query: str | None = None
    owner: str | None = None  # admin only: a username
    date_from: datetime | None = None
    date_to: datetime | None = None

    @classmethod
    def from_args(cls, args, *, allow_owner: bool = False) -> HistoryFilters:
        scenario = args.get("scenario") or None
        sentiment = args.get("sentiment") or None
        return cls(
            scenario=scenario if scenario in SCENARIOS else None,
            sentiment=sentiment if sentiment in SENTIMENT_LABELS else None,
            query=(args.get("q") or "").strip()[:200] or None,
            owner=((args.get("owner") or "").strip()[:64] or None) if allow_owner else None,
            date_from=_parse_day(args.get("from")),
            date_to=_parse_day(args.get("to"), end_of_day=True),
        )

    def as_args(self) -> dict[str, str]:
        """Query-string form, for pagination and export links."""
        args = {
            "scenario": self.scenario,
            "sentiment": self.sentiment,
            "q": self.query,
            "owner": self.owner,
            "from": self.date_from.date().isoformat() if self.date_from else None,
            "to": self.date_to.date().isoformat() if self.date_to else None,
        }
        return {key: value for key, value in args.items() if value}

    def apply(self, statement: Select) -> Select:
        if self.scenario:
            statement = statement.where(Analysis.scenario == self.scenario)
        if self.sentiment:
            statement = statement.where(Analysis.sentiment_label == self.sentiment)
        if self.query:
            pattern = "%" + self.query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            statement = statement.where(
                or_(
                    Analysis.text.like(pattern, escape="\\"),
                    Analysis.caption.like(pattern, escape="\\"),
                    Analysis.image_filename.like(pattern, escape="\\"),
                )
            )
        if self.owner:
            statement = statement.join(Analysis.user).where(func.lower(User.username) == self.owner.lower())
        if self.date_from:
            statement = statement.where(Analysis.created_at >= self.date_from)
        if self.date_to:
            statement = statement.where(Analysis.created_at <= self.date_to)
        return statement


def _parse_day(value: str | None, *, end_of_day: bool = False) -> datetime | None:
    try:
        day = datetime.strptime((value or "").strip(), "%Y-%m-%d").date()
    except ValueError:
        return None
    return datetime.combine(day, day_time.max if end_of_day else day_time.min)


def select_history(filters: HistoryFilters, *, owner: User | None) -> Select:
    """Newest-first records matching ``filters``; scoped to ``owner`` unless ``owner`` is None (admin)."""
    statement = select(Analysis)
    if owner is not None:
        statement = statement.where(Analysis.user_id == owner.id)
    return filters.apply(statement).order_by(Analysis.created_at.desc(), Analysis.id.desc())


def get_visible_analysis(analysis_id: int, viewer: User) -> Analysis | None:
    """The record if ``viewer`` may see it (its owner, or an admin); None otherwise.

    The ownership check is in the query, so another user's id behaves exactly like a missing one.
    """
    statement = select(Analysis).where(Analysis.id == analysis_id)
    if not viewer.is_admin:
        statement = statement.where(Analysis.user_id == viewer.id)
    return db.session.scalar(statement)
