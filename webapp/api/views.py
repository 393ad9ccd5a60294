"""JSON API v1.

CSRF protection is off for this blueprint on purpose: it authenticates only with a bearer token
sent in a header, never with the session cookie, so a cross-site page cannot make the browser send
credentials to it.
"""

from __future__ import annotations

import base64
import binascii
import time
from functools import cache

from flask import Blueprint, current_app, g, jsonify, request, url_for
from flask_babel import get_locale
from sqlalchemy import select

from .. import audit, explaining
from ..analyses import (
    AnalysisInputError,
    HistoryFilters,
    ScenarioForbidden,
    confidence_policy,
    paginate_history,
    pending_ids,
    record_rejected_upload,
    submit_analysis,
    submit_batch,
    validate_upload,
)
from ..bounds import database_id
from ..education import SUBMISSIONS_LOAD, add_submissions, assignment_dict
from ..errors import api_error
from ..extensions import csrf, db
from ..i18n import job_error
from ..jobs import enqueue_analyses
from ..jobs.views import batch_summary
from ..models import DONE, FAILED, Analysis, ApiToken, Assignment, Batch, utcnow
from ..ratelimit import check, limit, user_key
from ..reviews import ReviewInputError, record_review
from ..scenarios import SCENARIO_PAGES
from ..uploads import UploadRejected
from .openapi import document

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)
PREDICT_POLL_SECONDS = 0.02
_limit_submissions = limit("PRISM_RATELIMIT_SUBMIT", lambda: user_key(g.api_user))
# Public: what a program needs before it has a token. Nothing here reads or changes anyone's data.
PUBLIC_ENDPOINTS = frozenset({"api.openapi"})
# The document changes only with a deploy: caches may keep it a few minutes, then revalidate by ETag.
OPENAPI_MAX_AGE = 300


@bp.before_request
def authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return api_error(401, "Send a personal API token: Authorization: Bearer <token>.")
    token = db.session.scalar(ApiToken.select_active(secret.strip()))
    if token is None or not token.user.active:
        audit.record_failure(audit.API_AUTH_FAILED, {"hint": secret.strip()[:10]})
        db.session.commit()
        return api_error(401, "The API token is invalid or revoked.")
    if token.mark_used(utcnow()):
        db.session.commit()
    g.api_user = token.user
    check("PRISM_RATELIMIT_API", user_key(token.user))  # per user, however many tokens they hold
    return None


def _read_submission() -> tuple[str, str | None, bytes | None, str | None]:
    """(scenario, text, image bytes, filename) from JSON (base64 image) or multipart form data."""
    if request.is_json:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            raise AnalysisInputError("The body must be a JSON object.")
        text, encoded, filename = payload.get("text"), payload.get("image"), payload.get("filename")
        if text is not None and not isinstance(text, str):
            raise AnalysisInputError("'text' must be a string.")
        if filename is not None and not isinstance(filename, str):
            raise AnalysisInputError("'filename' must be a string.")
        image_bytes = None
        if encoded is not None:
            if not isinstance(encoded, str):
                raise AnalysisInputError("'image' must be a base64 string.")
            if encoded.startswith("data:") and "," in encoded:
                encoded = encoded.split(",", 1)[1]
            try:
                # Line breaks and spaces are allowed: `base64` wraps its output at 76 columns.
                image_bytes = base64.b64decode("".join(encoded.split()), validate=True)
            except (binascii.Error, ValueError):
                raise AnalysisInputError("'image' is not valid base64.") from None
        return str(payload.get("scenario") or "service"), text, image_bytes, filename
    upload = request.files.get("image")
    image_bytes = upload.read() if upload else None
    return (
        request.form.get("scenario") or "service",
        request.form.get("text"),
        image_bytes,
        upload.filename if upload else None,
    )


def _analysis_json(analysis: Analysis) -> dict:
    data = analysis.as_dict(confidence_policy())
    data["url"] = url_for("api.analysis", analysis_id=analysis.id, _external=True)
    data["history_url"] = url_for("history.detail", analysis_id=analysis.id, _external=True)
    return data


def _accepted(data: dict, url: str):
    response = jsonify({**data, "url": url})
    response.status_code = 202
    response.headers["Location"] = url
    return response


def _submission_error(exc: Exception):
    """The JSON answer for input that ``submit_*`` refused (the one error ladder of the API)."""
    if isinstance(exc, UploadRejected):
        record_rejected_upload(exc, g.api_user, via="api")
        db.session.commit()
        return api_error(400, str(exc))
    if isinstance(exc, ScenarioForbidden):
        db.session.rollback()
        return api_error(403, f"Your role may not submit to the {exc} scenario.")
    db.session.rollback()
    return api_error(400, str(exc))


