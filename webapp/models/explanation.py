"""Why a model said what it said: one ``explanation`` prediction per analysis, made on demand.

It is read, never reviewed: its ``review_state`` is ``NOT_REVIEWABLE``, so it never waits in a review
queue or counts as unreviewed work, and the generic review forms refuse it. It is not exported either:
its value is a set of maps, not a label or a text.

``output``: ``{"caption": ... or None, "sentiment": ... or None}``, each part the model service's
``CaptionExplanation`` / ``SentimentExplanation`` as plain JSON (lists for tuples) with its own model id,
revision and precision; the row's columns hold the provenance of the parts together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from .prediction import NOT_REVIEWABLE, Prediction

_DIGITS = 6  # a heatmap cell or an attribution; enough for the sums the tests check (1e-5)


def _plain(value: Any) -> Any:
    """Tuples as lists and floats rounded, so the JSON column stays compact and stable."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, float):
        return round(value, _DIGITS)
    return value


def _shared(values: Any) -> str | None:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


@dataclass(frozen=True)
class ExplanationResult:
    """The parts the explanation job made (a record without an image has no caption part, one without
    text no sentiment part), with the provenance of both as one row's columns."""

    caption: Any = None  # inference.types.CaptionExplanation
    sentiment: Any = None  # inference.types.SentimentExplanation

    @property
    def parts(self) -> list[Any]:
        return [part for part in (self.caption, self.sentiment) if part is not None]

    @property
    def model_id(self) -> str:
        return " + ".join(part.model_id for part in self.parts)[:255]

    @property
    def revision(self) -> str | None:
        """The parts' revision when they share one; otherwise None (each part's is in ``output``)."""
        return _shared(part.revision for part in self.parts)

    @property
    def precision(self) -> str | None:
        """The parts' number format when they share one, else "mixed" (each part's is in ``output``)."""
        return _shared(part.precision for part in self.parts) or ("mixed" if self.parts else None)

    @property
    def latency_ms(self) -> float:
        return sum(part.latency_ms for part in self.parts)


class ExplanationPrediction(Prediction):
    """Caption heatmaps and sentiment attributions of one analysis (see the module docstring)."""

    KIND = "explanation"
    GENERIC_REVIEW = False
    EXPORTED = False
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "explanation"}

    @classmethod
    def from_result(cls, result: ExplanationResult) -> ExplanationPrediction:
        output = {
            name: None if part is None else {key: _plain(value) for key, value in asdict(part).items()}
            for name, part in (("caption", result.caption), ("sentiment", result.sentiment))
        }
        return cls(**cls.provenance(result), output=output, review_state=NOT_REVIEWABLE)

    @property
    def ai_value(self) -> None:
        """No value that counts: an explanation is about the other predictions, not an answer itself."""
        return None

    @property
    def caption(self) -> dict[str, Any] | None:
        return self.output.get("caption")

    @property
    def sentiment(self) -> dict[str, Any] | None:
        return self.output.get("sentiment")
