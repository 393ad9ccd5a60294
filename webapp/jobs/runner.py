"""One analysis job: claim the row, run each model task it still lacks, store each prediction, finish.

Exactly-once results from at-least-once delivery:
- a claim is one conditional UPDATE (pending, or running with an expired lease), so two workers
  never both hold a live lease on one analysis;
- each prediction is committed as it is made, with the lease renewed, under a unique
  (analysis, kind) constraint, so a re-run skips what is stored and can never duplicate it;
- a model that is loading or busy does not fail the job: the row goes back to pending (the attempt
  is not counted) and the job is scheduled again for when the model expects to be ready.
No transaction is held during inference: with SQLite that would hold the write lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any

from flask import current_app
from PIL import Image
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from .. import explaining, fusion, service_desk
from ..extensions import db
from ..inference import ModelService, ModelUnavailable, get_model_service
from ..models import DONE, FAILED, PENDING, RUNNING, Analysis, Assignment, Prediction, Submission, utcnow
from ..storage import ObjectMissing, get_storage
from ..uploads import decode_rgb, image_key
from . import enqueue_analyses
from .housekeeping import worker_name

logger = logging.getLogger(__name__)
MAX_DEFER_SECONDS = 30.0


@dataclass(frozen=True)
class JobInputs:
    """An analysis's inputs as plain values, read with the claim, before inference.

    Plain values, not the ORM row: touching an ORM attribute after a commit silently begins a new
    transaction, and with SQLite (BEGIN IMMEDIATE) would hold the write lock for the whole model call.
    """

    analysis_id: int
    user_id: int
    scenario: str
    text: str | None
    image_sha256: str | None
    image_format: str | None
    tasks: tuple[str, ...]  # the kinds the job was asked for
    missing: tuple[str, ...]  # the kinds still without a prediction
    attempts: int  # claims so far, this one included

    @cached_property
    def image(self) -> Image.Image:
        """The decoded upload, read from storage once per job however many kinds use it."""
        data = get_storage().get(image_key(self.image_sha256, self.image_format))
        config = current_app.config
        return decode_rgb(
            data,
            self.image_format,
            max_side=config["PRISM_MODEL_IMAGE_MAX_SIDE"],
            concurrent=config["PRISM_MAX_CONCURRENT_DECODES"],
        )

    def stored_value(self, kind: str) -> Any:
        """The value that counts of this analysis's ``kind`` prediction (made earlier in this job, or
        by an earlier attempt), or None. Ends its transaction: a model call follows."""
        return self._stored(kind, lambda prediction: prediction.value)

    def stored_output(self, kind: str) -> dict[str, Any] | None:
        """The model's ``output`` of this analysis's ``kind`` prediction, or None (as ``stored_value``)."""
        return self._stored(kind, lambda prediction: dict(prediction.output))

    def _stored(self, kind: str, read: Callable[[Prediction], Any]) -> Any:
        prediction = db.session.scalar(
            select(Prediction).where(Prediction.analysis_id == self.analysis_id, Prediction.kind == kind)
        )
        value = read(prediction) if prediction is not None else None
        db.session.rollback()
        return value

    @cached_property
    def image_words(self) -> str:
        """What the image says in words: its caption and the text read from it."""
        return "\n".join(part for part in (self.stored_value("caption"), self.stored_value("ocr")) if part)

    @cached_property
    def message(self) -> str:
        """The customer's words: the message, and the text read from the screenshot (read once: OCR
        runs before every kind that uses it)."""
        return "\n".join(part for part in (self.text, self.stored_value("ocr")) if part)

    @cached_property
    def words(self) -> str:
        """What a text kind reads: the typed text, or else the text OCR read from the image (a
        reflection handwritten on a homework page); empty when there is neither."""
        return self.text or self.stored_value("ocr") or ""


# What each prediction kind asks of the model service, given the analysis's inputs. Kinds run in the
# order the scenario lists them, so a kind may read what an earlier one stored (``stored_value``).
# None: nothing to read (no text typed, none on the image); the kind is dropped from the job's tasks.
RUNNERS: dict[str, Callable[[ModelService, JobInputs], Any]] = {
    "caption": lambda service, inputs: service.caption(inputs.image),
    "sentiment": lambda service, inputs: service.sentiment(inputs.words) if inputs.words else None,
    "ocr": lambda service, inputs: service.ocr(inputs.image),
    "category": lambda service, inputs: service_desk.categorize(service, inputs.message),
    "reply": lambda service, inputs: _draft(service, inputs),
    "explanation": explaining.explain,  # asked for later, on an existing record (explaining.py)
    "fusion": lambda service, inputs: _fuse(service, inputs),
    "agreement": lambda service, inputs: _agree(service, inputs),
}
# The model each kind needs loaded (a reply draft needs one only with PRISM_REPLY_MODEL, and agreement the
# joint image-text model instead of the embedding model with PRISM_AGREEMENT_MODEL: ``_models_needed``).
MODEL_OF_KIND = {
    "caption": "caption",
    "sentiment": "sentiment",
    "ocr": "ocr",
    "category": "embedding",
    "fusion": "sentiment",
    "agreement": "embedding",
}


def _draft(service: ModelService, inputs: JobInputs):
    message = inputs.message
    return service_desk.draft_reply(
        inputs.stored_value("category"),
        inputs.stored_value("sentiment"),
        service_desk.message_language(message),
        service=service,
        message=message,
    )


def _fuse(service: ModelService, inputs: JobInputs):
    """The text's stored sentiment fused with its image's caption and OCR text (only typed text: the
    sentiment of a text read from the image would count the OCR part twice)."""
    if not inputs.text:
        return None
    return fusion.late_fusion(
        service,
        inputs.stored_output("sentiment"),
        {"text": inputs.text, "caption": inputs.stored_value("caption"), "ocr": inputs.stored_value("ocr")},
        current_app.config["PRISM_FUSION_WEIGHTS"],
    )


def _agree(service: ModelService, inputs: JobInputs):
    """The image compared with its assignment (a homework photo) or else the record's text: the image
    itself by the joint image-text model when one is configured, else its caption and OCR text."""
    reference, source = inputs.text or "", "text"
    if inputs.scenario == "education":
        row = db.session.execute(
            select(Assignment.title, Assignment.reference_text)
            .join(Submission, Submission.assignment_id == Assignment.id)
            .where(Submission.analysis_id == inputs.analysis_id)
        ).one_or_none()
        db.session.rollback()
        if row is not None:
            reference, source = "\n".join(part for part in (row.title, row.reference_text) if part), "assignment"
    if service.compares_images_with_text:
        if not inputs.image_sha256:
            return None
        threshold = current_app.config["PRISM_AGREEMENT_MODEL_THRESHOLD"]
        return fusion.joint_agreement(service, reference, inputs.image, threshold, source=source)
    threshold = current_app.config["PRISM_AGREEMENT_THRESHOLD"]
    return fusion.agreement(service, reference, inputs.image_words, threshold, source=source)


def _models_needed(service: ModelService, kinds: tuple[str, ...]) -> list[str]:
    """The models ``kinds`` run on, in order (the reply draft's only when a writer is configured; agreement's
    the joint image-text model when one is configured, else the embedding model)."""
    models = {
        **MODEL_OF_KIND,
        **({"reply": "reply"} if service.writes_replies else {}),
        **({"agreement": "agreement"} if service.compares_images_with_text else {}),
    }
    return [models[kind] for kind in kinds if kind in models]


def _lease() -> timedelta:
    return timedelta(seconds=current_app.config["PRISM_JOB_LEASE_SECONDS"])


def claim(analysis_id: int) -> JobInputs | None:
    """Take the analysis for this worker and read its inputs, in one transaction; None when it is
    done, failed, or leased to a live worker. (UPDATE ... RETURNING: SQLite 3.35+ and PostgreSQL.)"""
    now = utcnow()
    claimable = or_(Analysis.status == PENDING, and_(Analysis.status == RUNNING, Analysis.lease_expires_at < now))
    row = db.session.execute(
        update(Analysis)
        .where(Analysis.id == analysis_id, claimable)
        .values(
            status=RUNNING,
            attempts=Analysis.attempts + 1,
            started_at=now,
            lease_expires_at=now + _lease(),
            worker=worker_name(),
        )
        .returning(
            Analysis.id,
            Analysis.user_id,
            Analysis.scenario,
            Analysis.text,
            Analysis.image_sha256,
            Analysis.image_format,
            Analysis.tasks,
            Analysis.attempts,
        )
    ).one_or_none()
    if row is None:
        db.session.commit()
        return None
    stored = set(db.session.scalars(select(Prediction.kind).where(Prediction.analysis_id == analysis_id)))
    db.session.commit()
    return JobInputs(
        analysis_id=row.id,
        user_id=row.user_id,
        scenario=row.scenario,
        text=row.text,
        image_sha256=row.image_sha256,
        image_format=row.image_format,
        tasks=tuple(row.tasks),
        missing=tuple(kind for kind in row.tasks if kind not in stored),
        attempts=row.attempts,
    )


def _settle(analysis_id: int, **values: Any) -> None:
    db.session.rollback()
    db.session.execute(update(Analysis).where(Analysis.id == analysis_id).values(lease_expires_at=None, **values))
    db.session.commit()


def run(analysis_id: int) -> str:
    """Run the job; returns what happened ("done", "failed", "deferred", "skipped") for logs and tests."""
    inputs = claim(analysis_id)
    if inputs is None:
        return "skipped"
    service = get_model_service()
    models = _models_needed(service, inputs.missing)
    # Jobs of a burst reach the model at slightly different times (dequeue, claim, image read and
    # decode); announcing the first model call now lets them share one batch.
    with service.announce(models[0]) if models else nullcontext():
        return _work(inputs, service, models)


def _work(inputs: JobInputs, service: ModelService, models: list[str]) -> str:
    analysis_id = inputs.analysis_id
    max_attempts = current_app.config["PRISM_JOB_MAX_ATTEMPTS"]
    if inputs.attempts > max_attempts:
        return _fail(
            analysis_id,
            f"The job was started {max_attempts} times without finishing (its worker stopped each time). "
            "Retry it to try again.",
        )
    service.start_loading(*models)
    for kind in inputs.missing:
        try:
            result = RUNNERS[kind](service, inputs)
        except ModelUnavailable as exc:
            if exc.reason in ("not_ready", "busy"):
                return _defer(analysis_id, exc)
            return _fail(analysis_id, str(exc), error_info=_info(exc))
        except ObjectMissing:
            return _fail(analysis_id, "The uploaded image is missing from storage.")
        except Exception as exc:  # anything else fails the job with a reason now, not after 3 lease expiries
            logger.exception("analysis %s: the %s step failed", analysis_id, kind)
            return _fail(analysis_id, f"The {kind} step failed ({type(exc).__name__}). Retry it to try again.")
        last = kind == inputs.missing[-1]
        # The last prediction and "done" land in one commit; earlier ones renew the lease.
        values = {**_done(), "lease_expires_at": None} if last else {"lease_expires_at": utcnow() + _lease()}
        if result is None:
            values["tasks"] = [task for task in inputs.tasks if task != kind]
        else:
            prediction = Prediction.KINDS[kind].from_result(result)
            prediction.analysis_id, prediction.user_id = analysis_id, inputs.user_id
            prediction.scenario = inputs.scenario
            if kind == "sentiment" and not inputs.text:
                prediction.mark_read_from_image()  # the reviewer sees what was scored
            db.session.add(prediction)
            if terms := prediction.search_terms():
                values["search_text"] = Analysis.search_text + "".join("\n" + term for term in terms)
        try:  # the update's autoflush inserts the prediction: the constraint can fire there or at commit
            db.session.execute(
                update(Analysis).where(Analysis.id == analysis_id, Analysis.status == RUNNING).values(**values)
            )
            db.session.commit()
        except IntegrityError:
            db.session.rollback()  # another worker stored this kind first (its lease had expired)
            logger.info("analysis %s: %s prediction already stored", analysis_id, kind)
            if last:
                _settle(analysis_id, **_done())
        db.session.rollback()  # end the transaction before the next model call
    if not inputs.missing:
        _settle(analysis_id, **_done())
    return "done"


def _fail(analysis_id: int, error: str, **values: Any) -> str:
    _settle(analysis_id, status=FAILED, finished_at=utcnow(), error=error, **values)
    return "failed"


def _done() -> dict[str, Any]:
    return {"status": DONE, "finished_at": utcnow(), "error": None, "error_info": None}


def _info(exc: ModelUnavailable) -> dict[str, str]:
    info = {"kind": exc.kind, "state": exc.state.value, "reason": exc.reason, "message": str(exc)}
    if exc.detail:
        info["detail"] = exc.detail  # administrators only (i18n.model_unavailable_message)
    return info


def _defer(analysis_id: int, exc: ModelUnavailable) -> str:
    """Back to pending, attempt not counted, and queued again for when the model expects to be ready."""
    delay = min(float(exc.retry_after), MAX_DEFER_SECONDS)
    _settle(
        analysis_id,
        status=PENDING,
        attempts=Analysis.attempts - 1,
        queued_at=utcnow(),
        error=str(exc),
        error_info=_info(exc),
    )
    logger.info("analysis %s deferred %.0f s: %s", analysis_id, delay, exc)
    enqueue_analyses([analysis_id], delay=delay)
    return "deferred"
