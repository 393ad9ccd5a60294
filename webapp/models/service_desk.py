"""The service desk's own data: inquiry categories, reply templates, and two prediction kinds.

Categories are data, not code: admins edit the list and each category's description, and the
category model compares a message with those descriptions (``webapp.service_desk``). A category
prediction keeps the descriptions it was compared with, so a later edit never rewrites what the
model saw. Reply templates are per category and language; a reply draft records the template it
started from, and the agent's edited text is stored as the draft's correction (never sent anywhere).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from flask_babel import lazy_gettext as _l
from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import utcnow
from .prediction import CorrectionError, LabelledOutput, Prediction, TextValue

REPLY_LANGUAGES = ("en", "zh")
MAX_REPLY_CHARS = 5000


class InquiryCategory(db.Model):
    __tablename__ = "inquiry_category"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(32), unique=True)  # stored in predictions; never renamed
    name: Mapped[str] = mapped_column(String(64))
    # What the category model reads: say what such messages are about, in the customers' languages.
    description: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(default=0)
    active: Mapped[bool] = mapped_column(default=True)

    templates: Mapped[list[ReplyTemplate]] = relationship(
        back_populates="category", cascade="all, delete-orphan", order_by="ReplyTemplate.language"
    )

    @classmethod
    def active_in_order(cls) -> list[InquiryCategory]:
        return list(db.session.scalars(select(cls).where(cls.active).order_by(cls.position, cls.id)))

    def template_for(self, language: str) -> ReplyTemplate | None:
        return next((t for t in self.templates if t.language == language), None) or next(iter(self.templates), None)


class ReplyTemplate(db.Model):
    __tablename__ = "reply_template"
    __table_args__ = (
        UniqueConstraint("category_id", "language", name="uq_reply_template_category_language"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("inquiry_category.id", ondelete="CASCADE"))
    language: Mapped[str] = mapped_column(String(8))
    body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))

    category: Mapped[InquiryCategory] = relationship(back_populates="templates")


class CategoryPrediction(LabelledOutput, Prediction):
    """The inquiry's category. ``output``: ``label`` (a category key), ``scores`` per key, the cosine
    ``similarities``, and the ``descriptions`` the message was compared with."""

    KIND = "category"
    HAS_CLASSES = True
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "category"}

    @classmethod
    def from_result(cls, result: Any) -> CategoryPrediction:
        return cls(
            **cls.provenance(result),
            **cls.classification(result),
            output={
                "label": result.label,
                "scores": {key: round(score, 4) for key, score in result.scores.items()},
                "similarities": {key: round(value, 4) for key, value in result.similarities.items()},
                "descriptions": dict(getattr(result, "descriptions", {}) or {}),
            },
        )

    @classmethod
    def parse_correction(cls, raw: Any) -> str:
        keys = list(db.session.scalars(select(InquiryCategory.key).where(InquiryCategory.active)))
        if raw not in keys:
            raise CorrectionError(_l("A corrected category is one of: %(keys)s.", keys=", ".join(keys)))
        return raw


class ReplyPrediction(TextValue, Prediction):
    """A reply draft for the agent. ``output``: ``text``, and what it was made from (``template_id``,
    ``category``, ``sentiment``, ``language``). The agent's edited version is its correction. Drafts
    are not searched: they repeat the templates."""

    KIND = "reply"
    MAX_CHARS = MAX_REPLY_CHARS
    EMPTY_MESSAGE = _l("An edited reply needs some text.")
    LONG_MESSAGE = _l("A reply has at most %(max)d characters.", max=MAX_REPLY_CHARS)
    SEARCHABLE = False
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "reply"}

    @classmethod
    def from_result(cls, result: Any) -> ReplyPrediction:
        return cls(
            **cls.provenance(result),
            output={
                "text": result.text,
                "template_id": result.template_id,
                "category": result.category,
                "sentiment": result.sentiment,
                "language": result.language,
            },
        )
