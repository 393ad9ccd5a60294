from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wsgi import wrap_file

from .. import access, audit
from ..analyses import (
    DEFAULT_SORT,
    AnalysisInputError,
    HistoryFilters,
    confidence_policy,
    delete_analysis,
    history_neighbours,
    paginate_history,
    retry_analysis,
    select_history,
)
from ..auth import fresh_login_required
from ..dicom import CT_PRESETS, preview_png, read_stored
from ..exports import iter_csv, iter_json
from ..extensions import db
from ..forms import EmptyForm
from ..jobs import enqueue_analyses
from ..localtime import viewer_zone_name
from ..models import SCENARIOS, Analysis
from ..reviews import may_review
from ..reviews.forms import ReviewForm
from ..scenarios import SCENARIO_PAGES
from ..storage import ObjectMissing, get_storage
from ..uploads import MIME_TYPES, image_key
from .explanations import explanation_view

bp = Blueprint("history", __name__, url_prefix="/history")


@bp.before_request
@login_required
def require_login() -> None:
    """Every history route needs a signed-in user."""


def visible_or_404(analysis_id: int, *, part: str, within_page: bool = False) -> Analysis:
    """The record if the signed-in user may read it (``access.visible_or_404``; admins' reads audited
    once per page: ``within_page`` for the requests a record or listing page makes)."""
    return access.visible_or_404(Analysis, analysis_id, part=part, within_page=within_page)


def viewer_filters(*, allow_owner: bool = False) -> HistoryFilters:
    """The request's history filters, with dates read as days in the viewer's time zone."""
    return HistoryFilters.from_args(request.args, allow_owner=allow_owner, zone=viewer_zone_name())


def render_history_list(template: str, *, owner, endpoint: str) -> str:
    """A filtered, sorted, paginated listing: ``owner``'s records, or everyone's when ``owner`` is
    None (admin). Refused filter values are named on the page (``filters.errors``), not dropped
    silently. An admin's page that shows other users' records is audited once, naming them; its
    thumbnails then write nothing more (``access.note_audited``)."""
    filters = viewer_filters(allow_owner=owner is None)
    page = paginate_history(filters, owner=owner, per_page=current_app.config["PRISM_PAGE_SIZE"])
    body = render_template(
        template,
        page=page,
        filters=filters,
        scenarios=SCENARIOS,
        scenario_pages=SCENARIO_PAGES,
        policy=confidence_policy(),
        endpoint=endpoint,
        default_sort=DEFAULT_SORT,
    )
    # Audited after rendering: committing first would expire the page's rows and reload each one.
    if others := [a for a in page.items if a.user_id != current_user.id]:
        ids = [a.id for a in others]
        audit.record(
            audit.HISTORY_LISTED_BY_ADMIN,
            details={
                "page": page.page,
                **({"filters": filters.as_args()} if filters.as_args() else {}),
                "ids": ids,
                "owners": sorted({a.user.username for a in others}),
            },
        )
        db.session.commit()
        access.note_audited(Analysis, ids)
    return body


@bp.route("/")
def index():
    return render_history_list("history/index.html", owner=current_user, endpoint="history.index")


@bp.route("/<int:analysis_id>")
def detail(analysis_id: int):
    """The record page; the listing's filters and order come along in the query string, so the
    page's previous / next follow the list the reader came from."""
    analysis = visible_or_404(analysis_id, part="record")
    filters = viewer_filters(allow_owner=current_user.is_admin)
    # Within the reader's own history; an admin reading someone else's record walks everyone's.
    owner = current_user if analysis.user_id == current_user.id else None
    previous, following = history_neighbours(analysis, filters, owner=owner)
    return render_record(analysis, neighbours={"previous": previous, "next": following, "args": filters.as_args()})


def render_record(analysis: Analysis, **extra: Any) -> str:
    """The record page of ``analysis`` (already checked as visible); ``extra`` reaches the template,
    e.g. a form's refused input to show again with its error."""
    queue = request.args.get("queue")
    return render_template(
        "history/detail.html",
        analysis=analysis,
        scenario_pages=SCENARIO_PAGES,
        delete_form=EmptyForm(),
        retry_form=EmptyForm(),
        review_form=ReviewForm(),
        can_review=may_review(current_user, analysis) and analysis.signed_off_at is None,
        queue=queue if queue in SCENARIO_PAGES else None,
        policy=confidence_policy(),
        view=_dicom_view(analysis),
        ct_presets=CT_PRESETS,
        explanation=explanation_view(analysis),
        **extra,
    )


