from __future__ import annotations

import hashlib

from flask import Blueprint, abort, current_app, flash, make_response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from itsdangerous import Signer
from sqlalchemy import func, select

from .. import audit
from ..auth import fresh_login_required
from ..auth.passwords import temporary_password
from ..dashboards import admin_charts
from ..extensions import db, login_manager
from ..forms import EmptyForm
from ..health import system_health
from ..history.views import export_response, render_history_list, viewer_filters
from ..i18n import ROLE_NAMES
from ..localtime import parse_day_range, viewer_zone, viewer_zone_name, within_days
from ..models import Analysis, AuditEvent, Prediction, User
from ..scenarios import SCENARIO_PAGES
from .forms import RoleForm

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def require_admin():
    """The single guard for every admin route, so no route can forget it."""
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not current_user.is_admin:
        abort(403)
    return None


@bp.route("/")
def index():
    by_scenario = dict(db.session.execute(select(Analysis.scenario, func.count()).group_by(Analysis.scenario)).all())
    by_sentiment = dict(  # the values that count: a human correction wins
        db.session.execute(
            select(Prediction.final_label, func.count())
            .where(Prediction.kind == "sentiment", Prediction.final_label.is_not(None))
            .group_by(Prediction.final_label)
        ).all()
    )
    recent = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(10)).all()
    return render_template(
        "admin/index.html",
        user_count=db.session.scalar(select(func.count(User.id))),
        analysis_count=db.session.scalar(select(func.count(Analysis.id))),
        by_scenario=by_scenario,
        by_sentiment=by_sentiment,
        recent=recent,
        user_names=_user_names(recent),
        scenario_pages=SCENARIO_PAGES,
        health=system_health(),
        charts=admin_charts(tz=viewer_zone_name()),
    )


@bp.route("/users")
def users():
    page = db.paginate(select(User).order_by(User.username), per_page=50, error_out=False)
    counts = dict(
        db.session.execute(
            select(Analysis.user_id, func.count())
            .where(Analysis.user_id.in_([user.id for user in page.items]))
            .group_by(Analysis.user_id)
        ).all()
    )
    forms = {user.id: RoleForm(formdata=None, role=user.role, prefix=f"u{user.id}") for user in page.items}
    return render_template(
        "admin/users.html",
        page=page,
        counts=counts,
        forms=forms,
        access_form=EmptyForm(),
        reset_stamps={user.id: _reset_stamp(user) for user in page.items},
    )


@bp.route("/users/<int:user_id>/role", methods=["POST"])
@fresh_login_required
def set_role(user_id: int):
    user = db.get_or_404(User, user_id)
    form = RoleForm(prefix=f"u{user.id}")
    if not form.validate_on_submit():
        flash(_("Choose one of the listed roles."), "error")
    elif user.id == current_user.id:
        flash(_("You cannot change your own role; ask another admin."), "error")
    elif form.role.data != user.role:
        previous = user.role
        user.role = form.role.data
        audit.record(
            audit.ROLE_CHANGED, target=user, details={"from": previous, "to": user.role, "username": user.username}
        )
        db.session.commit()
        flash(_("%(username)s is now %(role)s.", username=user.username, role=ROLE_NAMES[user.role]), "success")
    return redirect(url_for("admin.users", page=request.args.get("page", type=int)))


@bp.route("/users/<int:user_id>/access", methods=["POST"])
@fresh_login_required
def set_access(user_id: int):
    """Disable an account (it signs out everywhere: sessions, remember cookies, API tokens) or enable
    it again. Its records stay; only an admin other than the account's owner can do this."""
    user = db.get_or_404(User, user_id)
    if not EmptyForm().validate_on_submit():
        flash(_("The form expired. Try again."), "error")
    elif user.id == current_user.id:
        flash(_("You cannot disable your own account; ask another admin."), "error")
    else:
        user.active = not user.active
        revoked = 0 if user.active else user.sign_out_everywhere()
        audit.record(
            audit.ACCESS_CHANGED,
            target=user,
            details={"username": user.username, "active": user.active, "tokens_revoked": revoked},
        )
        db.session.commit()
        message = _("%(username)s is enabled.", username=user.username)
        if not user.active:
            message = _("%(username)s is disabled and signed out everywhere.", username=user.username)
        flash(message, "success")
    return redirect(url_for("admin.users", page=request.args.get("page", type=int)))


