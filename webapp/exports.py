"""CSV and JSON exports of analyses, streamed: only the ids and one batch of rows sit in memory at once."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy import Select, select

from .analyses import LISTING_LOAD
from .extensions import db
from .models import Analysis, ConfidencePolicy, Prediction

T = TypeVar("T")
_BATCH_SIZE = 500

# Columns every record has, then per prediction kind (Prediction.KINDS, in registration order): the
# value that counts, whether a human confirmed it, the review state and reviewer, the AI original,
# its confidence and uncertainty, the model stamp, then the kind's own extra columns.
BASE_COLUMNS = ("id", "created_at", "owner", "scenario", "status", "text", "image_filename", "image_sha256")
KIND_COLUMNS = (
    "",
    "_human_confirmed",
    "_review",
    "_reviewer",
    "_ai",
    "_confidence",
    "_uncertain",
    "_model",
    "_revision",
    "_precision",
)
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def exported_kinds() -> list[tuple[str, type[Prediction]]]:
    """The kinds that have CSV columns, in registration order."""
    return [(kind, cls) for kind, cls in Prediction.KINDS.items() if cls.EXPORTED]


def csv_columns() -> tuple[str, ...]:
    columns = list(BASE_COLUMNS)
    for kind, prediction_class in exported_kinds():
        columns += [kind + suffix for suffix in KIND_COLUMNS]
        columns += prediction_class.csv_columns()
    return (*columns, "app_version")


def csv_cell(value) -> str:
    """Neutralise spreadsheet formulas (CSV injection) in user- or model-written text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def _csv_row(analysis: Analysis, policy: ConfidencePolicy) -> list[str]:
    values: list = [
        analysis.id,
        analysis.created_at.isoformat() + "Z",
        analysis.user.username,
        analysis.scenario,
        analysis.status,
        analysis.text,
        analysis.image_filename,
        analysis.image_sha256,
    ]
    for kind, prediction_class in exported_kinds():
        prediction = analysis.prediction(kind)
        if prediction is None:
            values += [None] * (len(KIND_COLUMNS) + len(prediction_class.csv_columns()))
            continue
        review = prediction.latest_review
        values += [
            prediction.value,
            prediction.human_confirmed,
            prediction.review_state,
            review.reviewer_name if review else None,
            prediction.ai_value,
            prediction.confidence,
            policy.is_uncertain(prediction.confidence, prediction.margin),
            prediction.model_id,
            prediction.revision,
            prediction.precision,
            *prediction.csv_extra(),
        ]
    values.append(analysis.app_version)
    return [csv_cell(value) for value in values]


def _rendered(statement: Select, render: Callable[[Analysis], T]) -> Iterator[T]:
    """``render`` applied to each row of ``statement``, in order, read in short transactions.

    Every SQLite transaction holds the write lock (BEGIN IMMEDIATE, see database.py), so none may
    stay open while a slow client downloads: the ids are read first, then each batch is read and
    rendered, and the transaction ends before the batch is handed to the client.
    """
    ids = db.session.scalars(statement.with_only_columns(Analysis.id)).all()
    db.session.rollback()
    for start in range(0, len(ids), _BATCH_SIZE):
        batch = ids[start : start + _BATCH_SIZE]
        rows = db.session.scalars(select(Analysis).where(Analysis.id.in_(batch)).options(*LISTING_LOAD))
        rendered = {analysis.id: render(analysis) for analysis in rows}
        db.session.rollback()
        yield from (rendered[analysis_id] for analysis_id in batch if analysis_id in rendered)


def iter_csv(statement: Select, policy: ConfidencePolicy) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")  # BOM: Excel then opens Chinese text as UTF-8
    writer.writerow(csv_columns())
    for row in _rendered(statement, lambda analysis: _csv_row(analysis, policy)):
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def iter_json(statement: Select, policy: ConfidencePolicy) -> Iterator[str]:
    yield "["
    for index, data in enumerate(_rendered(statement, lambda analysis: analysis.as_dict(policy))):
        yield ("," if index else "") + json.dumps(data, ensure_ascii=False)
    yield "]"
