"""Submitting, finding, retrying and deleting analyses: the one code path the pages and the API share.

Submitting stores the inputs and a ``pending`` row at once; the models run later in a job
(``webapp.jobs``). So a loading or busy model delays a result but never loses the user's input.
The caller commits, then calls ``jobs.enqueue_analyses`` with the ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import lazy_gettext as _l
from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import Select, exists, func, select, tuple_
from sqlalchemy.orm import selectinload

from . import __version__, audit
from .bounds import text_problem
from .dicom import looks_like_dicom
from .extensions import db
from .i18n import in_english
from .localtime import DEFAULT_ZONE, parse_day_range, within_days
from .models import (
    BANDS,
    FAILED,
    PENDING,
    REVIEW_STATES,
    SCENARIOS,
    SENTIMENT_LABELS,
    STATUSES,
    UNREVIEWED,
    Analysis,
    Batch,
    ConfidencePolicy,
    Prediction,
    User,
    count,
    utcnow,
)
from .pagination import capped_count
from .scenarios import REQUIRED, SCENARIO_PAGES, Scenario
from .storage import get_storage
from .uploads import UploadRejected, ValidatedImage, display_filename, image_key, validate_image


class AnalysisInputError(ValueError):
    """The submission cannot be analysed; the message is safe to show to the user (a plain or lazy string)."""


class ScenarioForbidden(PermissionError):
    """The user's role may not submit to (or review in) this scenario."""


def confidence_policy() -> ConfidencePolicy:
    return ConfidencePolicy.from_config(current_app.config)


def validate_upload(data: bytes, filename: str | None) -> ValidatedImage:
    """Validate uploaded bytes with this app's limits (raises ``uploads.UploadRejected``).

    Call it before the request writes anything: it first ends the request's transaction. Decoding
    takes a while, and may wait for one of the process's decode slots; with SQLite every
    transaction (BEGIN IMMEDIATE) holds the one write lock, and other requests would time out
    waiting for it ("database is locked").
    """
    db.session.commit()
    return validate_image(
        data,
        filename,
        max_bytes=current_app.config["PRISM_MAX_IMAGE_BYTES"],
        max_pixels=current_app.config["PRISM_MAX_IMAGE_PIXELS"],
        max_decode_bytes=current_app.config["PRISM_MAX_DECODE_BYTES"],
        concurrent_decodes=current_app.config["PRISM_MAX_CONCURRENT_DECODES"],
    )


def record_rejected_upload(exc: UploadRejected, actor: User, **details: Any) -> str:
    """Stage the audit row of a refused upload; returns the reason in English, as audit rows read."""
    reason = in_english(exc)
    audit.record(audit.UPLOAD_REJECTED, actor=actor, details={"reason": reason, **details})
    return reason


def scenario_for_submission(user: User, scenario: str) -> Scenario:
    page = SCENARIO_PAGES.get(scenario)
    if page is None:
        raise AnalysisInputError(_l("Unknown scenario %(scenario)r.", scenario=scenario))
    if not page.may_submit(user):
        raise ScenarioForbidden(scenario)
    return page


def submit_analysis(
    user: User, scenario: str, text: str | None, image: ValidatedImage | None, *, batch: Batch | None = None
) -> Analysis:
    """Store the inputs and a pending analysis with its audit row; the caller commits, then enqueues.

    Raises ``AnalysisInputError`` or ``ScenarioForbidden``; then nothing is written.
    """
    page = scenario_for_submission(user, scenario)
    text = (text or "").strip() or None
    if text is None and image is None:
        raise AnalysisInputError(_l("Add an image, a text, or both."))
    if page.image == REQUIRED and image is None:
        raise AnalysisInputError(_l("This scenario needs an image."))
    max_chars = current_app.config["PRISM_MAX_TEXT_CHARS"]
    if text is not None and len(text) > max_chars:
        raise AnalysisInputError(_l("The text is longer than %(max)d characters.", max=max_chars))
    if text is not None and (problem := text_problem(text)):
        raise AnalysisInputError(problem)
    tasks = page.tasks_for(has_image=image is not None, has_text=text is not None)
    if not tasks:
        raise AnalysisInputError(_l("Add an image: this scenario analyses images."))

    image_fields = {}
    if image is not None:
        get_storage().put(image.storage_key, image.data)
        image_fields = {
            "image_sha256": image.sha256,
            "image_format": image.format,
            "image_width": image.width,
            "image_meta": image.meta,
            "image_height": image.height,
            "image_filename": image.filename,
        }
    analysis = _new_analysis(
        user, scenario, batch, tasks, text=text, status=PENDING, queued_at=utcnow(), **image_fields
    )
    db.session.flush()
    audit.record(
        audit.ANALYSIS_CREATED,
        actor=user,
        target=analysis,
        details={
            "scenario": scenario,
            "image": image is not None,
            "text": text is not None,
            "batch": analysis.batch_id,
        },
    )
    return analysis


