"""Normalise any sentiment checkpoint's labels to ``negative``/``neutral``/``positive``.

Checkpoints name their classes differently ("POSITIVE", "LABEL_2", "4 stars", "neutral"); users
expect three levels with a confidence (Zendesk, Freshdesk). Probabilities of raw labels that map to
the same level are summed. A two-class model has no neutral class, so a configurable band of
P(positive) is called neutral, with confidence = how close the two classes are.
"""

from __future__ import annotations

import re

from .types import SENTIMENT_LABELS

_STAR = re.compile(r"^\s*([1-5])\s*stars?\s*$", re.IGNORECASE)


def level_of(raw_label: str, index: int, num_labels: int) -> str:
    """Map one raw class name to a sentiment level; unnamed ``LABEL_i`` classes map by position."""
    name = raw_label.strip().lower()
    star = _STAR.match(name)
    if star:
        stars = int(star.group(1))
        return "negative" if stars <= 2 else "neutral" if stars == 3 else "positive"
    if name.startswith("neg"):
        return "negative"
    if name.startswith("pos"):
        return "positive"
    if name.startswith("neu"):
        return "neutral"
    if num_labels == 2:
        return ("negative", "positive")[index]
    if num_labels == 3:
        return SENTIMENT_LABELS[index]
    raise ValueError(f"cannot map sentiment label {raw_label!r} to negative/neutral/positive")


def normalise(raw_scores: dict[str, float], neutral_range: tuple[float, float]) -> tuple[str, float, dict[str, float]]:
    """Return ``(label, confidence, scores)`` from a checkpoint's probabilities (in id order)."""
    names = list(raw_scores)
    levels: dict[str, float] = {}
    for index, name in enumerate(names):
        level = level_of(name, index, len(names))
        levels[level] = levels.get(level, 0.0) + float(raw_scores[name])
    if "neutral" not in levels:
        positive = levels.get("positive", 0.0)
        negative = levels.get("negative", 0.0)
        scores = {"negative": negative, "positive": positive}
        low, high = neutral_range
        if low <= positive <= high:
            return "neutral", 1.0 - abs(positive - negative), scores
        label = "positive" if positive > negative else "negative"
        return label, scores[label], scores
    scores = {level: levels.get(level, 0.0) for level in SENTIMENT_LABELS}
    label = max(scores, key=scores.__getitem__)
    return label, scores[label], scores
