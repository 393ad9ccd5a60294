"""Service-desk pages: the triage list, closing and reopening a conversation, and the admins'
category and reply-template editor."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from .. import audit
from ..access import owned_or_404
from ..analyses import LISTING_LOAD, confidence_policy
from ..extensions import db
from ..forms import EmptyForm
from ..models import Analysis, utcnow
from ..models.service_desk import REPLY_LANGUAGES, InquiryCategory, ReplyTemplate
from ..scenarios import SCENARIO_PAGES
from . import category_names, select_triage
from .forms import CategoryForm, NewCategoryForm

bp = Blueprint("service_desk", __name__, url_prefix="/service-desk")


@bp.app_context_processor
def inject_category_helpers():
    """``category_name(key)`` and ``active_categories()`` for pages showing category predictions;
    both read the database only when a page calls them, once per request."""

    def names() -> dict[str, str]:
        if "category_names" not in g:
            g.category_names = category_names()
        return g.category_names

    def active_categories() -> list[tuple[str, str]]:
        return [(category.key, category.name) for category in InquiryCategory.active_in_order()]

    return {"category_name": lambda key: names().get(key, key), "active_categories": active_categories}


@bp.before_request
@login_required
def require_service_desk() -> None:
    if not SCENARIO_PAGES["service"].may_submit(current_user):
        abort(403)


@bp.route("/")
def triage():
    statement = select_triage(current_user).options(*LISTING_LOAD)  # each row's predictions and owner
    page = db.paginate(statement, per_page=None, max_per_page=100, error_out=False)
    return render_template(
        "service_desk/triage.html",
        page=page,
        policy=confidence_policy(),
        form=EmptyForm(),
    )


@bp.route("/conversations/<int:analysis_id>/close", methods=["POST"])
def close(analysis_id: int):
    analysis = owned_or_404(Analysis, analysis_id, scenario="service")
    if EmptyForm().validate_on_submit() and analysis.closed_at is None:
        analysis.closed_at, analysis.closed_by = utcnow(), current_user.username
        audit.record(audit.CONVERSATION_CLOSED, target=analysis)
        db.session.commit()
        flash(_("Conversation #%(id)d closed.", id=analysis_id), "success")
    if request.form.get("next") == "record":
        return redirect(url_for("history.detail", analysis_id=analysis_id))
    return redirect(url_for("service_desk.triage"))


@bp.route("/conversations/<int:analysis_id>/reopen", methods=["POST"])
def reopen(analysis_id: int):
    analysis = owned_or_404(Analysis, analysis_id, scenario="service")
    if EmptyForm().validate_on_submit() and analysis.closed_at is not None:
        analysis.closed_at, analysis.closed_by = None, None
        audit.record(audit.CONVERSATION_REOPENED, target=analysis)
        db.session.commit()
        flash(_("Conversation #%(id)d reopened.", id=analysis_id), "success")
    return redirect(url_for("history.detail", analysis_id=analysis_id))


# --- admins: categories and reply templates --------------------------------------------------------


def _require_admin() -> None:
    if not current_user.is_admin:
        abort(403)


def _save(category: InquiryCategory, form: CategoryForm) -> None:
    """The form's fields onto the category and its per-language templates (an emptied one is removed)."""
    category.name, category.description = form.name.data.strip(), form.description.data.strip()
    category.position, category.active = form.position.data or 0, form.active.data
    for language in REPLY_LANGUAGES:
        body = (getattr(form, f"template_{language}").data or "").strip()
        template = next((t for t in category.templates if t.language == language), None)
        if not body:
            if template is not None:
                category.templates.remove(template)
            continue
        if template is None:
            template = ReplyTemplate(language=language, body=body)
            category.templates.append(template)
        if template.id is None or template.body != body:
            template.body, template.updated_at, template.updated_by = body, utcnow(), current_user.username


@bp.route("/categories", methods=["GET", "POST"])
def categories():
    _require_admin()
    new = NewCategoryForm()
    if new.validate_on_submit():
        if db.session.scalar(select(InquiryCategory).where(InquiryCategory.key == new.key.data)) is not None:
            new.key.errors.append(_("That key is taken."))
        else:
            category = InquiryCategory(key=new.key.data)
            _save(category, new)
            db.session.add(category)
            db.session.flush()
            audit.record(audit.CATEGORY_CHANGED, details={"key": category.key, "change": "created"})
            db.session.commit()
            flash(_("Category “%(name)s” added.", name=category.name), "success")
            return redirect(url_for("service_desk.categories"))
    rows = db.session.scalars(select(InquiryCategory).order_by(InquiryCategory.position, InquiryCategory.id)).all()
    return render_template("service_desk/categories.html", categories=rows, new=new)


@bp.route("/categories/<int:category_id>", methods=["GET", "POST"])
def edit_category(category_id: int):
    _require_admin()
    category = db.get_or_404(InquiryCategory, category_id)
    form = CategoryForm(obj=category)
    if request.method == "GET":
        for language in REPLY_LANGUAGES:
            template = next((t for t in category.templates if t.language == language), None)
            getattr(form, f"template_{language}").data = template.body if template else ""
    if form.validate_on_submit():
        _save(category, form)
        audit.record(audit.CATEGORY_CHANGED, details={"key": category.key, "change": "edited"})
        db.session.commit()
        flash(_("Category “%(name)s” saved.", name=category.name), "success")
        return redirect(url_for("service_desk.categories"))
    return render_template("service_desk/category.html", category=category, form=form)
