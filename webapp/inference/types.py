"""Plain values the model service hands to the rest of the app.

Views and the API only ever see these frozen dataclasses (never tensors), so nothing outside
``webapp.inference`` needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

SENTIMENT_LABELS = ("negative", "neutral", "positive")


class ModelState(StrEnum):
    NOT_LOADED = "not_loaded"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class CaptionResult:
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


@dataclass(frozen=True)
class ModelStatus:
    kind: str  # "caption" or "sentiment"
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


@dataclass
class ModelUnavailable(Exception):
    """The one error the model service raises; views turn it into a message or a 503."""

    kind: str
    state: ModelState
    message: str
    retry_after: int = field(default=30)
    # Why: "not_ready" (loading/downloading), "failed" (cannot load), "busy" (queue full or timed
    # out), "error" (the model raised on this input). Empty means derive it from ``state``.
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = "failed" if self.state is ModelState.FAILED else "not_ready"

    def __str__(self) -> str:
        return self.message
