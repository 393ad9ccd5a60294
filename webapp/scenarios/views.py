from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from .. import audit
from ..analyses import AnalysisInputError, create_analysis, validate_upload
from ..extensions import db
from ..i18n import DEFAULT_LOCALE, MODEL_NAMES, STATE_NAMES, current_locale, in_english
from ..inference import ModelUnavailable
from ..storage import UploadRejected
from . import SCENARIO_PAGES
from .forms import AnalysisForm

bp = Blueprint("scenarios", __name__)


def model_unavailable_message(exc: ModelUnavailable) -> str:
    """What to tell the user when a model cannot answer.

    The model service speaks English only (it knows nothing of Flask). Its message is shown as is in
    English; other languages get a sentence chosen by ``exc.reason``, plus the English message where
    it carries a diagnosis worth reporting (why a load failed, what the model raised).
    """
    if current_locale() == DEFAULT_LOCALE:
        return str(exc)
    model = MODEL_NAMES.get(exc.kind, exc.kind)
    if exc.reason == "busy":
        return _(
            "Prism is busy: the %(model)s has more requests than it can take right now. "
            "Please try again in a few seconds.",
            model=model,
        )
    if exc.reason == "failed":
        return _("The %(model)s could not be loaded (details: %(detail)s).", model=model, detail=str(exc))
    if exc.reason == "error":
        return _("The %(model)s failed on this input (details: %(detail)s).", model=model, detail=str(exc))
    state = STATE_NAMES.get(exc.state.value, exc.state.value)  # "not_ready": loading or downloading
    return _("The %(model)s is not ready yet (%(state)s). Try again shortly.", model=model, state=state)


def scenario_page(scenario: str):
    page = SCENARIO_PAGES[scenario]
    form = AnalysisForm()
    form.image.label.text, form.text.label.text = page.image_label, page.text_label
    status, headers = 200, {}
    if form.validate_on_submit():
        upload = form.image.data
        try:
            image = validate_upload(upload.read(), upload.filename) if upload else None
            analysis = create_analysis(current_user, scenario, form.text.data, image)
        except UploadRejected as exc:
            audit.record(audit.UPLOAD_REJECTED, details={"reason": in_english(exc), "scenario": scenario})
            db.session.commit()
            form.image.errors.append(str(exc))
            status = 400
        except AnalysisInputError as exc:
            form.form_errors.append(str(exc))
            status = 400
        except ModelUnavailable as exc:
            db.session.rollback()
            current_app.logger.warning("analysis refused: %s model %s", exc.kind, exc.state.value)
            form.form_errors.append(
                _(
                    "%(problem)s Your text is kept below; please choose the image again.",
                    problem=model_unavailable_message(exc),
                )
            )
            status, headers = 503, {"Retry-After": str(exc.retry_after)}
        else:
            db.session.commit()
            flash(_("Analysis saved to your history."), "success")
            return redirect(url_for("history.detail", analysis_id=analysis.id))
    elif form.is_submitted():
        status = 400
    response = render_template("scenarios/form.html", page=page, form=form, pages=SCENARIO_PAGES)
    return response, status, headers


for _key in SCENARIO_PAGES:
    bp.add_url_rule(
        f"/{_key}/",
        endpoint=_key,
        view_func=login_required(scenario_page),
        methods=["GET", "POST"],
        defaults={"scenario": _key},
    )
