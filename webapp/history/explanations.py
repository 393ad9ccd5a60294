"""The record's "Explain" button and the caption heatmap images its explanation panel shows.

Who: the record's owner, or an admin (whose reads are audited as any other read of the record);
anyone else gets 404, as for the record itself.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import login_required

from .. import access, explaining
from ..forms import EmptyForm
from ..inference.explanations import overlay_png  # PIL only (torch is imported inside its other functions)
from ..models import Analysis
from ..security import is_safe_redirect
from ..storage import ObjectMissing, get_storage
from ..uploads import decode_rgb, image_key

bp = Blueprint("explanations", __name__, url_prefix="/history")
# A stored explanation never changes (a prediction is written once) and the image is content-addressed:
# the browser may keep a heatmap for a day without asking again.
OVERLAY_MAX_AGE = 86400


@bp.before_request
@login_required
def require_login() -> None:
    """Every route here needs a signed-in user."""


def explanation_view(analysis: Analysis) -> dict[str, Any]:
    """What ``partials/_explanation.html`` shows for ``analysis``: the state, and when stored, the
    caption's words and the sentiment text cut into highlighted pieces."""
    state = explaining.explanation_state(analysis)
    view: dict[str, Any] = {"state": state, "form": EmptyForm()}
    prediction = analysis.prediction(explaining.KIND)
    if prediction is None:
        return view
    view["prediction"] = prediction
    view["caption"] = prediction.caption
    if sentiment := prediction.sentiment:
        view["sentiment"] = sentiment
        view["segments"] = explaining.text_segments(sentiment)
        view["toward"] = explaining.strongest(sentiment, 1)
        view["away"] = explaining.strongest(sentiment, -1)
    return view


@bp.route("/<int:analysis_id>/explain", methods=["POST"])
def request_explanation(analysis_id: int):
    """Queue the record's explanation, then back to the page it was asked from."""
    analysis = access.visible_or_404(Analysis, analysis_id, part="explanation")
    if EmptyForm().validate_on_submit():
        state = explaining.request_explanation(analysis)
        if state == explaining.COMPUTING:
            flash(_("The explanation is being computed; this page updates when it is ready."), "info")
        elif state == explaining.NOTHING:
            flash(_("This record has no caption and no sentiment to explain."), "error")
    target = request.form.get("next")
    if target and is_safe_redirect(target):
        return redirect(target)
    return redirect(url_for("history.detail", analysis_id=analysis_id, _anchor="explanation"))


@bp.route("/<int:analysis_id>/explanation/overlay.png")
def overlay(analysis_id: int):
    """The image with the caption's heatmap over it: the whole caption's, or ``?word=N``'s."""
    analysis = access.visible_or_404(Analysis, analysis_id, part="explanation", within_page=True)
    prediction = analysis.prediction(explaining.KIND)
    caption = prediction.caption if prediction is not None else None
    if caption is None or analysis.image_sha256 is None:
        abort(404)
    word = request.args.get("word", type=int)
    if word is None:
        values = caption["overall"]
    elif 0 <= word < len(caption["per_word"]):
        values = caption["per_word"][word]
    else:
        abort(404)
    response = Response(mimetype="image/png")
    response.set_etag(f"explanation-{prediction.id}-{'all' if word is None else word}")
    response.headers["Cache-Control"] = f"private, max-age={OVERLAY_MAX_AGE}"
    if request.if_none_match.contains(response.get_etag()[0]):
        response.status_code = 304
        return response
    try:
        data = get_storage().get(image_key(analysis.image_sha256, analysis.image_format))
    except ObjectMissing:
        abort(404)
    config = current_app.config
    image = decode_rgb(
        data,
        analysis.image_format,
        max_side=config["PRISM_MODEL_IMAGE_MAX_SIDE"],
        concurrent=config["PRISM_MAX_CONCURRENT_DECODES"],
    )
    response.set_data(overlay_png(image, values, tuple(caption["grid"])))
    return response