def _dicom_window(analysis: Analysis) -> tuple[int, float, float]:
    """The frame and window asked for (``?frame=&center=&width=``, or a CT ``?preset=``), each falling
    back to the file's own and clamped to what exists: a bad value never fails a page or a preview."""
    meta = analysis.image_meta
    frame = min(max(request.args.get("frame", 0, type=int), 0), meta["frames"] - 1)
    center, width = CT_PRESETS.get(request.args.get("preset", "")) or (
        request.args.get("center", meta["window_center"], type=float),
        request.args.get("width", meta["window_width"], type=float),
    )
    return frame, center, width if width >= 1 else max(meta["window_width"], 1.0)


def _dicom_view(analysis: Analysis) -> dict | None:
    """The frame and window the record page shows a DICOM image in, and the preview URL for them;
    None for other images."""
    if analysis.image_format != "DICOM" or not analysis.image_meta:
        return None
    frame, center, width = _dicom_window(analysis)
    url = url_for("history.image", analysis_id=analysis.id, frame=frame, center=center, width=width)
    return {"frame": frame, "center": center, "width": width, "url": url}


@bp.route("/<int:analysis_id>/status")
def status(analysis_id: int):
    """The job's state, for the record page's script (it reloads the page when this changes)."""
    return jsonify(visible_or_404(analysis_id, part="status", within_page=True).status_dict())


@bp.route("/<int:analysis_id>/retry", methods=["POST"])
def retry(analysis_id: int):
    analysis = access.owned_or_404(Analysis, analysis_id)
    if EmptyForm().validate_on_submit():
        try:
            retry_analysis(analysis)
        except AnalysisInputError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            db.session.commit()
            enqueue_analyses([analysis_id])
            flash(_("The analysis is queued again."), "info")
    return redirect(url_for("history.detail", analysis_id=analysis_id))


@bp.route("/<int:analysis_id>/image")
def image(analysis_id: int):
    """The uploaded image, streamed from storage: a large object is never held whole in memory."""
    analysis = visible_or_404(analysis_id, part="image", within_page=True)
    if analysis.image_sha256 is None:
        abort(404)
    if analysis.image_format == "DICOM" and request.args.get("original") != "1":
        return _dicom_preview(analysis)
    try:
        stream = get_storage().open(image_key(analysis.image_sha256, analysis.image_format))
    except ObjectMissing:
        abort(404)
    # wrap_file closes the stream when the server closes the response (sent, or the client went away).
    response = Response(
        wrap_file(request.environ, stream), mimetype=MIME_TYPES[analysis.image_format], direct_passthrough=True
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _dicom_preview(analysis: Analysis) -> Response:
    """A PNG of one frame of the stored (de-identified) DICOM file, in the window the page asks for."""
    try:
        data = get_storage().get(image_key(analysis.image_sha256, analysis.image_format))
    except ObjectMissing:
        abort(404)
    frame, center, width = _dicom_window(analysis)
    response = Response(preview_png(read_stored(data), frame, center, width), mimetype="image/png")
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/<int:analysis_id>/delete", methods=["POST"])
def delete(analysis_id: int):
    # Only the owner deletes: admins audit records, they do not remove them.
    analysis = access.owned_or_404(Analysis, analysis_id)
    if EmptyForm().validate_on_submit():
        delete_analysis(analysis)  # commits, then removes the image
        flash(_("The record and its image were deleted."), "info")
    return redirect(url_for("history.index"))


def export_response(filters: HistoryFilters, *, owner, fmt: str, basename: str, endpoint: str) -> Response:
    """Stream the filtered records as CSV or JSON, after auditing the export. Refused filters send
    the reader back to the listing (``endpoint``), which names them, rather than export something else."""
    if filters.errors:
        return redirect(url_for(endpoint, **request.args))
    audit.record(audit.HISTORY_EXPORTED, details={"format": fmt, "filters": filters.as_args(), "scope": basename})
    db.session.commit()
    statement = select_history(filters, owner=owner)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    if fmt == "csv":
        body, mimetype = iter_csv(statement, confidence_policy()), "text/csv; charset=utf-8"
    else:
        body, mimetype = iter_json(statement, confidence_policy()), "application/json"
    response = Response(stream_with_context(body), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{basename}-{stamp}.{fmt}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/export.<any(csv, json):fmt>")
@fresh_login_required
def export(fmt: str):
    return export_response(
        viewer_filters(), owner=current_user, fmt=fmt, basename="prism-history", endpoint="history.index"
    )