def _submit_one():
    """Read, validate and store one submission, then queue its job; returns the pending analysis."""
    scenario, text, image_bytes, filename = _read_submission()
    image = validate_upload(image_bytes, filename) if image_bytes is not None else None
    analysis = submit_analysis(g.api_user, scenario, text, image)
    analysis_id = analysis.id
    db.session.commit()
    enqueue_analyses([analysis_id])
    return analysis_id


@bp.route("/analyses", methods=["POST"])
@_limit_submissions
def create_analysis():
    try:
        analysis_id = _submit_one()
    except (UploadRejected, AnalysisInputError, ScenarioForbidden) as exc:
        return _submission_error(exc)
    found = db.session.get(Analysis, analysis_id)
    return _accepted(found.status_dict(), url_for("api.analysis", analysis_id=analysis_id, _external=True))


@bp.route("/predict", methods=["POST"])
@_limit_submissions
def predict():
    """The v1 synchronous call: queue the job and wait for it (up to PRISM_INFERENCE_TIMEOUT)."""
    try:
        analysis_id = _submit_one()
    except (UploadRejected, AnalysisInputError, ScenarioForbidden) as exc:
        return _submission_error(exc)
    deadline = time.monotonic() + current_app.config["PRISM_INFERENCE_TIMEOUT"]
    while True:
        found = db.session.get(Analysis, analysis_id, populate_existing=True)
        if found.status == DONE:
            return jsonify(_analysis_json(found)), 201
        url = url_for("api.analysis", analysis_id=analysis_id, _external=True)
        if found.status == FAILED:
            # As in v1, a model that cannot answer is a 503; the record keeps the reason. No Retry-After:
            # the same input fails the same way until someone acts (an administrator, or a Retry later).
            code = {"code": "model_unavailable"} if found.error_info else {}
            return api_error(
                503,
                job_error(found) or "The analysis failed.",
                id=analysis_id,
                analysis_status=found.status,
                url=url,
                **code,
            )
        if time.monotonic() >= deadline:
            return api_error(
                503,
                "The analysis is queued but not finished yet; it completes in the background: poll its url."
                + (f" ({found.error})" if found.error else ""),
                retry_after=5,
                id=analysis_id,
                analysis_status=found.status,
                url=url,
            )
        db.session.rollback()  # hold no transaction (with SQLite: the write lock) while waiting
        time.sleep(PREDICT_POLL_SECONDS)


@bp.route("/analyses")
def analyses():
    filters = HistoryFilters.from_args(request.args)
    page = paginate_history(filters, owner=g.api_user)
    return jsonify(
        {
            "items": [_analysis_json(item) for item in page.items],
            "page": page.page,
            "per_page": page.per_page,
            "pages": page.pages,
            "total": page.total,
            "total_capped": page.total_capped,  # a search or prediction filter counts at most 1,000 matches
        }
    )


def _own_analysis(analysis_id: int) -> Analysis | None:
    # The caller's own records only, admins included: the API is not an audit tool.
    return db.session.scalar(select(Analysis).where(Analysis.id == analysis_id, Analysis.user_id == g.api_user.id))


@bp.route("/analyses/<int:analysis_id>")
def analysis(analysis_id: int):
    found = _own_analysis(analysis_id)
    if found is None:
        return api_error(404, "No such analysis.")
    return jsonify(_analysis_json(found))


@bp.route("/analyses/<int:analysis_id>/explanation")
def explanation(analysis_id: int):
    """The stored explanation (200), or 202 while it is computed: the first call queues it."""
    found = _own_analysis(analysis_id)
    if found is None:
        return api_error(404, "No such analysis.")
    state = explaining.request_explanation(found)
    if state == explaining.READY:
        return jsonify(explaining.api_payload(found.prediction(explaining.KIND)))
    if state == explaining.NOTHING:
        return api_error(404, "This analysis has no caption and no sentiment to explain.")
    url = url_for("api.explanation", analysis_id=analysis_id, _external=True)
    # "busy": the record's own results are still being made; the explanation is queued after them.
    return _accepted({"id": analysis_id, "status": explaining.COMPUTING}, url)


