"""Explanations on demand: asking for one, the job step that makes it, and what pages and the API show.

An explanation is one more task of the record's own job, not a job of its own: asking for it appends
``explanation`` to the analysis's ``tasks`` and puts the analysis back in line (one conditional UPDATE,
so two clicks queue it once). The runner then makes only what is missing, stores one ``explanation``
prediction, and the record's job status (queued, running, done, failed with Retry) reads as it does for
every other result. A later request finds the stored prediction and computes nothing.

What is explained is what the record shows: the caption model's own caption of the stored image (a
reviewer's correction is not the model's, so its attention cannot explain it), and the text the
sentiment model scored (the typed text, or the text read from the image).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from .extensions import db
from .inference import ModelService
from .models import DONE, FAILED, PENDING, RUNNING, Analysis, Prediction, utcnow
from .models.explanation import ExplanationResult

KIND = "explanation"
# What the page and the API say about a record's explanation.
READY, COMPUTING, FAILED_STATE, ABSENT, BUSY, NOTHING = "ready", "computing", "failed", "absent", "busy", "nothing"
ATTRIBUTION_LEVELS = 4  # CSS classes attr-pos-1..4 / attr-neg-1..4: the page's CSP allows no inline styles


def explainable(analysis: Analysis) -> bool:
    """Whether the record has something to explain: a caption of its image, or a sentiment."""
    caption = analysis.prediction("caption")
    return (caption is not None and analysis.image_sha256 is not None) or analysis.prediction("sentiment") is not None


def explanation_state(analysis: Analysis) -> str:
    """``ready`` (stored), ``computing`` (queued or running), ``failed`` (its job failed: ask again to
    retry), ``busy`` (the record's first job is still running), ``absent`` (never asked for), or
    ``nothing`` (no caption and no sentiment to explain)."""
    if analysis.prediction(KIND) is not None:
        return READY
    asked = KIND in (analysis.tasks or ())
    if asked and analysis.status in (PENDING, RUNNING):
        return COMPUTING
    if not analysis.is_finished:
        return BUSY
    if not explainable(analysis):
        return NOTHING
    return FAILED_STATE if asked and analysis.status == FAILED else ABSENT


def request_explanation(analysis: Analysis) -> str:
    """Queue the explanation of ``analysis`` unless it is stored or on its way; returns the state after.

    Commits, then enqueues (``enqueue_analyses``'s rule). The UPDATE is conditional on the job being
    finished, so of two requests at once only one puts the record back in line.
    """
    from .jobs import enqueue_analyses  # the job package imports this module's job step

    state = explanation_state(analysis)
    if state not in (ABSENT, FAILED_STATE):
        return state
    tasks = [*analysis.tasks, KIND] if KIND not in analysis.tasks else list(analysis.tasks)
    queued = db.session.execute(
        update(Analysis)
        .where(Analysis.id == analysis.id, Analysis.status.in_((DONE, FAILED)))
        .values(status=PENDING, tasks=tasks, attempts=0, queued_at=utcnow(), error=None, error_info=None)
    ).rowcount
    db.session.commit()
    if queued:
        enqueue_analyses([analysis.id])
    db.session.refresh(analysis)
    return explanation_state(analysis)


def _stored_outputs(analysis_id: int) -> dict[str, dict[str, Any]]:
    """The caption and sentiment outputs stored for the record (ends its transaction: a model call follows)."""
    rows = db.session.execute(
        select(Prediction.kind, Prediction.output).where(
            Prediction.analysis_id == analysis_id, Prediction.kind.in_(("caption", "sentiment"))
        )
    ).all()
    db.session.rollback()
    return {kind: output for kind, output in rows}


def explain(service: ModelService, inputs: Any) -> ExplanationResult | None:
    """The job step (``runner.RUNNERS``): heatmaps of the stored caption over the stored image, and
    attributions of the text the sentiment model scored; None when there is neither to explain."""
    stored = _stored_outputs(inputs.analysis_id)
    caption = stored["caption"].get("text") if "caption" in stored and inputs.image_sha256 else None
    text = inputs.words if "sentiment" in stored else ""
    if not caption and not text:
        return None
    return ExplanationResult(
        caption=service.explain_caption(inputs.image, caption) if caption else None,
        sentiment=service.explain_sentiment(text) if text else None,
    )


def _level(value: float, scale: float) -> int:
    """1..ATTRIBUTION_LEVELS: how strong an attribution is next to the text's strongest one."""
    return max(1, min(ATTRIBUTION_LEVELS, round(abs(value) / scale * ATTRIBUTION_LEVELS))) if scale else 1


def text_segments(sentiment: dict[str, Any]) -> list[dict[str, Any]]:
    """The explained text cut at its tokens' character spans, in order: plain pieces between tokens
    (``{"text"}``) and tokens (``{"text", "value", "sign", "level"}``). A Chinese token is its own
    characters, so the page highlights exactly the characters the tokenizer made one piece of."""
    text = sentiment["text"]
    pairs = sorted(zip((tuple(span) for span in sentiment["spans"]), sentiment["attributions"], strict=True))
    scale = max((abs(value) for value in sentiment["attributions"]), default=0.0)
    pieces: list[dict[str, Any]] = []
    cursor = 0
    for (start, end), value in pairs:
        if start < cursor or end <= start:  # overlapping or empty pieces: the text is shown once
            continue
        if start > cursor:
            pieces.append({"text": text[cursor:start]})
        sign = "pos" if value > 0 else "neg" if value < 0 else "zero"
        pieces.append({"text": text[start:end], "value": value, "sign": sign, "level": _level(value, scale)})
        cursor = end
    if cursor < len(text):
        pieces.append({"text": text[cursor:]})
    return pieces


def strongest(sentiment: dict[str, Any], sign: int, limit: int = 5) -> list[str]:
    """The tokens that pushed hardest toward (``sign`` 1) or away from (-1) the label: the legend in
    words, so colour is never the only cue."""
    text = sentiment["text"]
    ranked = sorted(
        (value * sign, text[start:end])
        for (start, end), value in zip(sentiment["spans"], sentiment["attributions"], strict=True)
        if value * sign > 0
    )
    return [token for _, token in reversed(ranked[-limit:])]


def api_payload(prediction: Prediction) -> dict[str, Any]:
    """The API's 200 answer: the heatmaps (per word and overall) with the patch grid, the token
    attributions, and which model made each part."""
    caption, sentiment = prediction.output.get("caption"), prediction.output.get("sentiment")
    return {
        "status": READY,
        "id": prediction.analysis_id,
        "created_at": prediction.created_at.isoformat() + "Z",
        "caption": caption,
        "sentiment": sentiment,
        "model": prediction.model_id,
        "revision": prediction.revision,
        "precision": prediction.precision,
        "latency_ms": prediction.latency_ms,
    }