def _new_analysis(user: User, scenario: str, batch: Batch | None, tasks: list[str], **fields) -> Analysis:
    # user_id, not user=: assigning the relationship appends to user.analyses, which loads every
    # record the user has (20 ms per submission at a few hundred records, growing with history).
    analysis = Analysis(user_id=user.id, batch=batch, scenario=scenario, tasks=tasks, app_version=__version__, **fields)
    analysis.refresh_search_text()
    db.session.add(analysis)
    return analysis


def submit_batch(user: User, scenario: str, files: Sequence[tuple[bytes, str | None]]) -> Batch:
    """One batch and one analysis per file; the caller commits, then enqueues the pending ones.

    A file that is not an acceptable image fails alone: its item is stored as ``failed`` with the
    reason (and its name), and the rest of the batch goes ahead.
    """
    page = scenario_for_submission(user, scenario)
    limit = current_app.config["PRISM_MAX_BATCH_FILES"]
    if len(files) > limit:
        raise AnalysisInputError(_l("At most %(max)d files at once.", max=limit))
    checked: list[tuple[bytes, str | None, ValidatedImage | UploadRejected]] = []
    for data, filename in files:  # all before the first write (see validate_upload)
        try:
            checked.append((data, filename, validate_upload(data, filename)))
        except UploadRejected as exc:
            checked.append((data, filename, exc))
    batch = Batch(user=user, scenario=scenario)
    db.session.add(batch)
    for data, filename, image in checked:
        if isinstance(image, UploadRejected):
            _new_analysis(
                user,
                scenario,
                batch,
                page.tasks_for(has_image=True, has_text=False),
                status=FAILED,
                # A DICOM file is often named after the patient: its name is not kept.
                image_filename=None if looks_like_dicom(data) else display_filename(filename),
                error=record_rejected_upload(image, user, scenario=scenario),
                finished_at=utcnow(),
            )
        else:
            submit_analysis(user, scenario, None, image, batch=batch)
    db.session.flush()
    return batch


def pending_ids(batch: Batch) -> list[int]:
    return [analysis.id for analysis in batch.analyses if analysis.status == PENDING]


def retry_analysis(analysis: Analysis) -> None:
    """Put a failed analysis back in line (its stored predictions are kept); the caller commits, then enqueues."""
    if analysis.status != FAILED:
        raise AnalysisInputError(_l("Only a failed analysis can be retried."))
    if analysis.image_sha256 is None and analysis.text is None:
        raise AnalysisInputError(_l("This upload was refused, so there is nothing to retry; upload it again."))
    analysis.status, analysis.attempts, analysis.queued_at = PENDING, 0, utcnow()
    analysis.error = analysis.error_info = None
    audit.record(audit.ANALYSIS_RETRIED, target=analysis)


def delete_analysis(analysis: Analysis) -> None:
    """Delete the row and, once the deletion is committed, its image unless another record shares
    the same content. The file goes after the commit: a failed commit must not leave a row without
    its file (a crash in between leaves a file without a row, which ``integrity.reap`` removes)."""
    sha256, image_format = analysis.image_sha256, analysis.image_format
    audit.record(audit.ANALYSIS_DELETED, target=analysis, details={"owner_id": analysis.user_id})
    db.session.delete(analysis)
    db.session.commit()
    if sha256 and image_format:
        still_used = db.session.scalar(select(Analysis.id).where(Analysis.image_sha256 == sha256).limit(1))
        db.session.rollback()
        if still_used is None:
            get_storage().delete(image_key(sha256, image_format))


# The orders a listing may be sorted in: each ends with the id, so rows that tie (same second, same
# scenario) keep one stable order across pages; each is served by an index on (user_id, ...) for a
# user's history and on (...) alone for everyone's (migration 0010).
SORTS: dict[str, tuple] = {
    "time": (Analysis.created_at, Analysis.id),
    "id": (Analysis.id,),
    "scenario": (Analysis.scenario, Analysis.created_at, Analysis.id),
    "status": (Analysis.status, Analysis.created_at, Analysis.id),
}
DEFAULT_SORT = "-time"  # newest first; a leading "-" sorts descending
MAX_PER_PAGE = 100  # records per listing page, whatever ?per_page asks (the API documents it)
MAX_QUERY_CHARS = 200  # a longer search text is cut to this


