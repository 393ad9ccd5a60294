"""The OpenAPI 3.1 document of the JSON API, written as data: one source for ``/api/v1/openapi.json``
and the docs page.

Why data and not generated: the views read their bodies by hand (JSON or multipart, one error
ladder), so nothing could infer the schemas from them; a hand-written document kept honest by tests
can. tests/test_openapi.py fails when a route under /api/v1 is missing here (or one here is not a
route), and validates live answers against these schemas with schemathesis.

Texts a person reads on the docs page (summaries, descriptions, parameters, request fields) are lazy
strings: the page renders them in the reader's language; the JSON is always English, because
JSON responses are (``i18n.select_locale``). ``document()`` resolves them.
"""

from __future__ import annotations

from typing import Any

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l

from .. import __version__
from ..analyses import MAX_PER_PAGE, MAX_QUERY_CHARS
from ..bounds import MAX_ID, MAX_PAGE
from ..models import BANDS, DECISIONS, NOT_REVIEWABLE, REVIEW_STATES, SCENARIOS, SENTIMENT_LABELS, STATUSES

JSON = "application/json"
MULTIPART = "multipart/form-data"
PREFIX = "/api/v1"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _json(schema: dict[str, Any], description: Any, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


_RETRY_AFTER = {
    "description": "Whole seconds to wait before trying again.",
    "schema": {"type": "integer", "minimum": 0},
}
_LOCATION = {"description": "The URL to poll.", "required": True, "schema": {"type": "string", "format": "uri"}}
_ID = {"type": "integer", "minimum": 1}
_TIMESTAMP = {"type": "string", "format": "date-time", "description": "UTC, ISO 8601, ending in Z."}
_PROGRESS = {
    "type": "object",
    "required": ["total", "done", "failed", "finished"],
    "properties": {
        "total": {"type": "integer", "minimum": 0},
        "done": {"type": "integer", "minimum": 0},
        "failed": {"type": "integer", "minimum": 0},
        "finished": {"type": "boolean"},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "Every error answer: the HTTP status again and an English message.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "message": {"type": "string"},
                    "id": {"type": "integer", "description": "/predict: the analysis that was stored."},
                    "analysis_status": {"type": "string", "enum": list(STATUSES)},
                    "url": {"type": "string", "format": "uri", "description": "/predict: where to poll."},
                },
            }
        },
    },
    "AnalysisStatus": {
        "type": "object",
        "description": "A submission's job: queued (pending), running, done or failed.",
        "required": ["id", "status", "error", "progress", "url"],
        "properties": {
            "id": _ID,
            "status": {"type": "string", "enum": list(STATUSES)},
            "error": _nullable("string", description="Why it failed, or why it waits."),
            "progress": {
                "type": "object",
                "required": ["done", "total"],
                "properties": {
                    "done": {"type": "integer", "minimum": 0},
                    "total": {"type": "integer", "minimum": 0},
                },
            },
            "url": {"type": "string", "format": "uri"},
        },
    },
    "Review": {
        "type": "object",
        "description": "The latest human decision on a prediction.",
        "required": ["state", "value", "reviewer", "at", "comment"],
        "properties": {
            "state": {"type": "string", "enum": [*REVIEW_STATES, NOT_REVIEWABLE]},
            "value": {"description": "The corrected value when the state is corrected, else null."},
            "reviewer": _nullable("string"),
            "at": _nullable("string", format="date-time"),
            "comment": _nullable("string"),
        },
    },
    "Prediction": {
        "type": "object",
        "description": "One model output. `output` is what the model said; `value` is what counts.",
        "required": [
            "id",
            "kind",
            "model",
            "revision",
            "precision",
            "latency_ms",
            "output",
            "confidence",
            "band",
            "uncertain",
            "value",
            "human_confirmed",
            "review",
        ],
        "properties": {
            "id": _ID,
            "kind": {
                "type": "string",
                "examples": [
                    "caption",
                    "sentiment",
                    "ocr",
                    "category",
                    "reply",
                    "grade",
                    "fusion",
                    "agreement",
                    "explanation",
                ],
            },
            "model": {"type": "string", "description": "The model's hub id or local name."},
            "revision": _nullable("string"),
            "precision": _nullable("string"),
            "latency_ms": _nullable("number"),
            "output": {"type": "object"},
            "confidence": _nullable("number", minimum=0, maximum=1),
            "band": {"type": ["string", "null"], "enum": [*BANDS, None]},
            "uncertain": {"type": "boolean"},
            "value": {"description": "The human value when corrected, the model's otherwise, null when rejected."},
            "human_confirmed": {"type": "boolean"},
            "review": _ref("Review"),
        },
    },
    "Analysis": {
        "description": "One submission with its inputs and every prediction.",
        "allOf": [
            _ref("AnalysisStatus"),
            {
                "type": "object",
                "required": [
                    "scenario",
                    "created_at",
                    "owner",
                    "batch_id",
                    "text",
                    "image",
                    "predictions",
                    "values",
                    "app_version",
                    "history_url",
                ],
                "properties": {
                    "scenario": {"type": "string", "enum": list(SCENARIOS)},
                    "created_at": _TIMESTAMP,
                    "owner": {"type": "string"},
                    "batch_id": {"type": ["integer", "null"], "minimum": 1},
                    "text": _nullable("string"),
                    "image": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": ["sha256", "format", "width", "height", "filename"],
                                "properties": {
                                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                    "format": _nullable("string"),
                                    "width": _nullable("integer"),
                                    "height": _nullable("integer"),
                                    "filename": _nullable("string"),
                                },
                            },
                        ]
                    },
                    "predictions": {"type": "array", "items": _ref("Prediction")},
                    "values": {"type": "object", "description": "Each prediction kind's value that counts."},
                    "app_version": {"type": "string"},
                    "history_url": {"type": "string", "format": "uri"},
                },
            },
        ],
    },
    "CaptionHeatmap": {
        "type": "object",
        "description": "Where the caption model looked: its decoder's cross-attention over the image patches.",
        "required": ["caption", "words", "grid", "per_word", "overall", "method", "model_id", "revision", "precision"],
        "properties": {
            "caption": {"type": "string", "description": "The caption explained: the model's own, as stored."},
            "words": {"type": "array", "items": {"type": "string"}},
            "grid": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 2,
                "maxItems": 2,
                "description": "Patch rows, patch columns.",
            },
            "per_word": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "number"}},
                "description": "One row-major map of the grid per word, each summing to 1.",
            },
            "overall": {"type": "array", "items": {"type": "number"}, "description": "The whole caption's map."},
            "method": {"type": "string"},
            "model_id": {"type": "string"},
            "revision": _nullable("string"),
            "precision": {"type": "string"},
            "latency_ms": {"type": "number"},
        },
    },
    "TokenAttributions": {
        "type": "object",
        "description": "Which tokens pushed the sentiment model toward its label (integrated gradients).",
        "required": [
            "text",
            "tokens",
            "spans",
            "attributions",
            "label",
            "logit",
            "baseline_logit",
            "completeness_gap",
            "steps",
            "method",
            "model_id",
            "revision",
            "precision",
        ],
        "properties": {
            "text": {"type": "string"},
            "tokens": {"type": "array", "items": {"type": "string"}},
            "spans": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2},
                "description": "Each token's [start, end) character offsets in text.",
            },
            "attributions": {
                "type": "array",
                "items": {"type": "number"},
                "description": "Per token: its contribution to the label's logit (positive: toward the label).",
            },
            "label": {"type": "string"},
            "logit": {"type": "number"},
            "baseline_logit": {"type": "number"},
            "completeness_gap": {"type": "number", "description": "sum(attributions) - (logit - baseline_logit)."},
            "steps": {"type": "integer", "minimum": 0},
            "method": {"type": "string"},
            "model_id": {"type": "string"},
            "revision": _nullable("string"),
            "precision": {"type": "string"},
            "latency_ms": {"type": "number"},
        },
    },
    "Explanation": {
        "type": "object",
        "description": "Why the models said what they did about one record; a part is null when the record has none.",
        "required": ["status", "id", "created_at", "caption", "sentiment", "model", "revision", "precision"],
        "properties": {
            "status": {"type": "string", "enum": ["ready"]},
            "id": _ID,
            "created_at": _TIMESTAMP,
            "caption": {"oneOf": [_ref("CaptionHeatmap"), {"type": "null"}]},
            "sentiment": {"oneOf": [_ref("TokenAttributions"), {"type": "null"}]},
            "model": {"type": "string"},
            "revision": _nullable("string"),
            "precision": _nullable("string"),
            "latency_ms": _nullable("number"),
        },
    },
    "ExplanationPending": {
        "type": "object",
        "description": "The explanation is queued or being computed: poll the url.",
        "required": ["id", "status", "url"],
        "properties": {
            "id": _ID,
            "status": {"type": "string", "enum": ["computing"]},
            "url": {"type": "string", "format": "uri"},
        },
    },
    "AnalysisPage": {
        "type": "object",
        "required": ["items", "page", "per_page", "pages", "total", "total_capped"],
        "properties": {
            "items": {"type": "array", "items": _ref("Analysis")},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE},
            "pages": {"type": "integer", "minimum": 0},
            "total": {"type": "integer", "minimum": 0},
            "total_capped": {
                "type": "boolean",
                "description": "True when a search or prediction filter stopped counting at 1,000 matches.",
            },
        },
    },
    "Batch": {
        "description": "Several uploads sent together: one analysis each.",
        "allOf": [
            _PROGRESS,
            {
                "type": "object",
                "required": ["id", "scenario", "created_at", "items"],
                "properties": {
                    "id": _ID,
                    "scenario": {"type": "string", "enum": list(SCENARIOS)},
                    "created_at": _TIMESTAMP,
                    "items": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "status"],
                            "properties": {"id": _ID, "status": {"type": "string", "enum": list(STATUSES)}},
                        },
                    },
                    "url": {"type": "string", "format": "uri", "description": "In the 202 answer only."},
                },
            },
        ],
    },
    "Assignment": {
        "type": "object",
        "required": ["id", "title", "reference_text", "created_at", "rubric", "progress"],
        "properties": {
            "id": _ID,
            "title": {"type": "string"},
            "reference_text": _nullable("string"),
            "created_at": _TIMESTAMP,
            "rubric": {
                "type": "object",
                "required": ["id", "title", "criteria"],
                "properties": {
                    "id": _ID,
                    "title": {"type": "string"},
                    "criteria": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["key", "title", "description", "max_points"],
                            "properties": {
                                "key": {"type": "string"},
                                "title": {"type": "string"},
                                "description": _nullable("string"),
                                "max_points": {"type": "number"},
                            },
                        },
                    },
                },
            },
            "progress": _PROGRESS,
            "submissions": {
                "type": "array",
                "description": "GET /assignments/{assignment_id} only.",
                "items": {
                    "type": "object",
                    "required": [
                        "id",
                        "analysis_id",
                        "student",
                        "status",
                        "graded",
                        "scores",
                        "total",
                        "feedback",
                        "graded_by",
                        "agreement",
                    ],
                    "properties": {
                        "id": _ID,
                        "analysis_id": _ID,
                        "student": _nullable("string"),
                        "status": {"type": "string", "enum": list(STATUSES)},
                        "graded": {"type": "boolean"},
                        "scores": {"type": "object", "additionalProperties": {"type": "number"}},
                        "total": _nullable("number"),
                        "feedback": _nullable("string"),
                        "graded_by": _nullable("string"),
                        "agreement": _nullable("number", minimum=0, maximum=1),
                    },
                },
            },
        },
    },
    "AssignmentList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref("Assignment")}},
    },
    "SubmissionJson": {
        "type": "object",
        "description": _l("An image, a text, or both."),
        "properties": {
            "scenario": {
                "type": "string",
                "enum": list(SCENARIOS),
                "default": "service",
                "description": _l("The scenario to submit to; your role decides which you may use."),
            },
            "text": {"type": "string", "description": _l("The text to analyse.")},
            "image": {
                "type": "string",
                "contentEncoding": "base64",
                "description": _l("The image, base64-encoded (a data: URL is accepted too)."),
            },
            "filename": {"type": "string", "description": _l("The image's file name, kept with the record.")},
        },
    },
    "SubmissionForm": {
        "type": "object",
        "description": _l("An image, a text, or both."),
        "properties": {
            "scenario": {
                "type": "string",
                "enum": list(SCENARIOS),
                "default": "service",
                "description": _l("The scenario to submit to; your role decides which you may use."),
            },
            "text": {"type": "string", "description": _l("The text to analyse.")},
            "image": {"type": "string", "format": "binary", "description": _l("The image file.")},
        },
    },
    "BatchForm": {
        "type": "object",
        "required": ["images"],
        "properties": {
            "images": {
                "type": "array",
                "items": {"type": "string", "format": "binary"},
                "description": _l("One or more image files, as repeated 'images' fields."),
            },
            "scenario": {
                "type": "string",
                "enum": list(SCENARIOS),
                "default": "service",
                "description": _l("The scenario to submit to; your role decides which you may use."),
            },
            "assignment": {
                "type": "integer",
                "minimum": 1,
                "description": _l("Teachers: an assignment's id; each file becomes one submission to it."),
            },
        },
    },
    "ReviewRequest": {
        "type": "object",
        "required": ["kind", "decision"],
        "properties": {
            "kind": {"type": "string", "description": _l("The prediction's kind, e.g. sentiment or caption.")},
            "decision": {"type": "string", "enum": list(DECISIONS), "description": _l("What you decide.")},
            "value": {"description": _l("With 'correct': the right value (a label, or a text).")},
            "comment": {"type": ["string", "null"], "description": _l("A note kept with the decision.")},
        },
    },
}