@bp.route("/users/<int:user_id>/password-reset", methods=["POST"])
@fresh_login_required
def reset_password(user_id: int):
    """Give an account a temporary password (its owner forgot theirs; Prism sends no email): it signs
    out everywhere, and at sign-in the owner must choose a new password. The temporary password is
    in this response only (no-store), never in the session cookie, a flash or the audit log.

    The form carries a stamp of the account's password hash (``_reset_stamp``): a reload of this
    page re-posts a stamp the reset made stale, so it neither resets again nor shows a password."""
    user = db.get_or_404(User, user_id)
    back = redirect(url_for("admin.users", page=request.args.get("page", type=int)))
    if not EmptyForm().validate_on_submit():
        flash(_("The form expired. Try again."), "error")
        return back
    if user.id == current_user.id:
        flash(_("You cannot reset your own password here; change it on your account page."), "error")
        return back
    if not _reset_signer().verify_signature(_reset_stamped(user), request.args.get("stamp", "")):
        flash(
            _(
                "%(username)s's password changed since this list was shown (or the page was reloaded): "
                "nothing was reset.",
                username=user.username,
            ),
            "error",
        )
        return back
    password = temporary_password(user.username)
    user.set_password(password, current_app.config["PRISM_PASSWORD_HASH_METHOD"])
    user.must_change_password = True
    revoked = user.sign_out_everywhere()
    audit.record(audit.PASSWORD_RESET, target=user, details={"username": user.username, "tokens_revoked": revoked})
    db.session.commit()
    response = make_response(
        render_template("admin/password_reset.html", user=user, password=password, revoked=revoked)
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _reset_stamp(user: User) -> str:
    """A keyed digest of the account's password hash: it changes with every new password, reveals
    nothing about the hash, and cannot be made without the app's secret key."""
    return _reset_signer().get_signature(_reset_stamped(user)).decode()


def _reset_signer() -> Signer:
    # itsdangerous, as auth/devices.py signs: a salt of its own derives a key for this use only.
    return Signer(current_app.config["SECRET_KEY"], salt="prism-password-reset", digest_method=hashlib.sha256)


def _reset_stamped(user: User) -> str:
    return f"{user.id}:{user.password_hash}"


@bp.route("/analyses")
def analyses():
    return render_history_list("admin/analyses.html", owner=None, endpoint="admin.analyses")


@bp.route("/analyses/export.<any(csv, json):fmt>")
@fresh_login_required
def export(fmt: str):
    return export_response(
        viewer_filters(allow_owner=True), owner=None, fmt=fmt, basename="prism-all-history", endpoint="admin.analyses"
    )


@bp.route("/audit")
def audit_log():
    """The audit trail, newest first, narrowed by actor (a username, any case), action and a range
    of days in the viewer's time zone; a refused value is named on the page, not ignored."""
    args, errors = request.args, []
    action = args.get("action") or None
    if action is not None and action not in audit.ACTIONS:
        errors.append(_("“%(value)s” is not one of the actions listed.", value=action[:40]))
        action = None
    actor = (args.get("actor") or "").strip()[:64] or None
    date_from, date_to = parse_day_range(args, errors)
    statement = select(AuditEvent).order_by(AuditEvent.id.desc())
    if action:
        statement = statement.where(AuditEvent.action == action)
    if actor:
        statement = statement.where(func.lower(AuditEvent.actor_name) == actor.lower())
    statement = statement.where(*within_days(AuditEvent.created_at, date_from, date_to, viewer_zone()))
    page = db.paginate(statement, per_page=50, max_per_page=200, error_out=False)
    kept = {"action": action, "actor": actor, "from": date_from, "to": date_to}
    return render_template(
        "admin/audit.html",
        page=page,
        actions=audit.ACTIONS,
        filters=kept,
        extra_args={name: str(value) for name, value in kept.items() if value},
        errors=errors,
        user_names=_user_names(page.items),
    )


def _user_names(events: list[AuditEvent]) -> dict[str, str]:
    """The usernames of the accounts ``events`` target, by id (one query): "alice", not "User #2"."""
    ids = {int(event.target_id) for event in events if event.target_type == "User" and event.target_id.isdigit()}
    if not ids:
        return {}
    found = db.session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {str(user_id): username for user_id, username in found}
