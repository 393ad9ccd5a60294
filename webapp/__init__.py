"""Prism: a multimodal AI workbench (customer service, medical imaging, education).

``create_app`` only wires things together: config, extensions, blueprints, error handlers and CLI
commands. It creates no tables, loads no model and writes no file; ``manage.py init-db`` does those.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INSTANCE_PATH = PROJECT_ROOT / "instance"
__version__ = "1.0.0"


def create_app(test_config: dict[str, Any] | None = None, instance_path: str | None = None) -> Flask:
    """Build the app. ``instance_path`` (or PRISM_INSTANCE_PATH) defaults to ``<project>/instance``."""
    app = Flask(
        __name__,
        instance_path=str(instance_path or os.environ.get("PRISM_INSTANCE_PATH") or DEFAULT_INSTANCE_PATH),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    from . import config

    config.load(app, test_config)
    if proxies := app.config["PRISM_TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    register_extensions(app)
    from . import bounds

    bounds.install(app)  # before the blueprints: their <int:...> routes take the bounded converter
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    from . import database, inference, jobs, locks, ratelimit, storage
    from .auth import login_manager_setup
    from .extensions import babel, csrf, db, migrate
    from .i18n import select_locale

    db.init_app(app)
    database.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    login_manager_setup(app)
    inference.init_app(app)
    storage.init_app(app)
    locks.init_app(app)
    jobs.init_app(app)
    ratelimit.init_app(app)


def register_blueprints(app: Flask) -> None:
    from .admin.views import bp as admin_bp
    from .api.docs import bp as api_docs_bp
    from .api.views import bp as api_bp
    from .auth.views import bp as auth_bp
    from .education.views import bp as education_bp
    from .history.explanations import bp as explanations_bp
    from .history.views import bp as history_bp
    from .jobs.views import bp as jobs_bp
    from .main.views import bp as main_bp
    from .medical.views import bp as medical_bp
    from .reviews.views import bp as reviews_bp
    from .scenarios.views import bp as scenarios_bp
    from .service_desk.views import bp as service_desk_bp

    app.register_blueprint(main_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(scenarios_bp)
    app.register_blueprint(service_desk_bp)
    app.register_blueprint(medical_bp)
    app.register_blueprint(history_bp)
    app.register_blueprint(explanations_bp)
    app.register_blueprint(reviews_bp)
    app.register_blueprint(education_bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(api_docs_bp)


def register_errorhandlers(app: Flask) -> None:
    from .errors import register
    from .security import add_security_headers

    register(app)
    app.after_request(add_security_headers)


def register_commands(app: Flask) -> None:
    from .commands import register

    register(app)
