"""JSON API v1.

CSRF protection is off for this blueprint on purpose: it authenticates only with a bearer token
sent in a header, never with the session cookie, so a cross-site page cannot make the browser send
credentials to it.
"""

from __future__ import annotations

import base64
import binascii

from flask import Blueprint, current_app, g, jsonify, request, url_for
from sqlalchemy import select

from .. import audit
from ..analyses import (
    AnalysisInputError,
    HistoryFilters,
    create_analysis,
    select_history,
    validate_upload,
)
from ..errors import api_error
from ..extensions import csrf, db
from ..inference import ModelUnavailable
from ..models import SCENARIOS, Analysis, ApiToken, utcnow
from ..storage import UploadRejected

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)


@bp.before_request
def authenticate():
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return api_error(401, "Send a personal API token: Authorization: Bearer <token>.")
    token = db.session.scalar(ApiToken.select_active(secret.strip()))
    if token is None or not token.user.active:
        audit.record(audit.API_AUTH_FAILED, details={"hint": secret.strip()[:10]})
        db.session.commit()
        return api_error(401, "The API token is invalid or revoked.")
    if token.mark_used(utcnow()):
        db.session.commit()
    g.api_user = token.user
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
    data = analysis.as_dict()
    data["url"] = url_for("api.analysis", analysis_id=analysis.id, _external=True)
    data["history_url"] = url_for("history.detail", analysis_id=analysis.id, _external=True)
    return data


@bp.route("/predict", methods=["POST"])
def predict():
    try:
        scenario, text, image_bytes, filename = _read_submission()
        if scenario not in SCENARIOS:
            raise AnalysisInputError(f"'scenario' must be one of {', '.join(SCENARIOS)}.")
        image = validate_upload(image_bytes, filename) if image_bytes is not None else None
        analysis = create_analysis(g.api_user, scenario, text, image)
    except UploadRejected as exc:
        audit.record(audit.UPLOAD_REJECTED, actor=g.api_user, details={"reason": str(exc), "via": "api"})
        db.session.commit()
        return api_error(400, str(exc))
    except AnalysisInputError as exc:
        return api_error(400, str(exc))
    except ModelUnavailable as exc:
        db.session.rollback()
        current_app.logger.warning("api analysis refused: %s model %s", exc.kind, exc.state.value)
        return api_error(
            503, str(exc), retry_after=exc.retry_after, model=exc.kind, state=exc.state.value, reason=exc.reason
        )
    db.session.commit()
    return jsonify(_analysis_json(analysis)), 201


@bp.route("/analyses")
def analyses():
    filters = HistoryFilters.from_args(request.args)
    page = db.paginate(select_history(filters, owner=g.api_user), max_per_page=100, error_out=False)
    return jsonify(
        {
            "items": [_analysis_json(item) for item in page.items],
            "page": page.page,
            "per_page": page.per_page,
            "pages": page.pages,
            "total": page.total,
        }
    )


@bp.route("/analyses/<int:analysis_id>")
def analysis(analysis_id: int):
    # The caller's own records only, admins included: the API is not an audit tool.
    found = db.session.scalar(select(Analysis).where(Analysis.id == analysis_id, Analysis.user_id == g.api_user.id))
    if found is None:
        return api_error(404, "No such analysis.")
    return jsonify(_analysis_json(found))