RESPONSES: dict[str, Any] = {
    "BadRequest": _json(_ref("Error"), _l("The input was refused; the message says why. Nothing was stored.")),
    "Unauthorized": _json(
        _ref("Error"),
        _l("No token, or the token is invalid or revoked."),
        headers={"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    ),
    "Forbidden": _json(_ref("Error"), _l("Your role may not do this in that scenario.")),
    "NotFound": _json(_ref("Error"), _l("No such record, or it is not yours: both answer alike.")),
    "TooLarge": _json(_ref("Error"), _l("The request body is larger than the server's limit.")),
    "RateLimited": _json(
        _ref("Error"),
        _l("Too many requests: wait for Retry-After seconds."),
        headers={"Retry-After": {**_RETRY_AFTER, "required": True}},
    ),
}

_PAGE_PARAMETERS = [
    {
        "name": "page",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
        "description": _l("The page (a page past the last one is empty)."),
    },
    {
        "name": "per_page",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": 20},
        "description": _l("Records per page, at most %(max)s.", max=MAX_PER_PAGE),
    },
]


def _filter(name: str, choices: tuple[str, ...] | list[str], description: LazyString) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "schema": {"type": "string", "enum": list(choices)},
        "description": description,
    }


_FILTERS = [
    _filter("scenario", SCENARIOS, _l("Only this scenario.")),
    _filter("status", STATUSES, _l("Only jobs in this state.")),
    _filter("sentiment", SENTIMENT_LABELS, _l("Only records whose sentiment that counts is this.")),
    _filter("review", REVIEW_STATES, _l("Only records with a prediction in this review state.")),
    _filter("confidence", [*BANDS, "uncertain"], _l("Only records with a prediction in this band, or uncertain.")),
    {
        "name": "q",
        "in": "query",
        "schema": {"type": "string", "maxLength": MAX_QUERY_CHARS},
        "description": _l("Text search in the text, file name, captions and corrections."),
    },
    {
        "name": "from",
        "in": "query",
        "schema": {"type": "string", "format": "date"},
        "description": _l("Created on or after this day (UTC, YYYY-MM-DD)."),
    },
    {
        "name": "to",
        "in": "query",
        "schema": {"type": "string", "format": "date"},
        "description": _l("Created on or before this day (UTC, YYYY-MM-DD)."),
    },
]


def _path_id(name: str, description: LazyString) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _links(pointer: str, parameter: str, *operation_ids: str) -> dict[str, Any]:
    """OpenAPI links: the id at ``pointer`` in this answer's body is the path ``parameter`` of the next
    calls (what a client does next; schemathesis' stateful tests follow them)."""
    value = f"$response.body#{pointer}"
    return {operation: {"operationId": operation, "parameters": {parameter: value}} for operation in operation_ids}


_SUBMISSION_BODY = {
    "required": True,
    "content": {JSON: {"schema": _ref("SubmissionJson")}, MULTIPART: {"schema": _ref("SubmissionForm")}},
}
# Every authenticated call counts against the per-user API limit; submissions against the submit limit too.
_COMMON = {"401": _response("Unauthorized"), "429": _response("RateLimited")}
_SUBMIT_ERRORS = {
    "400": _response("BadRequest"),
    "403": _response("Forbidden"),
    "413": _response("TooLarge"),
    **_COMMON,
}

PATHS: dict[str, Any] = {
    "/analyses": {
        "get": {
            "operationId": "listAnalyses",
            "summary": _l("List your analyses"),
            "description": _l("Your own records, newest first, a page at a time, with the history page's filters."),
            "parameters": [*_PAGE_PARAMETERS, *_FILTERS],
            "responses": {
                "200": _json(_ref("AnalysisPage"), _l("One page of your analyses.")),
                "400": _response("BadRequest"),
                "404": _response("NotFound"),
                **_COMMON,
            },
        },
        "post": {
            "operationId": "createAnalysis",
            "summary": _l("Submit an analysis"),
            "description": _l(
                "Stores the input and queues its job; answers at once. Poll the url (also in Location) "
                "until the status is done or failed."
            ),
            "requestBody": _SUBMISSION_BODY,
            "responses": {
                "202": _json(
                    _ref("AnalysisStatus"),
                    _l("Queued."),
                    headers={"Location": _LOCATION},
                    links=_links("/id", "analysis_id", "getAnalysis", "reviewPrediction"),
                ),
                **_SUBMIT_ERRORS,
            },
        },
    },
    "/analyses/{analysis_id}": {
        "parameters": [_path_id("analysis_id", _l("The analysis's id."))],
        "get": {
            "operationId": "getAnalysis",
            "summary": _l("Get one analysis"),
            "description": _l("One of your records with its job state and every prediction."),
            "responses": {
                "200": _json(_ref("Analysis"), _l("The analysis.")),
                "404": _response("NotFound"),
                **_COMMON,
            },
        },
    },
    "/analyses/{analysis_id}/explanation": {
        "parameters": [_path_id("analysis_id", _l("The analysis's id."))],
        "get": {
            "operationId": "getExplanation",
            "summary": _l("Explain an analysis"),
            "description": _l(
                "The caption's heatmaps over the image patches (per word and overall) and the sentiment's "
                "token attributions. The first call queues the computation and answers 202; poll until 200. "
                "The result is stored with the record and served from there afterwards; if computing it "
                "failed, the next call queues it again."
            ),
            "responses": {
                "200": _json(_ref("Explanation"), _l("The explanation.")),
                "202": _json(_ref("ExplanationPending"), _l("Being computed."), headers={"Location": _LOCATION}),
                "404": _response("NotFound"),
                **_COMMON,
            },
        },
    },
    "/analyses/{analysis_id}/reviews": {
        "parameters": [_path_id("analysis_id", _l("The analysis's id."))],
        "post": {
            "operationId": "reviewPrediction",
            "summary": _l("Review a prediction"),
            "description": _l(
                "Accept, correct, reject or reopen one prediction of your record. The model's output is "
                "kept; the decision decides the value that counts. Grades are given on their own page."
            ),
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ReviewRequest")}}},
            "responses": {
                "201": _json(_ref("Prediction"), _l("Recorded; the prediction as it now stands.")),
                "404": _response("NotFound"),
                **_SUBMIT_ERRORS,
            },
        },
    },
    "/predict": {
        "post": {
            "operationId": "predict",
            "summary": _l("Submit and wait for the result"),
            "description": _l(
                "The synchronous call: queues the job and waits for it, up to the server's inference timeout."
            ),
            "requestBody": _SUBMISSION_BODY,
            "responses": {
                "201": _json(
                    _ref("Analysis"),
                    _l("Done: the analysis with its predictions."),
                    links=_links("/id", "analysis_id", "getAnalysis", "reviewPrediction"),
                ),
                "503": _json(
                    _ref("Error"),
                    _l(
                        "The job failed, or was not finished in time (then with Retry-After): the record "
                        "is kept, and the error carries its id and url to poll."
                    ),
                    headers={"Retry-After": _RETRY_AFTER},
                    links=_links("/error/id", "analysis_id", "getAnalysis"),
                ),
                **_SUBMIT_ERRORS,
            },
        },
    },
    "/batches": {
        "post": {
            "operationId": "createBatch",
            "summary": _l("Submit a batch of images"),
            "description": _l(
                "One analysis per file; with 'assignment', homework photos into one of your assignments."
            ),
            "requestBody": {"required": True, "content": {MULTIPART: {"schema": _ref("BatchForm")}}},
            "responses": {
                "202": _json(
                    _ref("Batch"),
                    _l("Queued."),
                    headers={"Location": _LOCATION},
                    links=_links("/id", "batch_id", "getBatch"),
                ),
                "404": _response("NotFound"),
                **_SUBMIT_ERRORS,
            },
        },
    },
    "/batches/{batch_id}": {
        "parameters": [_path_id("batch_id", _l("The batch's id."))],
        "get": {
            "operationId": "getBatch",
            "summary": _l("Get a batch's progress"),
            "description": _l("How many items are done or failed, and each item's id and status."),
            "responses": {
                "200": _json(_ref("Batch"), _l("The batch.")),
                "404": _response("NotFound"),
                **_COMMON,
            },
        },
    },
    "/assignments": {
        "get": {
            "operationId": "listAssignments",
            "summary": _l("List your assignments"),
            "description": _l("Teachers: your assignments with their rubric and progress."),
            "responses": {
                "200": _json(_ref("AssignmentList"), _l("Your assignments, newest first.")),
                "403": _response("Forbidden"),
                **_COMMON,
            },
        },
    },
    "/assignments/{assignment_id}": {
        "parameters": [_path_id("assignment_id", _l("The assignment's id."))],
        "get": {
            "operationId": "getAssignment",
            "summary": _l("Get an assignment"),
            "description": _l("Teachers: one assignment with every submission's scores, feedback and status."),
            "responses": {
                "200": _json(_ref("Assignment"), _l("The assignment with its submissions.")),
                "404": _response("NotFound"),
                **_COMMON,
            },
        },
    },
    "/openapi.json": {
        "get": {
            "operationId": "getOpenApi",
            "summary": _l("This document"),
            "description": _l("The OpenAPI 3.1 description of this API. No token needed."),
            "security": [],
            "responses": {"200": _json({"type": "object"}, _l("The OpenAPI document."))},
        },
    },
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Prism API",
        "version": __version__,
        "description": _l(
            "Submit images and texts to Prism's models, poll the results and record human reviews. "
            "Authenticate with a personal token created on your account page."
        ),
    },
    # Relative: the document names no host, so any deployment (and any cache) can serve the same bytes.
    "servers": [{"url": PREFIX}],
    "security": [{"bearerToken": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {
            "bearerToken": {
                "type": "http",
                "scheme": "bearer",
                "description": _l("A personal API token (prism_...) from your account page."),
            }
        },
        "schemas": SCHEMAS,
        "responses": RESPONSES,
    },
}


def _resolve(value: Any) -> Any:
    if isinstance(value, LazyString):
        return str(value)
    if isinstance(value, dict):
        return {key: _resolve(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item) for item in value]
    return value


def document() -> dict[str, Any]:
    """The document with every text in the current locale (English under /api/), as plain JSON data."""
    return _resolve(_DOCUMENT)


def component(ref: str) -> dict[str, Any]:
    """What a local ``$ref`` ("#/components/...") in ``document()`` points to."""
    found: Any = _DOCUMENT
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return found


def operations() -> list[dict[str, Any]]:
    """Each operation for the docs page, in document order: method, full path, summary, description,
    parameters, request body fields per content type, and responses (status, description) with
    ``$ref``s followed. Texts stay lazy, so they render in the reader's language."""
    found = []
    for path, item in PATHS.items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method == "parameters":
                continue
            bodies = []
            for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
                schema = component(content["schema"]["$ref"])
                required = set(schema.get("required", ()))
                fields = [
                    {"name": name, "required": name in required, **field}
                    for name, field in schema["properties"].items()
                ]
                bodies.append({"media_type": media_type, "fields": fields})
            responses = [
                (status, component(response["$ref"]) if "$ref" in response else response)
                for status, response in sorted(operation["responses"].items())
            ]
            found.append(
                {
                    "method": method.upper(),
                    "path": PREFIX + path,
                    "id": operation["operationId"],
                    "summary": operation["summary"],
                    "description": operation["description"],
                    "public": operation.get("security") == [],
                    "parameters": [*shared, *operation.get("parameters", [])],
                    "bodies": bodies,
                    "responses": [(status, response["description"]) for status, response in responses],
                }
            )
    return found
