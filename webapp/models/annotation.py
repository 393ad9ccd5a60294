"""Region annotations on a clinical image: rectangles and points with a label and a note.

Coordinates are in the image's own pixels (0,0 top left), whatever size the page shows it at, so
they stay right for any viewer and in the case export. A case's annotations can be edited until a
clinician signs the case off (``Analysis.signed_off_at``); after that they are part of the record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import utcnow

SHAPES = ("rect", "point")


class RegionAnnotation(db.Model):
    __tablename__ = "region_annotation"
    __table_args__ = (
        CheckConstraint("shape IN ('rect', 'point')", name="ck_region_annotation_shape"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analysis.id", ondelete="CASCADE"), index=True)
    shape: Mapped[str] = mapped_column(String(8))
    x: Mapped[float]
    y: Mapped[float]
    width: Mapped[float | None]  # rectangles only
    height: Mapped[float | None]
    frame: Mapped[int] = mapped_column(default=0)
    label: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def as_dict(self) -> dict[str, Any]:
        box = {"x": self.x, "y": self.y}
        if self.shape == "rect":
            box |= {"width": self.width, "height": self.height}
        return {
            "id": self.id,
            "shape": self.shape,
            **box,
            "frame": self.frame,
            "label": self.label,
            "note": self.note,
            "author": self.author,
            "created_at": self.created_at.isoformat() + "Z",
        }
