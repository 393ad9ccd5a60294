"""CSV and JSON exports of analyses, streamed so a large history never sits in memory at once."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

from sqlalchemy import Select

from .extensions import db
from .models import Analysis

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
    "sentiment_label",
    "sentiment_score",
    "score_negative",
    "score_neutral",
    "score_positive",
    "sentiment_model",
    "sentiment_revision",
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
        analysis.sentiment_label,
        analysis.sentiment_score,
        scores.get("negative"),
        scores.get("neutral"),
        scores.get("positive"),
        analysis.sentiment_model,
        analysis.sentiment_revision,
        analysis.app_version,
    )
    return [_csv_cell(value) for value in values]


def _rows(statement: Select) -> Iterable[Analysis]:
    return db.session.scalars(statement.execution_options(yield_per=500))


def iter_csv(statement: Select) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")  # BOM: Excel then opens Chinese text as UTF-8
    writer.writerow(CSV_COLUMNS)
    for analysis in _rows(statement):
        writer.writerow(_csv_row(analysis))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def iter_json(statement: Select) -> Iterator[str]:
    yield "["
    for index, analysis in enumerate(_rows(statement)):
        yield ("," if index else "") + json.dumps(analysis.as_dict(), ensure_ascii=False)
    yield "]"
