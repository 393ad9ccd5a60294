"""The service desk: what a customer message becomes for the agent, beyond sentiment and caption.

- **Category**: the message (and the text read from its screenshot) compared with each active
  category's description by the embedding model (``ModelService.categorize``); admins edit the
  categories, so this is data, not a keyword list.
- **Reply draft**: the category's saved template in the message's language, opened according to the
  sentiment. Nothing is sent anywhere; the agent's edited version is stored as the draft's correction.
- **Triage**: open conversations, most negative first, then the least confident, then the oldest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.orm import aliased

from ..extensions import db
from ..models import Analysis, Prediction, User
from ..models.service_desk import InquiryCategory

REPLY_MODEL_ID = "prism/reply-templates"
# Share of CJK characters among a message's letters above which it is answered in Chinese.
_CHINESE_SHARE = 0.3


@dataclass(frozen=True)
class CategoryDecision:
    """The category model's answer plus the descriptions it compared the message with."""

    label: str
    score: float
    scores: dict[str, float]
    similarities: dict[str, float]
    descriptions: dict[str, str]
    model_id: str
    revision: str | None
    precision: str | None
    latency_ms: float


@dataclass(frozen=True)
class ReplyDraft:
    text: str
    template_id: int | None
    category: str | None
    sentiment: str | None
    language: str
    model_id: str
    revision: str | None
    precision: str | None
    latency_ms: float


def message_language(text: str) -> str:
    """ "zh" when enough of the message's letters are Chinese characters, else "en"."""
    letters = [char for char in text if char.isalpha()]
    if not letters:
        return "en"
    chinese = sum("\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf" for char in letters)
    return "zh" if chinese / len(letters) >= _CHINESE_SHARE else "en"


def categorize(service, text: str) -> CategoryDecision:
    """The message's category among the active ones (read, then the transaction ended before the
    model runs: with SQLite an open transaction would hold the write lock through inference)."""
    categories = [(category.key, category.description) for category in InquiryCategory.active_in_order()]
    db.session.rollback()
    result = service.categorize(text, categories)
    return CategoryDecision(
        label=result.label,
        score=result.score,
        scores=dict(result.scores),
        similarities=dict(result.similarities),
        descriptions=dict(categories),
        model_id=result.model_id,
        revision=result.revision,
        precision=result.precision,
        latency_ms=result.latency_ms,
    )


_OPENINGS = {  # by sentiment, what a careful agent says first
    "negative": ("I am sorry about the trouble this has caused.", "非常抱歉给您带来了不便。"),
    "neutral": ("Thank you for contacting us.", "感谢您联系我们。"),
    "positive": ("Thank you for your kind words!", "感谢您的认可！"),
}
_CLOSINGS = ("Best regards,", "祝好，")


def draft_reply(
    category_key: str | None, sentiment: str | None, language: str, *, service=None, message: str = ""
) -> ReplyDraft:
    """A reply draft for the agent to edit, in ``language``.

    With ``PRISM_REPLY_MODEL`` configured (``service.writes_replies``), that model writes it from the
    message (and the screenshot's text) and the category's template as guidance. Otherwise, or when
    the message is empty, it is the category's template opened according to ``sentiment``. Either
    way nothing is sent anywhere.
    """
    started = time.perf_counter()
    category = db.session.scalar(select(InquiryCategory).where(InquiryCategory.key == category_key))
    template = category.template_for(language) if category is not None else None
    chinese = language == "zh"
    template_body = template.body if template is not None else ""
    template_id = template.id if template is not None else None
    template_stamp = template.updated_at.strftime("%Y%m%dT%H%M%S") if template is not None else None
    category_name = category.name if category is not None else "other"
    db.session.rollback()  # a model call may follow: hold no transaction through it
    if service is not None and service.writes_replies and message.strip():
        written = service.write_reply(_reply_prompt(message, category_name, sentiment, language, template_body))
        return ReplyDraft(
            text=written.text,
            template_id=template_id,
            category=category_key,
            sentiment=sentiment,
            language=language,
            model_id=written.model_id,
            revision=written.revision,
            precision=written.precision,
            latency_ms=written.latency_ms,
        )
    opening = _OPENINGS.get(sentiment or "neutral", _OPENINGS["neutral"])[chinese]
    parts = [opening, template_body, _CLOSINGS[chinese]]
    return ReplyDraft(
        text="\n\n".join(part for part in parts if part),
        template_id=template_id,
        category=category_key,
        sentiment=sentiment,
        language=language,
        model_id=REPLY_MODEL_ID,
        # The template's last edit identifies the "model" that wrote this draft.
        revision=template_stamp,
        precision=None,
        latency_ms=(time.perf_counter() - started) * 1000.0,
    )


def _reply_prompt(message: str, category: str, sentiment: str | None, language: str, guidance: str) -> list[dict]:
    """The chat a reply-writing model answers: the agent's brief as the system message, the
    customer's words as the user message."""
    reply_language = "Simplified Chinese" if language == "zh" else "English"
    system = (
        "You are a polite, concise customer-service agent. Write a reply to the customer's message in "
        f"{reply_language}. The inquiry is about: {category}. The customer's mood reads as "
        f"{sentiment or 'unknown'}; if negative, apologise first. Promise nothing the guidance does not. "
        f"Guidance from the team: {guidance or 'none'}. Reply with the message text only."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": message}]


def select_triage(viewer: User) -> Select:
    """Open service-desk conversations: the most negative first (the value that counts: a human
    correction wins), then the least confident category, then the oldest. Agents see their own;
    admins see everyone's."""
    sentiment = aliased(Prediction)
    category = aliased(Prediction)
    negativity = case((sentiment.final_label == "negative", 0), (sentiment.final_label == "neutral", 1), else_=2)
    statement = (
        select(Analysis)
        .outerjoin(sentiment, and_(sentiment.analysis_id == Analysis.id, sentiment.kind == "sentiment"))
        .outerjoin(category, and_(category.analysis_id == Analysis.id, category.kind == "category"))
        .where(Analysis.scenario == "service", Analysis.closed_at.is_(None))
        .order_by(negativity, func.coalesce(category.confidence, 0.0).asc(), Analysis.id.asc())
    )
    if not viewer.is_admin:
        statement = statement.where(Analysis.user_id == viewer.id)
    return statement


def category_names() -> dict[str, str]:
    """Category key -> its name, every category (an inactive one still names old predictions)."""
    return dict(db.session.execute(select(InquiryCategory.key, InquiryCategory.name)).all())
