"""The two multimodal kinds of prediction: a late-fused sentiment and an image-text agreement flag.

Both are computed by the analysis job from what the other kinds stored (``webapp.fusion``) and are
reviewed like any label-valued kind: a reviewer accepts, corrects (another label) or rejects them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from flask_babel import lazy_gettext as _l

from ..fusion import CAPTION_AND_OCR, JOINT_EMBEDDING
from .prediction import CorrectionError, LabelledOutput, Prediction, ThreeLevelSentiment

AGREEMENT_LABELS = ("matches", "mismatch")


class FusionPrediction(ThreeLevelSentiment, Prediction):
    """The record's overall sentiment from its text and its image. ``output``: ``label``, ``scores`` (fused,
    per level), ``parts`` ({part: {text, label, scores, weight}}, the weights renormalised over the parts
    present) and ``configured`` (PRISM_FUSION_WEIGHTS as set)."""

    KIND = "fusion"
    HAS_CLASSES = True
    CSV_SCORE_PREFIX = "fused"
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "fusion"}

    @classmethod
    def from_result(cls, result: Any) -> FusionPrediction:
        return cls(
            **cls.provenance(result),
            **cls.classification(result),
            output={
                "label": result.label,
                "scores": {level: round(score, 4) for level, score in result.scores.items()},
                "parts": result.parts,
                "configured": result.configured,
            },
        )

    @property
    def parts(self) -> dict[str, dict[str, Any]]:
        return self.output.get("parts") or {}


class AgreementPrediction(LabelledOutput, Prediction):
    """Whether the image matches the text: ``matches`` or ``mismatch``. ``output``: ``label``,
    ``similarity`` (cosine), ``threshold``, ``flagged`` (similarity below threshold), ``texts``
    ({text, image}: what was compared; {text} alone when the image itself was), ``reference`` ("text",
    or "assignment" for homework), ``method`` (``fusion.JOINT_EMBEDDING`` or ``fusion.CAPTION_AND_OCR``;
    absent on predictions made before there was a choice: those compared caption and OCR text) and
    ``truncated`` (the text was cut to the joint model's length). No confidence: a similarity is not a
    probability."""

    KIND = "agreement"
    HAS_CLASSES = True
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "agreement"}

    @classmethod
    def from_result(cls, result: Any) -> AgreementPrediction:
        return cls(
            **cls.provenance(result),
            final_label=result.label,
            output={
                "label": result.label,
                "similarity": round(result.similarity, 4),
                "threshold": result.threshold,
                "flagged": result.flagged,
                "texts": result.texts,
                "reference": result.reference,
                "method": result.method,
                "truncated": result.truncated,
            },
        )

    @property
    def method(self) -> str:
        return self.output.get("method") or CAPTION_AND_OCR

    @property
    def jointly_embedded(self) -> bool:
        """Whether a joint image-text model compared the image itself with the text."""
        return self.method == JOINT_EMBEDDING

    @property
    def flagged(self) -> bool:
        """Whether the value that counts says the image does not match (a rejected flag does not)."""
        return self.value == "mismatch"

    @classmethod
    def parse_correction(cls, raw: Any) -> str:
        if raw not in AGREEMENT_LABELS:
            raise CorrectionError(
                _l("A corrected agreement is one of: %(labels)s.", labels=", ".join(AGREEMENT_LABELS))
            )
        return raw

    @classmethod
    def csv_columns(cls) -> tuple[str, ...]:
        return ("agreement_similarity",)

    def csv_extra(self) -> tuple[Any, ...]:
        return (self.output.get("similarity"),)
