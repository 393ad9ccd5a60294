"""CSV and JSON exports of analyses, streamed: only the ids and one batch of rows sit in memory at once."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload

from .extensions import db
from .models import Analysis

T = TypeVar("T")
_BATCH_SIZE = 500

CSV_COLUMNS = (
    "id",
    "created_at",
    "owner",
    "scenario",
    "text",
    "image_filename",
    "image_sha256",
    "caption",
    "caption_model",
    "caption_revision",
    "caption_precision",
    "sentiment_label",
    "sentiment_score",
    "score_negative",
    "score_neutral",
    "score_positive",
    "sentiment_model",
    "sentiment_revision",
    "sentiment_precision",
    "app_version",
)
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value) -> str:
    """Neutralise spreadsheet formulas (CSV injection) in user- or model-written text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def _csv_row(analysis: Analysis) -> list[str]:
    scores = analysis.sentiment_scores or {}
    values = (
        analysis.id,
        analysis.created_at.isoformat() + "Z",
        analysis.user.username,
        analysis.scenario,
        analysis.text,
        analysis.image_filename,
        analysis.image_sha256,
        analysis.caption,
        analysis.caption_model,
        analysis.caption_revision,
        analysis.caption_precision,
        analysis.sentiment_label,
        analysis.sentiment_score,
        scores.get("negative"),
        scores.get("neutral"),
        scores.get("positive"),
        analysis.sentiment_model,
        analysis.sentiment_revision,
        analysis.sentiment_precision,
        analysis.app_version,
    )
    return [_csv_cell(value) for value in values]


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
        rows = db.session.scalars(select(Analysis).where(Analysis.id.in_(batch)).options(selectinload(Analysis.user)))
        rendered = {analysis.id: render(analysis) for analysis in rows}
        db.session.rollback()
        yield from (rendered[analysis_id] for analysis_id in batch if analysis_id in rendered)


def iter_csv(statement: Select) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")  # BOM: Excel then opens Chinese text as UTF-8
    writer.writerow(CSV_COLUMNS)
    for row in _rendered(statement, _csv_row):
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def iter_json(statement: Select) -> Iterator[str]:
    yield "["
    for index, data in enumerate(_rendered(statement, Analysis.as_dict)):
        yield ("," if index else "") + json.dumps(data, ensure_ascii=False)
    yield "]"