@dataclass(frozen=True)
class HistoryFilters:
    """Filters shared by the history page, the admin view, the exports and the API (all optional),
    and the listing's order (``sort``: a key of ``SORTS``, "-" first for descending).

    ``sentiment`` matches the value that counts (a human correction wins over the model); ``review``
    and ``confidence`` match analyses with at least one prediction in that state or band.
    ``date_from`` and ``date_to`` are days in ``zone`` (the viewer's), both included. ``errors``
    says, in the reader's language, which given values were refused (and so not applied).
    """

    scenario: str | None = None
    sentiment: str | None = None
    review: str | None = None
    confidence: str | None = None  # a band, or "uncertain"
    status: str | None = None
    query: str | None = None
    owner: str | None = None  # admin only: a username
    date_from: date | None = None
    date_to: date | None = None
    zone: str = DEFAULT_ZONE
    sort: str = DEFAULT_SORT
    errors: tuple = field(default=(), compare=False)

    @property
    def reads_predictions(self) -> bool:
        """Whether matching needs each record's predictions (not just the analysis row's indexes)."""
        return bool(self.sentiment or self.review or self.confidence)

    @classmethod
    def from_args(cls, args, *, allow_owner: bool = False, zone: str = DEFAULT_ZONE) -> HistoryFilters:
        """The filters of a query string; a value that is not one of the choices, a malformed date, a
        range that ends before it starts or an unknown sort is left out and named in ``errors``."""
        errors: list = []

        def choice(name: str, allowed: Sequence[str], label) -> str | None:
            value = args.get(name) or None
            if value is not None and value not in allowed:
                errors.append(_l("%(filter)s: “%(value)s” is not one of the choices.", filter=label, value=value[:40]))
                return None
            return value

        date_from, date_to = parse_day_range(args, errors)
        sort = args.get("sort") or DEFAULT_SORT
        if sort.removeprefix("-") not in SORTS:
            errors.append(_l("“%(value)s” is not a column the list can be sorted by.", value=sort[:40]))
            sort = DEFAULT_SORT
        return cls(
            scenario=choice("scenario", SCENARIOS, _l("Scenario")),
            sentiment=choice("sentiment", SENTIMENT_LABELS, _l("Sentiment")),
            review=choice("review", REVIEW_STATES, _l("Review")),
            confidence=choice("confidence", (*BANDS, "uncertain"), _l("Confidence")),
            status=choice("status", STATUSES, _l("Status")),
            query=(args.get("q") or "").strip()[:MAX_QUERY_CHARS] or None,
            owner=((args.get("owner") or "").strip()[:64] or None) if allow_owner else None,
            date_from=date_from,
            date_to=date_to,
            zone=zone,
            sort=sort,
            errors=tuple(errors),
        )

    def as_args(self) -> dict[str, str]:
        """Query-string form, for pagination, sorting and export links (the default sort left out)."""
        args = {
            "scenario": self.scenario,
            "sentiment": self.sentiment,
            "review": self.review,
            "confidence": self.confidence,
            "status": self.status,
            "q": self.query,
            "owner": self.owner,
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "sort": None if self.sort == DEFAULT_SORT else self.sort,
        }
        return {key: value for key, value in args.items() if value}

    def filter_args(self) -> dict[str, str]:
        """``as_args`` without the sort: what narrows the list (a "Clear" link shows when any is set)."""
        return {key: value for key, value in self.as_args().items() if key != "sort"}

    def sorted_by(self, key: str) -> str:
        """The ``sort`` value a column header links to: ``key`` descending first (newest, highest id),
        ascending when the list is already sorted by it descending."""
        return key if self.sort == f"-{key}" else f"-{key}"

    @property
    def order(self) -> list:
        """The ORDER BY of ``sort``, every column in the one direction (so one index serves it)."""
        columns = SORTS[self.sort.removeprefix("-")]
        return [column.desc() for column in columns] if self.sort.startswith("-") else [*columns]

    def apply(self, statement: Select, policy: ConfidencePolicy, *, for_count: bool = False) -> Select:
        """``statement`` narrowed by every filter that is set.

        Filters on predictions are EXISTS per analysis for a page (the scan stops after one page of
        matches) and ``id IN (subquery)`` for a count (one pass over a covering prediction index,
        instead of a lookup for each of the owner's analyses).
        """

        def having_prediction(*conditions, common: bool = False) -> Select:
            # ``common``: the condition holds for most predictions, so listing them costs more than
            # checking each analysis (measured: "unreviewed" 28 ms by EXISTS, 44 ms by IN at 100k rows).
            if for_count and not common:
                return statement.where(Analysis.id.in_(select(Prediction.analysis_id).where(*conditions)))
            return statement.where(exists().where(Prediction.analysis_id == Analysis.id, *conditions))

        if self.scenario:
            statement = statement.where(Analysis.scenario == self.scenario)
        if self.status:
            statement = statement.where(Analysis.status == self.status)
        if self.sentiment:
            statement = having_prediction(Prediction.kind == "sentiment", Prediction.final_label == self.sentiment)
        if self.review:
            statement = having_prediction(Prediction.review_state == self.review, common=self.review == UNREVIEWED)
        if self.confidence == "uncertain":
            statement = having_prediction(policy.uncertain_clause())
        elif self.confidence:
            statement = having_prediction(policy.band_clause(self.confidence))
        if self.query:
            pattern = "%" + self.query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            # ILIKE: case-insensitive on PostgreSQL too (SQLite's LIKE already ignores ASCII case).
            statement = statement.where(Analysis.search_text.ilike(pattern, escape="\\"))
        if self.owner:
            statement = statement.join(Analysis.user).where(func.lower(User.username) == self.owner.lower())
        return statement.where(*within_days(Analysis.created_at, self.date_from, self.date_to, ZoneInfo(self.zone)))


