"""Multimodal fusion: one sentiment from a record's text and its image, and how well the two agree.

**Late fusion.** Each part of a record (the typed ``text``, the image's ``caption``, the ``ocr`` text
read from it) is scored by the sentiment model on its own, normalised to the three levels
(``inference.labels.normalise``); the overall sentiment is their weighted mean

    fused(level) = sum_i w_i * p_i(level) / sum_i w_i   over the parts present,

with label = argmax and confidence = the label's fused score (for a two-class sentiment model, whose
parts have no neutral score, the label comes from the fused scores as it would from one text's:
``labels.normalise`` with PRISM_SENTIMENT_NEUTRAL_RANGE). A part that is missing or empty drops out and
the remaining weights are renormalised by the division. Weights: PRISM_FUSION_WEIGHTS.

**Agreement.** How well the image matches what it should be about (the record's text; for a homework
photo: its assignment's title and reference text), flagged as a mismatch below a threshold. Two methods:

- *Joint image-text embedding* (PRISM_AGREEMENT_MODEL set: a CLIP-style checkpoint). With the model's
  image tower f and text tower g (projections included),

      similarity = f(image) . g(text) / (|f(image)| |g(text)|)

  on the record's image itself; a text longer than the model's positions (CLIP: 77 tokens) is cut to its
  start. Flagged below PRISM_AGREEMENT_MODEL_THRESHOLD: CLIP cosines run lower than a sentence
  encoder's (matching pairs ~0.25..0.35, unrelated ones ~0.1..0.2).
- *Caption and OCR text vs text* (unset, the default). The cosine similarity of the sentence embeddings
  of the text and of the image's caption and OCR text together, flagged below PRISM_AGREEMENT_THRESHOLD.

The stored prediction says which method, model and revision made it.

Plain Python on the model service's results: no torch here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .inference.labels import normalise
from .inference.types import SENTIMENT_LABELS

if TYPE_CHECKING:
    from PIL import Image

    from .inference import ModelService

FUSION_PARTS = ("text", "caption", "ocr")
MATCHES, MISMATCH = "matches", "mismatch"
AGREEMENT_LABELS = (MATCHES, MISMATCH)
# How an agreement was computed (stored in its output, shown with it).
JOINT_EMBEDDING, CAPTION_AND_OCR = "joint image-text embedding", "caption and OCR text vs text"
FUSION_MODEL_ID = "prism/late-fusion"


def parse_weights(raw: str | Mapping[str, Any]) -> dict[str, float]:
    """``"text=0.6,caption=0.2,ocr=0.2"`` (or a mapping) as ``{part: weight}`` for every part in
    ``FUSION_PARTS`` (an unnamed part weighs 0); raises ``ValueError`` on an unknown part, a weight that
    is negative or not a number, or weights that sum to 0."""
    if isinstance(raw, Mapping):
        items = list(raw.items())
    else:
        items = []
        for entry in str(raw).split(","):
            if not entry.strip():
                continue
            name, equals, value = entry.partition("=")
            if not equals:
                raise ValueError(f"PRISM_FUSION_WEIGHTS: {entry.strip()!r} is not part=weight")
            items.append((name.strip(), value.strip()))
    weights = dict.fromkeys(FUSION_PARTS, 0.0)
    for name, value in items:
        if name not in weights:
            raise ValueError(f"PRISM_FUSION_WEIGHTS: unknown part {name!r} (parts: {', '.join(FUSION_PARTS)})")
        try:
            weight = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"PRISM_FUSION_WEIGHTS: the weight of {name} is not a number") from None
        if not weight >= 0.0 or weight == float("inf"):
            raise ValueError(f"PRISM_FUSION_WEIGHTS: the weight of {name} must be a finite number >= 0")
        weights[name] = weight
    if sum(weights.values()) <= 0.0:
        raise ValueError("PRISM_FUSION_WEIGHTS: at least one weight must be above 0")
    return weights


def parse_threshold(raw: Any, name: str = "PRISM_AGREEMENT_THRESHOLD") -> float:
    """A cosine similarity threshold, within -1..1; ``name`` is the setting a ``ValueError`` names."""
    try:
        threshold = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number (a cosine similarity within -1..1)") from None
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"{name} must be a cosine similarity within -1..1")
    return threshold


def fuse(
    parts: Mapping[str, Mapping[str, float] | None],
    weights: Mapping[str, float],
    neutral_range: tuple[float, float] = (0.35, 0.65),
) -> dict[str, Any]:
    """The weighted mean of the parts' level scores (see the module docstring): ``label``, ``score``,
    ``scores`` (per level any part has) and ``weights`` (of the parts used, renormalised to sum to 1).
    A part with no scores or a zero weight is left out; raises ``ValueError`` when none is left."""
    used = {name: scores for name, scores in parts.items() if scores and weights.get(name, 0.0) > 0.0}
    if not used:
        raise ValueError("fuse() needs at least one part with scores and a weight above 0")
    total = sum(weights[name] for name in used)
    levels = [level for level in SENTIMENT_LABELS if any(level in scores for scores in used.values())]
    fused = {
        level: sum(weights[name] * float(scores.get(level, 0.0)) for name, scores in used.items()) / total
        for level in levels
    }
    label, score, scores = normalise(fused, neutral_range)
    return {
        "label": label,
        "score": score,
        "scores": scores,
        "weights": {name: weights[name] / total for name in used},
    }


def cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The dot product of two unit vectors (``ModelService.embed`` returns unit length; a zero vector,
    an empty text's, gives 0)."""
    return sum(x * y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class FusionResult:
    """A late-fused sentiment. ``parts`` holds, per part used: its ``text``, its normalised ``scores``,
    its ``label`` and its renormalised ``weight``; ``configured`` the weights as set."""

    label: str
    score: float
    scores: dict[str, float]
    parts: dict[str, dict[str, Any]]
    configured: dict[str, float]
    model_id: str
    revision: str | None
    latency_ms: float
    precision: str | None = None


@dataclass(frozen=True)
class AgreementResult:
    """How well a record's text and its image agree: the cosine ``similarity`` by ``method``, ``flagged``
    when below ``threshold``. ``texts`` holds what was compared: ``{"text": ..., "image": ...}`` (the
    image's caption and OCR text) for CAPTION_AND_OCR, ``{"text": ...}`` for JOINT_EMBEDDING, which
    compared the image itself; ``truncated``: the text was cut to the joint model's length."""

    similarity: float
    threshold: float
    texts: dict[str, str]
    reference: str  # what the image was compared with: "text" (the record's) or "assignment"
    model_id: str
    revision: str | None
    latency_ms: float
    precision: str | None = None
    method: str = CAPTION_AND_OCR
    truncated: bool = False

    @property
    def flagged(self) -> bool:
        return self.similarity < self.threshold

    @property
    def label(self) -> str:
        return MISMATCH if self.flagged else MATCHES


def late_fusion(
    service: ModelService,
    text_sentiment: Mapping[str, Any] | None,
    texts: Mapping[str, str | None],
    weights: Mapping[str, float],
) -> FusionResult | None:
    """Fuse the text's stored sentiment output ``text_sentiment`` (``label``, ``scores``) with the
    sentiment of each other part's text in ``texts`` (caption, OCR), scored now; None without the text's
    scores or any image part to fuse with (fusing the text with nothing would only copy its sentiment)."""
    started = time.perf_counter()
    image_texts = {name: (texts.get(name) or "").strip() for name in FUSION_PARTS if name != "text"}
    image_texts = {name: text for name, text in image_texts.items() if text and weights.get(name, 0.0) > 0.0}
    text_scores = (text_sentiment or {}).get("scores")
    if not text_scores or not image_texts:
        return None
    scored = {name: service.sentiment(text) for name, text in image_texts.items()}
    parts_scores = {"text": dict(text_scores), **{name: dict(result.scores) for name, result in scored.items()}}
    part_labels = {"text": text_sentiment["label"], **{name: result.label for name, result in scored.items()}}
    fused = fuse(parts_scores, weights, service.settings.neutral_range)
    parts = {
        name: {
            "text": (texts.get(name) or "") if name == "text" else image_texts[name],
            "label": part_labels[name],
            "scores": {level: round(float(score), 4) for level, score in scores.items()},
            "weight": round(fused["weights"][name], 4),
        }
        for name, scores in parts_scores.items()
        if name in fused["weights"]
    }
    model = next(iter(scored.values()))
    return FusionResult(
        label=fused["label"],
        score=fused["score"],
        scores=fused["scores"],
        parts=parts,
        configured=dict(weights),
        model_id=model.model_id,
        revision=model.revision,
        precision=model.precision,
        latency_ms=(time.perf_counter() - started) * 1000.0,
    )


def agreement(
    service: ModelService, reference: str, image_text: str, threshold: float, *, source: str
) -> AgreementResult | None:
    """The agreement of ``reference`` (the record's text, or its assignment's) with what the image shows
    (``image_text``: caption and OCR); None when either is empty."""
    reference, image_text = (reference or "").strip(), (image_text or "").strip()
    if not reference or not image_text:
        return None
    result = service.embed([reference, image_text])
    similarity = cosine(result.vectors[0], result.vectors[1])
    return AgreementResult(
        similarity=similarity,
        threshold=threshold,
        texts={"text": reference, "image": image_text},
        reference=source,
        model_id=result.model_id,
        revision=result.revision,
        precision=result.precision,
        latency_ms=result.latency_ms,
        method=CAPTION_AND_OCR,
    )


def joint_agreement(
    service: ModelService, reference: str, image: Image.Image, threshold: float, *, source: str
) -> AgreementResult | None:
    """The agreement of ``reference`` with ``image`` itself, by the joint image-text model
    (PRISM_AGREEMENT_MODEL); None when the reference is empty."""
    reference = (reference or "").strip()
    if not reference:
        return None
    result = service.image_text_similarity(image, reference)
    return AgreementResult(
        similarity=result.similarity,
        threshold=threshold,
        texts={"text": reference},
        reference=source,
        model_id=result.model_id,
        revision=result.revision,
        precision=result.precision,
        latency_ms=result.latency_ms,
        method=JOINT_EMBEDDING,
        truncated=result.truncated,
    )
