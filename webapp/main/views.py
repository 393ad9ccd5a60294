from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from .. import __version__
from ..dashboards import user_charts
from ..extensions import db
from ..health import system_health
from ..i18n import LANGUAGES, LOCALES, NAMES, SESSION_KEY, current_locale, html_lang, job_error
from ..inference import ModelState, get_model_service
from ..localtime import localtime, viewer_zone_name, zone_label
from ..models import Analysis
from ..scenarios import SCENARIO_PAGES, scenarios_for
from ..security import is_safe_redirect
from ..uploads import accepted_mime_types, human_size

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
        "scenario_nav": scenarios_for(current_user),
        "locale": current_locale(),
        "html_lang": html_lang(),
        "languages": LANGUAGES,
        "names": NAMES,
        "job_error": job_error,
        "zone_label": zone_label(),
    }


bp.add_app_template_filter(human_size, "human_size")
bp.add_app_template_global(accepted_mime_types)
bp.add_app_template_filter(localtime, "localtime")


@bp.route("/")
def index():
    pages = scenarios_for(current_user) if current_user.is_authenticated else SCENARIO_PAGES
    return render_template("main/index.html", pages=pages)


@bp.route("/dashboard")
@login_required
def dashboard():
    """The signed-in user's own records as charts: only their numbers, whatever their role (an
    admin's view of everyone is the admin overview)."""
    has_records = db.session.scalar(select(Analysis.id).where(Analysis.user_id == current_user.id).limit(1))
    return render_template(
        "main/dashboard.html",
        charts=user_charts(current_user.id, tz=viewer_zone_name()) if has_records else [],
        pages=scenarios_for(current_user),
    )


@bp.route(f"/lang/<any({', '.join(LOCALES)}):code>")
def set_language(code: str):
    """Remember the interface language in the session (and on the signed-in user's account, for
    their next sign-in) and go back to ``next`` (same-site paths only).

    A GET link on purpose, with no CSRF token: it changes only a display preference, so a forged
    request can do no more than switch someone's language, and the switcher works without a form.
    """
    session[SESSION_KEY] = code
    if current_user.is_authenticated and current_user.language != code:
        current_user.language = code
        db.session.commit()
    next_url = request.args.get("next")
    return redirect(next_url if is_safe_redirect(next_url) else url_for("main.index"))


@bp.route("/healthz")
def healthz():
    """Database, queue, object store and live workers as JSON (``webapp.health``); 503 when the
    database is down. Anyone may read it: it contains no secrets, URLs, paths or exception text."""
    body = {"version": __version__, **system_health()}
    if current_app.config["PRISM_ROLE"] != "web":
        # Models in *this* process; workers report theirs in ``workers``. A web process has none.
        body["models"] = [status.public_dict() for status in get_model_service().statuses()]
        if body["status"] == "ok" and any(model["state"] == "failed" for model in body["models"]):
            body["status"] = "degraded"  # pages work; analyses that need the model wait or fail
    return jsonify(body), 503 if body["status"] == "error" else 200
