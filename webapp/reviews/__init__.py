"""Accept, correct, reject, reopen: the one review engine every scenario, page and the API use.

A review is appended, never edited, and the model's output it judges is never changed; the latest
review counts (``Prediction.apply``). Who may review: the record's owner, when their role may work in
the record's scenario (``Scenario.may_review``). Admins read and audit; they review only where their
role is listed, as anyone else.
"""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import Select, case, select

from .. import audit
from ..analyses import ScenarioForbidden, confidence_policy
from ..extensions import db
from ..models import DECISIONS, UNREVIEWED, Analysis, CorrectionError, Prediction, Review, User
from ..scenarios import SCENARIO_PAGES

MAX_COMMENT_CHARS = 2000


class ReviewInputError(ValueError):
    """The review cannot be recorded as sent; the message (a lazy string) is safe to show."""


def may_review(user: User, analysis: Analysis) -> bool:
    return analysis.user_id == user.id and SCENARIO_PAGES[analysis.scenario].may_review(user)


def record_review(
    prediction: Prediction, reviewer: User, decision: str, value: Any = None, comment: str | None = None
) -> Review:
    """Validate and append a decision, make it the one that counts, audit it; the caller commits.

    Raises ``ScenarioForbidden`` (role or ownership) or ``ReviewInputError``.
    """
    if not may_review(reviewer, prediction.analysis):
        raise ScenarioForbidden(prediction.analysis.scenario)
    if prediction.analysis.signed_off_at is not None:
        raise ReviewInputError(_l("This case is signed off: its decisions are final."))
    if decision not in DECISIONS:
        raise ReviewInputError(_l("'decision' must be one of: %(choices)s.", choices=", ".join(DECISIONS)))
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        raise ReviewInputError(_l("A comment has at most %(max)d characters.", max=MAX_COMMENT_CHARS))
    if decision == "correct":
        try:
            value = type(prediction).parse_correction(value)
        except CorrectionError as exc:
            raise ReviewInputError(exc.args[0]) from None
        if value == prediction.ai_value:
            decision = "accept"  # "correcting" to the model's own answer is agreeing with it
            value = None
    else:
        value = None
    previous = prediction.review_state
    review = Review(
        reviewer_id=reviewer.id, reviewer_name=reviewer.username, decision=decision, value=value, comment=comment
    )
    prediction.apply(review)
    db.session.flush()
    audit.record(
        audit.REVIEW_RECORDED,
        actor=reviewer,
        target=prediction.analysis,
        details={"prediction": prediction.id, "kind": prediction.kind, "decision": decision, "from": previous},
    )
    return review


def select_queue(user: User, scenario: str) -> Select:
    """``user``'s unreviewed predictions in ``scenario``: uncertain ones first, then the least confident
    (no reported confidence counts as least), then the oldest (analysis ids rise with time).

    It reads only ``prediction`` (which carries its analysis's owner and scenario) through
    ``ix_prediction_queue``: joining analyses to filter and sort made the queue the slowest page at
    100k records on PostgreSQL (``manage.py bench``)."""
    policy = confidence_policy()
    return (
        select(Prediction)
        .where(Prediction.user_id == user.id, Prediction.scenario == scenario, Prediction.review_state == UNREVIEWED)
        .order_by(
            case((policy.uncertain_clause(), 0), else_=1),
            Prediction.confidence.asc().nulls_first(),
            Prediction.analysis_id.asc(),
            Prediction.id.asc(),
        )
    )
