"""Clinical image review: region annotations, the case sign-off and the case export.

The image itself (DICOM, de-identified on upload: ``webapp.dicom``) and the proposed finding (the
caption, reviewed through the review engine) live on the record like any other; this package adds
what is specific to a clinical case.
"""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l

from ..analyses import confidence_policy
from ..models import SHAPES, Analysis, RegionAnnotation


class AnnotationInputError(ValueError):
    """The annotation cannot be stored; the message is for the clinician."""


def parse_annotation(form, analysis: Analysis) -> RegionAnnotation:
    """A new annotation from form fields (numbers in image pixels), checked against the image size."""
    shape = form.get("shape", "rect")
    if shape not in SHAPES:
        raise AnnotationInputError(_l("Choose a rectangle or a point."))
    try:
        x, y = float(form.get("x", "")), float(form.get("y", ""))
        width = float(form.get("width") or 0) if shape == "rect" else None
        height = float(form.get("height") or 0) if shape == "rect" else None
        frame = int(form.get("frame") or 0)
    except ValueError:
        raise AnnotationInputError(_l("Coordinates are numbers of image pixels.")) from None
    right = x + (width or 0)
    bottom = y + (height or 0)
    if not (0 <= x <= right <= analysis.image_width and 0 <= y <= bottom <= analysis.image_height):
        raise AnnotationInputError(
            _l(
                "The region must lie inside the image (%(width)d × %(height)d pixels).",
                width=analysis.image_width,
                height=analysis.image_height,
            )
        )
    if shape == "rect" and (width < 1 or height < 1):
        raise AnnotationInputError(_l("A rectangle is at least one pixel wide and high."))
    frames = (analysis.image_meta or {}).get("frames", 1)
    if not 0 <= frame < frames:
        raise AnnotationInputError(_l("No such frame."))
    label = (form.get("label") or "").strip()[:64]
    if not label:
        raise AnnotationInputError(_l("Give the region a label."))
    note = (form.get("note") or "").strip()[:2000] or None
    return RegionAnnotation(shape=shape, x=x, y=y, width=width, height=height, frame=frame, label=label, note=note)


def case_export(analysis: Analysis) -> dict[str, Any]:
    """A case as JSON: the findings a clinician accepted or corrected (with the AI original and the
    model that proposed it), the annotations, and the image's non-identifying metadata."""
    policy = confidence_policy()
    findings = [
        {
            "kind": p.kind,
            "value": p.value,
            "state": p.review_state,
            "ai_original": p.ai_value,
            "model": p.model_id,
            "revision": p.revision,
            "reviewer": p.latest_review.reviewer_name if p.latest_review else None,
            "decided_at": p.latest_review.created_at.isoformat() + "Z" if p.latest_review else None,
            "band": policy.band(p.confidence),
        }
        for p in analysis.predictions
        if p.human_confirmed
    ]
    return {
        "case": analysis.id,
        "created_at": analysis.created_at.isoformat() + "Z",
        "signed_off": {"by": analysis.signed_off_by, "at": analysis.signed_off_at.isoformat() + "Z"}
        if analysis.signed_off_at
        else None,
        "image": {
            "format": analysis.image_format,
            "width": analysis.image_width,
            "height": analysis.image_height,
            **({"dicom": analysis.image_meta} if analysis.image_meta else {}),
        },
        "clinical_note": analysis.text,
        "findings": findings,
        "annotations": [annotation.as_dict() for annotation in analysis.annotations],
        "app_version": analysis.app_version,
    }