@bp.route("/analyses/<int:analysis_id>/reviews", methods=["POST"])
def review(analysis_id: int):
    found = _own_analysis(analysis_id)
    if found is None:
        return api_error(404, "No such analysis.")
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        return api_error(400, "The body must be a JSON object with 'kind' and 'decision'.")
    prediction = found.prediction(str(payload.get("kind")))
    if prediction is None:
        kinds = ", ".join(p.kind for p in found.predictions) or "none yet"
        return api_error(404, f"This analysis has no {payload.get('kind')!r} prediction (it has: {kinds}).")
    if not prediction.GENERIC_REVIEW:
        return api_error(400, f"A {prediction.kind!r} is decided on its own page, not through this endpoint.")
    comment = payload.get("comment")
    if comment is not None and not isinstance(comment, str):
        return api_error(400, "'comment' must be a string.")
    try:
        record_review(prediction, g.api_user, str(payload.get("decision")), payload.get("value"), comment)
    except ScenarioForbidden:
        db.session.rollback()
        return api_error(403, f"Your role may not review in the {found.scenario} scenario.")
    except ReviewInputError as exc:
        db.session.rollback()
        return api_error(400, str(exc))
    db.session.commit()
    return jsonify(prediction.as_dict(confidence_policy())), 201


@bp.route("/batches", methods=["POST"])
@_limit_submissions
def create_batch():
    uploads = [upload for upload in request.files.getlist("images") if upload and upload.filename]
    if not uploads:
        return api_error(400, "Send one or more files as repeated 'images' fields (multipart).")
    files = [(up.read(), up.filename) for up in uploads]
    assignment_field = request.form.get("assignment")
    try:
        if assignment_field is not None:  # homework photos into an assignment: one submission each
            assignment_id = database_id(assignment_field)
            assignment = _own_assignment(assignment_id) if assignment_id is not None else None
            if assignment is None:
                return api_error(404, "No such assignment.")
            batch, _refused = add_submissions(assignment, g.api_user, files)
        else:
            batch = submit_batch(g.api_user, request.form.get("scenario") or "service", files)
    except (AnalysisInputError, ScenarioForbidden) as exc:
        return _submission_error(exc)
    batch_id, ids = batch.id, pending_ids(batch)
    db.session.commit()
    enqueue_analyses(ids)
    summary = batch_summary(db.session.get(Batch, batch_id))
    return _accepted(summary, url_for("api.batch", batch_id=batch_id, _external=True))


def _teaches() -> bool:
    return SCENARIO_PAGES["education"].may_submit(g.api_user)


def _own_assignment(assignment_id: int) -> Assignment | None:
    """The caller's assignment, its submissions loaded (teachers only); anyone else's id behaves like a
    missing one."""
    if not _teaches():
        return None
    return db.session.scalar(
        select(Assignment)
        .where(Assignment.id == assignment_id, Assignment.user_id == g.api_user.id)
        .options(*SUBMISSIONS_LOAD)
    )


@bp.route("/assignments")
def assignments():
    if not _teaches():
        return api_error(403, "Assignments belong to teachers.")
    rows = db.session.scalars(
        select(Assignment)
        .where(Assignment.user_id == g.api_user.id)
        .order_by(Assignment.id.desc())
        .options(*SUBMISSIONS_LOAD)
    ).all()
    return jsonify({"items": [assignment_dict(assignment) for assignment in rows]})


@bp.route("/assignments/<int:assignment_id>")
def assignment(assignment_id: int):
    found = _own_assignment(assignment_id)
    if found is None:
        return api_error(404, "No such assignment.")
    return jsonify(assignment_dict(found, with_submissions=True))


@bp.route("/batches/<int:batch_id>")
def batch(batch_id: int):
    found = db.session.scalar(select(Batch).where(Batch.id == batch_id, Batch.user_id == g.api_user.id))
    if found is None:
        return api_error(404, "No such batch.")
    return jsonify(batch_summary(found))


@bp.route("/openapi.json")
def openapi():
    """The OpenAPI document (``webapp.api.openapi``): no token, no per-user data, so it may be cached
    publicly (this header wins over the no-store every other API answer gets)."""
    response = jsonify(_document_in(str(get_locale())))
    response.headers["Cache-Control"] = f"public, max-age={OPENAPI_MAX_AGE}"
    response.add_etag()
    return response.make_conditional(request)


@cache
def _document_in(locale: str) -> dict:
    """``document()`` resolved once per process and locale (``locale`` is only the cache key: under
    /api/ it is always English). Resolving its few hundred lazy texts took a few milliseconds per
    request of a public route, for a document that changes only with a deploy. Read-only."""
    return document()
