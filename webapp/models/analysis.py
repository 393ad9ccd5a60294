"""A submission (``Analysis``), the batch it may belong to, and its job state.

The database row is the source of truth for a job, not the queue: Huey removes a task from its queue
before running it, so a consumer killed mid-task would otherwise lose it. A running analysis holds a
lease (``lease_expires_at``) that its worker renews; ``webapp.jobs`` re-enqueues pending items that
are missing from the queue and running items whose lease expired.

Ids are never reused (``sqlite_autoincrement``; PostgreSQL sequences never go back), so a bookmark or
an audit row naming record #8 can never come to point at a different record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .base import utcnow

if TYPE_CHECKING:
    from .annotation import RegionAnnotation
    from .prediction import ConfidencePolicy, Prediction
    from .user import User

SCENARIOS = ("service", "medical", "education")
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
STATUSES = (PENDING, RUNNING, DONE, FAILED)


def job_progress(statuses: Sequence[str]) -> dict[str, Any]:
    """``total``, ``done``, ``failed`` and ``finished`` of a group of jobs (a batch, an assignment's
    photos): the numbers the progress pages poll and the API returns."""
    done, failed = statuses.count(DONE), statuses.count(FAILED)
    return {"total": len(statuses), "done": done, "failed": failed, "finished": done + failed == len(statuses)}


class Batch(db.Model):
    """Several uploads sent together (a teacher's 30 homework photos): one analysis, and one job, each."""

    __table_args__ = (Index("ix_batch_user_created", "user_id", "created_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    scenario: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()
    analyses: Mapped[list[Analysis]] = relationship(back_populates="batch", order_by="Analysis.id")


class Analysis(db.Model):
    """One submission: its inputs, its job state, and (as ``predictions``) what each model said."""

    __table_args__ = (
        # Listings sort by (created_at, id): with id in the index, PostgreSQL reads a page and counts a
        # user's records from the index alone (SQLite indexes carry the rowid id anyway).
        Index("ix_analysis_user_created", "user_id", "created_at", "id"),
        Index("ix_analysis_user_scenario_created", "user_id", "scenario", "created_at", "id"),
        Index("ix_analysis_created", "created_at", "id"),
        # Everyone's records (the admin listing) sorted by scenario or by status.
        Index("ix_analysis_scenario_created", "scenario", "created_at", "id"),
        Index("ix_analysis_status_created", "status", "created_at", "id"),
        # History's status filter (the owner's failed or waiting records), in listing order.
        Index("ix_analysis_user_status_created", "user_id", "status", "created_at", "id"),
        Index("ix_analysis_status_lease", "status", "lease_expires_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id", ondelete="SET NULL"), index=True)
    scenario: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    text: Mapped[str | None] = mapped_column(Text)
    image_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    image_format: Mapped[str | None] = mapped_column(String(8))
    image_width: Mapped[int | None]
    image_height: Mapped[int | None]
    image_filename: Mapped[str | None] = mapped_column(String(255))
    # A clinical case is signed off once: its findings are decided and its annotations stop changing.
    signed_off_at: Mapped[datetime | None]
    signed_off_by: Mapped[str | None] = mapped_column(String(64))
    # A DICOM upload's frames, window and non-identifying metadata (``uploads.ValidatedImage.meta``).
    image_meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What history search reads, in one column as v1 had: the text, the file name, and the text its
    # predictions contribute (an AI caption, a human correction). Kept by ``refresh_search_text``.
    search_text: Mapped[str] = mapped_column(Text, default="")
    app_version: Mapped[str] = mapped_column(String(32))
    # The job. ``tasks`` are the prediction kinds the scenario asked for when it was submitted.
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    tasks: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)  # why it failed, or why it waits (English)
    # When the model service gave the reason: kind, state, reason, message, so pages can say it in
    # the reader's language (i18n.job_error).
    error_info: Mapped[dict[str, str] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(default=0)
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    # The worker ("<host>:<pid>") that claimed the job last: which host ran what, for audits and tests.
    worker: Mapped[str | None] = mapped_column(String(128))
    # A service-desk conversation is open until an agent closes it (and may be reopened).
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship(back_populates="analyses")
    batch: Mapped[Batch | None] = relationship(back_populates="analyses")
    predictions: Mapped[list[Prediction]] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", order_by="Prediction.id"
    )
    annotations: Mapped[list[RegionAnnotation]] = relationship(
        cascade="all, delete-orphan", order_by="RegionAnnotation.id"
    )

    @property
    def is_finished(self) -> bool:
        return self.status in (DONE, FAILED)

    def refresh_search_text(self) -> None:
        terms = [self.text, self.image_filename, *(t for p in self.predictions for t in p.search_terms())]
        self.search_text = "\n".join(term for term in terms if term)

    def prediction(self, kind: str) -> Prediction | None:
        return next((p for p in self.predictions if p.kind == kind), None)

    @property
    def progress(self) -> tuple[int, int]:
        """(predictions of the job made, predictions the job asked for); a grade given later is no task."""
        tasks = self.tasks or ()
        return sum(p.kind in tasks for p in self.predictions), len(tasks)

    def status_dict(self) -> dict[str, Any]:
        done, total = self.progress
        return {"id": self.id, "status": self.status, "error": self.error, "progress": {"done": done, "total": total}}

    def as_dict(self, policy: ConfidencePolicy) -> dict[str, Any]:
        """The record as the API and the JSON export give it; ``values`` are the values that count."""
        return {
            **self.status_dict(),
            "scenario": self.scenario,
            "created_at": self.created_at.isoformat() + "Z",
            "owner": self.user.username,
            "batch_id": self.batch_id,
            "text": self.text,
            "image": None
            if self.image_sha256 is None
            else {
                "sha256": self.image_sha256,
                "format": self.image_format,
                "width": self.image_width,
                "height": self.image_height,
                "filename": self.image_filename,
            },
            "predictions": [prediction.as_dict(policy) for prediction in self.predictions],
            "values": {prediction.kind: prediction.value for prediction in self.predictions},
            "app_version": self.app_version,
        }