def select_history(filters: HistoryFilters, *, owner: User | None, for_count: bool = False) -> Select:
    """Records matching ``filters`` in its order (newest first by default); scoped to ``owner``
    unless ``owner`` is None (admin)."""
    statement = select(Analysis)
    if owner is not None:
        statement = statement.where(Analysis.user_id == owner.id)
    statement = filters.apply(statement, confidence_policy(), for_count=for_count)
    return statement.order_by(*filters.order)


def history_neighbours(
    analysis: Analysis, filters: HistoryFilters, *, owner: User | None
) -> tuple[int | None, int | None]:
    """(previous, next): the ids of the records just before and just after ``analysis`` in the
    listing of ``filters`` (its filters and order), scoped like ``select_history``; None at either end.

    A row-value comparison on the sort's columns (which end with the unique id) finds each in one
    index seek, however deep in the list the record is.
    """
    columns = SORTS[filters.sort.removeprefix("-")]
    key, value = tuple_(*columns), tuple_(*(getattr(analysis, column.key) for column in columns))
    descending = filters.sort.startswith("-")
    listing = select_history(filters, owner=owner).with_only_columns(Analysis.id).limit(1)
    backwards = [column.asc() if descending else column.desc() for column in columns]
    previous = db.session.scalar(
        listing.where(key > value if descending else key < value).order_by(None).order_by(*backwards)
    )
    following = db.session.scalar(listing.where(key < value if descending else key > value))
    return previous, following


# What a listing shows of each record: its owner, predictions and their reviews, in one query each.
LISTING_LOAD = (selectinload(Analysis.user), selectinload(Analysis.predictions).selectinload(Prediction.reviews))


def paginate_history(filters: HistoryFilters, *, owner: User | None, per_page: int | None = None) -> Pagination:
    """One page of ``select_history`` with what a listing shows loaded, and its total counted the fast way.

    A text search, a filter on predictions or on job status is counted up to ``pagination.COUNT_CAP``
    matches (``page.total_capped`` says when there are more): each would read every candidate record
    (no index serves a substring match; a prediction filter joins; status combined with other filters
    has no index of its own), while a capped count stops early, and nobody pages through a thousand
    matches. Counts that one index answers alone (all records, a scenario, a date range) stay exact.
    """
    page = db.paginate(
        select_history(filters, owner=owner).options(*LISTING_LOAD),
        per_page=per_page,
        max_per_page=MAX_PER_PAGE,
        error_out=False,
        count=False,
    )
    counted = select_history(filters, owner=owner, for_count=True)
    if filters.query or filters.reads_predictions or filters.status:
        page.total, page.total_capped = capped_count(counted)
    else:
        page.total, page.total_capped = count(counted), False
    return page


def get_visible_analysis(analysis_id: int, viewer: User) -> Analysis | None:
    """The record if ``viewer`` may see it (its owner, or an admin); None otherwise.

    The ownership check is in the query, so another user's id behaves exactly like a missing one.
    """
    statement = select(Analysis).where(Analysis.id == analysis_id)
    if not viewer.is_admin:
        statement = statement.where(Analysis.user_id == viewer.id)
    return db.session.scalar(statement)
