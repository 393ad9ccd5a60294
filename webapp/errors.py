"""Error pages and JSON errors. Nothing here shows a traceback; 500s roll the session back.

Messages are translated for pages; JSON errors are English (the locale selector forces English there).
"""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from . import audit
from .extensions import db
from .kept_forms import kept_form_response, salvage_oversized
from .uploads import human_size


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def api_error(status: int, message: str, *, retry_after: int | None = None, **extra):
    response = jsonify({"error": {"status": status, "message": message, **extra}})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="prism"'
    return response


_MESSAGES = {
    400: _l("The request could not be understood."),
    401: _l("Please sign in."),
    403: _l("You do not have access to this page."),
    404: _l("There is nothing here, or it is not yours to see."),
    405: _l("That method is not allowed here."),
    413: _l("The upload is too large."),
    429: _l("Too many requests; slow down and try again."),
    500: _l("Something went wrong on our side. Nothing you submitted was saved half-way."),
    503: _l("Prism is busy or a model is not ready. Please try again shortly."),
}


def error_response(status: int, message: str | None = None, retry_after: int | None = None):
    """The error page, or the JSON error under /api/, with ``message`` (default: the status's own)."""
    message = str(message or _MESSAGES.get(status, _l("Error")))
    if wants_json():
        return api_error(status, message, retry_after=retry_after)
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return render_template("errors/error.html", status=status, message=message), status, headers


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        db.session.rollback()
        audit.record_failure(audit.CSRF_FAILED, {"path": request.path[:200], "reason": error.description})
        db.session.commit()
        if not wants_json():
            message = _("Your session expired, so nothing was sent. Check what you typed and submit again.")
            if request.files:
                message += " " + _("Files cannot be kept: choose them again.")
            if (kept := kept_form_response(400, message)) is not None:
                return kept
        return error_response(400, _("The form expired or was sent from elsewhere. Reload the page and try again."))

    @app.errorhandler(413)
    def too_large(error):
        limit = human_size(app.config["MAX_CONTENT_LENGTH"])
        message = _("The upload is larger than the %(limit)s limit.", limit=limit)
        if not wants_json() and (salvaged := salvage_oversized()) is not None:
            formdata, file_sizes = salvaged
            max_image = app.config["PRISM_MAX_IMAGE_BYTES"]
            if any(size > max_image for size in file_sizes):
                message = _("The image is larger than %(size)s.", size=human_size(max_image))
            if (kept := kept_form_response(413, message, field="image", formdata=formdata)) is not None:
                return kept
        return error_response(413, message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        # abort(429, retry_after=seconds) (the rate limits) keeps its Retry-After header.
        retry_after = getattr(error, "retry_after", None)
        return error_response(error.code or 500, _MESSAGES.get(error.code or 500, error.description), retry_after)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        db.session.rollback()
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500)
