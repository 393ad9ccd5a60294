from __future__ import annotations

from flask import Blueprint, jsonify, render_template
from sqlalchemy import text

from .. import __version__
from ..extensions import db
from ..inference import ModelState, get_model_service
from ..scenarios import SCENARIO_PAGES
from ..storage import human_size

bp = Blueprint("main", __name__)


@bp.app_context_processor
def inject_model_statuses():
    """Model states for the banner on every page; reading them never starts a load."""
    statuses = get_model_service().statuses()
    return {
        "model_statuses": statuses,
        "models_attention": [
            s for s in statuses if s.state in (ModelState.DOWNLOADING, ModelState.LOADING, ModelState.FAILED)
        ],
        "app_version": __version__,
        "scenario_nav": SCENARIO_PAGES,
    }


bp.add_app_template_filter(human_size, "human_size")


@bp.route("/")
def index():
    return render_template("main/index.html", pages=SCENARIO_PAGES)


@bp.route("/healthz")
def healthz():
    """Database and model states as JSON; 503 when the database is down. Contains no secrets."""
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
        database = {"ok": True}
    except Exception as exc:  # report, don't raise: a health check must answer
        db.session.rollback()
        database = {"ok": False, "error": type(exc).__name__}
    models = [status.as_dict() for status in get_model_service().statuses()]
    body = {
        "status": "ok" if database["ok"] else "error",
        "version": __version__,
        "database": database,
        "models": models,
    }
    return jsonify(body), 200 if database["ok"] else 503
