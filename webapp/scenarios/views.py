"""The one scenario view: the form, then a pending record (or a batch) and a job per record."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..analyses import (
    AnalysisInputError,
    pending_ids,
    record_rejected_upload,
    submit_analysis,
    submit_batch,
    validate_upload,
)
from ..extensions import db
from ..jobs import enqueue_analyses
from ..kept_forms import KeptForm, keeps_form
from ..ratelimit import limit, user_key
from ..uploads import UploadRejected
from . import SCENARIO_PAGES, Scenario
from .forms import AnalysisForm

bp = Blueprint("scenarios", __name__)


@limit("PRISM_RATELIMIT_SUBMIT", lambda: user_key(current_user))  # a batch is one POST: it counts once
def scenario_page(scenario: str):
    page = SCENARIO_PAGES[scenario]
    if not page.may_submit(current_user):
        abort(403)
    form = _analysis_form(page)
    status = 200
    if form.validate_on_submit():
        files = form.files
        try:
            if len(files) > 1:
                batch = submit_batch(current_user, scenario, [(upload.read(), upload.filename) for upload in files])
                ids, target = pending_ids(batch), url_for("jobs.batch", batch_id=batch.id)
                message = _("%(count)d files queued; each becomes a record of this batch.", count=len(files))
            else:
                image = validate_upload(files[0].read(), files[0].filename) if files else None
                analysis = submit_analysis(current_user, scenario, form.text.data, image)
                ids, target = [analysis.id], url_for("history.detail", analysis_id=analysis.id)
                message = _("Saved to your history; the models are working on it.")
        except UploadRejected as exc:
            db.session.rollback()
            record_rejected_upload(exc, current_user, scenario=scenario)
            db.session.commit()
            form.image.errors.append(str(exc))
            status = 400
        except AnalysisInputError as exc:
            db.session.rollback()
            form.form_errors.append(str(exc))
            status = 400
        else:
            db.session.commit()
            enqueue_analyses(ids)
            flash(message, "success")
            return redirect(target)
    elif form.is_submitted():
        status = 400
    return render_template("scenarios/form.html", page=page, form=form), status


def _analysis_form(page: Scenario, **kwargs) -> AnalysisForm:
    form = AnalysisForm(**kwargs)
    form.image.label.text, form.text.label.text = page.image_label, page.text_label
    return form


@keeps_form(*(f"scenarios.{key}" for key in SCENARIO_PAGES))
def kept_scenario_page(kept: KeptForm, scenario: str):
    """The scenario form with what was typed, after a refusal that came before the view (kept_forms)."""
    page = SCENARIO_PAGES[scenario]
    if not page.may_submit(current_user):
        return None
    form = _analysis_form(page, formdata=kept.formdata)
    kept.show_on(form)
    return render_template("scenarios/form.html", page=page, form=form), kept.status


for _key in SCENARIO_PAGES:
    bp.add_url_rule(
        f"/{_key}/",
        endpoint=_key,
        view_func=login_required(scenario_page),
        methods=["GET", "POST"],
        defaults={"scenario": _key},
    )
