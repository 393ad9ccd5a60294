"""Plain values the model service hands to the rest of the app.

Views and the API only ever see these frozen dataclasses (never tensors), so nothing outside
``webapp.inference`` needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

SENTIMENT_LABELS = ("negative", "neutral", "positive")
# Every kind of model the service runs, in the order ``ModelService.statuses()`` lists them.
MODEL_KINDS = ("caption", "sentiment", "ocr", "embedding")


class ModelState(StrEnum):
    NOT_LOADED = "not_loaded"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class GeneratedText:
    """Text a model generated: an image's caption, or a reply draft written for a chat."""

    text: str
    model_id: str
    revision: str | None
    latency_ms: float
    precision: str = "fp32"  # the number format it ran in: outputs can differ slightly between them


@dataclass(frozen=True)
class SentimentResult:
    """A sentiment normalised to ``negative``/``neutral``/``positive``.

    ``score`` is the confidence of ``label``; ``scores`` holds every normalised class score and
    ``raw_scores`` the checkpoint's own labels, so a reviewer can see what the model really said.
    """

    label: str
    score: float
    scores: dict[str, float]
    raw_scores: dict[str, float]
    model_id: str
    revision: str | None
    latency_ms: float
    precision: str = "fp32"  # the number format it ran in: outputs can differ slightly between them


class OcrLine(NamedTuple):
    """One line of recognised text: its text, the recogniser's confidence (0..1), and its box.

    ``box`` is four (x, y) corners in pixels of the submitted image, clockwise from the top left.
    """

    text: str
    score: float
    box: tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class OcrResult:
    """The text found in an image, kept exactly as the recogniser returned it.

    ``text`` is the lines joined with newlines in reading order (top to bottom, then left to right
    within a line). ``score`` is the mean line confidence, or None when no text was found (then
    ``text`` is empty and ``lines`` too).
    """

    text: str
    lines: tuple[OcrLine, ...]
    score: float | None
    model_id: str
    revision: str | None
    latency_ms: float
    precision: str = "fp32"


@dataclass(frozen=True)
class EmbeddingResult:
    """One unit-length vector per input text, in input order: their dot product is their cosine similarity.

    Vectors of different models (or revisions) live in different spaces and must never be compared.
    """

    vectors: tuple[tuple[float, ...], ...]
    model_id: str
    revision: str | None
    latency_ms: float
    precision: str = "fp32"

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0


@dataclass(frozen=True)
class ImageTextSimilarity:
    """How well an image and a text match in a joint image-text model's space (CLIP-style).

    ``image_vector`` and ``text_vector`` are the model's image and text embeddings scaled to unit length,
    so ``similarity`` is their dot product, the cosine. Cosines of such models sit on their own scale
    (CLIP: matching pairs ~0.25..0.35, unrelated ~0.1..0.2), not a sentence encoder's. ``text_tokens`` is
    how many tokens the text has; beyond ``max_text_tokens`` (the model's position table) it was cut to
    its start, and ``truncated`` says so.
    """

    similarity: float
    image_vector: tuple[float, ...]
    text_vector: tuple[float, ...]
    text_tokens: int
    max_text_tokens: int
    model_id: str
    revision: str | None
    latency_ms: float
    precision: str = "fp32"

    @property
    def truncated(self) -> bool:
        return self.text_tokens > self.max_text_tokens


@dataclass(frozen=True)
class CategoryResult:
    """The category whose description is closest in meaning to a text.

    ``similarities`` holds the cosine similarity of the text to each category's description;
    ``scores`` turns them into shares that sum to 1 (a softmax, see ``service.CATEGORY_TEMPERATURE``),
    and ``score`` is the share of ``label``. Keys keep the order the categories were given in.
    """

    label: str
    score: float
    scores: dict[str, float]
    similarities: dict[str, float]
    model_id: str
    revision: str | None
    latency_ms: float
    precision: str = "fp32"


@dataclass(frozen=True)
class ModelStatus:
    kind: str  # one of MODEL_KINDS
    source: str  # the configured hub id or directory
    state: ModelState
    detail: str = ""
    progress: float | None = None  # 0..1 while downloading, when known
    model_id: str | None = None
    revision: str | None = None

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "source": self.source,
            "state": self.state.value,
            "detail": self.detail,
            "progress": self.progress,
            "model_id": self.model_id,
            "revision": self.revision,
        }

    @property
    def public_name(self) -> str:
        return public_model_name(self.source)

    def public_dict(self) -> dict:
        """What anyone may see (``/healthz``): no directory, no exception text. A model named by a
        local directory shows only the directory's name."""
        return {
            "kind": self.kind,
            "source": self.public_name,
            "state": self.state.value,
            "progress": self.progress,
            "model_id": public_model_name(self.model_id) if self.model_id else None,
            "revision": self.revision,
        }


def public_model_name(source: str) -> str:
    """A hub id as it is; a filesystem path reduced to its last part (paths tell an attacker about the
    host)."""
    if source.startswith(("/", "~", ".")) or "\\" in source or (len(source) > 1 and source[1] == ":"):
        return source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return source


class ModelSourceError(RuntimeError):
    """A model cannot be found or downloaded; the message says what to do about it (hub.py raises it).

    Retrying does not help: someone has to pull the model, point the setting elsewhere or fix the
    network first. ``ModelSlot`` therefore sends no Retry-After for it.
    """


@dataclass
class ModelUnavailable(Exception):
    """The one error the model service raises; views turn it into a message or a 503.

    ``message`` is safe for anyone to read; ``detail`` (a load failure's diagnosis: exception text,
    paths, the fix) is for administrators only.
    """

    kind: str
    state: ModelState
    message: str
    # Seconds after which trying again may succeed; None when it cannot without someone's action.
    retry_after: int | None = field(default=30)
    # Why: "not_ready" (loading/downloading), "failed" (cannot load), "busy" (queue full or timed
    # out), "error" (the model raised on this input). Empty means derive it from ``state``.
    reason: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = "failed" if self.state is ModelState.FAILED else "not_ready"

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class CaptionExplanation:
    """Where a caption model looked: its decoder's cross-attention over the image patches.

    ``per_word`` holds one row-major map of ``grid`` (patch rows, patch columns) per displayed word of
    ``caption``, in order; ``overall`` is the whole caption's map. Every map sums to 1
    (``explanations.py`` documents the aggregation; ``method`` says it in one line).
    """

    caption: str
    words: tuple[str, ...]
    grid: tuple[int, int]
    per_word: tuple[tuple[float, ...], ...]
    overall: tuple[float, ...]
    method: str
    model_id: str
    revision: str | None
    precision: str
    latency_ms: float


@dataclass(frozen=True)
class SentimentExplanation:
    """Which tokens pushed a sentiment model toward ``label``: integrated gradients on the embeddings.

    ``tokens`` are the tokenizer's pieces (special tokens excluded), ``spans`` their [start, end)
    character offsets in ``text``, ``attributions`` each one's contribution to ``label``'s logit (positive:
    toward the label). Completeness: ``sum(attributions) = logit - baseline_logit + completeness_gap``.
    """

    text: str
    tokens: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    attributions: tuple[float, ...]
    label: str  # the checkpoint's raw label explained: the predicted one
    logit: float
    baseline_logit: float
    completeness_gap: float
    steps: int
    method: str
    model_id: str
    revision: str | None
    precision: str
    latency_ms: float
