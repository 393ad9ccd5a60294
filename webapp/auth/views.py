from __future__ import annotations

import time

import pyotp
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_fresh, login_required, login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from .. import audit
from ..extensions import db
from ..forms import EmptyForm
from ..i18n import SESSION_KEY, chosen_locale, clear_session_keeping_locale, restore_locale
from ..localtime import is_zone
from ..models import ApiToken, User, utcnow
from ..ratelimit import EXTENSION_KEY as RATELIMIT_KEY
from ..ratelimit import client_ip, client_ip_and_username, limit
from ..security import is_safe_redirect
from . import devices, fresh_login_required, new_password_redirect
from .forms import BrowserZoneForm, CodeForm, LoginForm, PasswordChangeForm, PreferencesForm, RegisterForm, TokenForm

bp = Blueprint("auth", __name__)
PENDING_KEY = "_two_step_pending"  # the account whose password was right, waiting for its code
PENDING_SECONDS = 300
# The browser sent a zone this server does not know: timezone.js is not loaded again this session.
BROWSER_ZONE_REFUSED = "_browser_zone_refused"
SETUP_KEY = "_two_step_setup"  # the secret shown while two-step sign-in is being set up

_dummy_hashes: dict[str, str] = {}


def _spend_hash_time(password: str) -> None:
    """Verify against a dummy hash so an unknown username costs as much as a wrong password (ASVS 6.3.8)."""
    method = current_app.config["PRISM_PASSWORD_HASH_METHOD"]
    if method not in _dummy_hashes:
        _dummy_hashes[method] = generate_password_hash("prism-dummy-password", method=method)
    check_password_hash(_dummy_hashes[method], password)


def _start_session(user: User, remember: bool) -> None:
    clear_session_keeping_locale()  # a fresh session on login: only the language choice survives it
    restore_locale(user)  # the language the account chose last wins over this browser's
    login_user(user, remember=remember)


def _signed_in(user: User, *, remember: bool, next_url: str, **details):
    """The end of a successful sign-in (password, or password then code): audited, a fresh session,
    this browser remembered as one the account uses (``devices``), and on to ``next_url``."""
    audit.record(audit.LOGIN, actor=user, target=user, details=details or None)
    db.session.commit()
    _start_session(user, remember=remember)
    response = new_password_redirect() if user.must_change_password else redirect(next_url)
    return devices.remember(response, user.username)


@bp.route("/register", methods=["GET", "POST"])
@limit("PRISM_RATELIMIT_LOGIN", client_ip)
def register():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = RegisterForm()
    if form.validate_on_submit():
        username = form.username.data.strip()
        if db.session.scalar(User.by_username(username)) is not None:
            form.username.errors.append(_("That username is taken."))
        else:
            user = User(username=username, role="user", language=chosen_locale())
            user.set_password(form.password.data, current_app.config["PRISM_PASSWORD_HASH_METHOD"])
            db.session.add(user)
            db.session.flush()
            audit.record(audit.REGISTER, actor=user, target=user)
            db.session.commit()
            _start_session(user, remember=False)
            flash(_("Welcome to Prism. Pick a scenario to analyse your first image or text."), "success")
            return redirect(url_for("main.index"))
    return render_template("auth/register.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
@limit("PRISM_RATELIMIT_LOGIN", client_ip_and_username)
def login():
    if current_user.is_authenticated and login_fresh():
        return redirect(url_for("main.index"))
    # A session restored from "Keep me signed in" confirms the password here (fresh_login_required).
    form = LoginForm(username=current_user.username if current_user.is_authenticated else None)
    if form.validate_on_submit():
        username = form.username.data.strip()
        account_key = f"account:{username.lower()[:64]}"
        limits = current_app.extensions[RATELIMIT_KEY]
        if not devices.is_known(username) and (
            retry_after := limits.exhausted("PRISM_RATELIMIT_LOGIN_ACCOUNT", account_key)
        ):
            abort(429, retry_after=retry_after)  # too many failures for this account, from everywhere
        user = db.session.scalar(User.by_username(username))
        if user is None or not user.active:
            _spend_hash_time(form.password.data)  # unknown and disabled accounts cost a hash too
        elif user.check_password(form.password.data):
            next_url = request.args.get("next")
            next_url = next_url if is_safe_redirect(next_url) else url_for("main.index")
            if user.has_two_step:  # the password alone signs no one in: the code comes next
                clear_session_keeping_locale()
                session[PENDING_KEY] = {
                    "token": user.session_token,
                    "remember": bool(form.remember.data),
                    "next": next_url,
                    "until": int(time.time()) + PENDING_SECONDS,
                }
                return redirect(url_for("auth.login_code"))
            return _signed_in(user, remember=form.remember.data, next_url=next_url)
        limits.hit("PRISM_RATELIMIT_LOGIN_ACCOUNT", account_key)
        audit.record_failure(audit.LOGIN_FAILED, {"username": username[:64]})
        db.session.commit()
        flash(_("Invalid username or password."), "error")
    return render_template("auth/login.html", form=form)


@bp.route("/login/code", methods=["GET", "POST"])
@limit("PRISM_RATELIMIT_LOGIN", client_ip)
def login_code():
    """The second step for accounts with two-step sign-in: the password was right, the code decides."""
    pending = session.get(PENDING_KEY)
    user = None
    if isinstance(pending, dict) and pending.get("until", 0) >= time.time():
        user = db.session.scalar(select(User).where(User.session_token == pending.get("token"), User.active.is_(True)))
    if user is None:
        session.pop(PENDING_KEY, None)
        flash(_("Sign in again: the step with the code expired."), "info")
        return redirect(url_for("auth.login"))
    form = CodeForm()
    if form.validate_on_submit():
        if user.check_code(form.code.data):
            # _start_session drops the pending step too
            return _signed_in(user, remember=pending["remember"], next_url=pending["next"], two_step=True)
        db.session.rollback()
        audit.record_failure(audit.LOGIN_FAILED, {"username": user.username, "step": "code"})
        db.session.commit()
        form.code.errors.append(_("That code is not right, or was already used. Wait for the next one."))
    return render_template("auth/login_code.html", form=form)


@bp.route("/account/two-step", methods=["GET", "POST"])
@login_required
@fresh_login_required
def two_step():
    """Set up two-step sign-in (a new secret, confirmed by one code from the app) or turn it off."""
    user = current_user._get_current_object()
    form = CodeForm()
    if user.has_two_step:
        if form.validate_on_submit():
            if user.check_code(form.code.data):
                user.totp_secret, user.totp_last_step = None, None
                audit.record(audit.TWO_STEP_CHANGED, target=user, details={"enabled": False})
                db.session.commit()
                flash(_("Two-step sign-in is off."), "info")
                return redirect(url_for("auth.account"))
            form.code.errors.append(_("That code is not right, or was already used. Wait for the next one."))
        return render_template("auth/two_step.html", form=form, enabled=True)
    secret = session.get(SETUP_KEY) or pyotp.random_base32()
    session[SETUP_KEY] = secret
    if form.validate_on_submit():
        if user.check_code(form.code.data, secret=secret):
            user.totp_secret = secret
            session.pop(SETUP_KEY, None)
            audit.record(audit.TWO_STEP_CHANGED, target=user, details={"enabled": True})
            db.session.commit()
            flash(_("Two-step sign-in is on: signing in now asks for a code from your app."), "success")
            return redirect(url_for("auth.account"))
        db.session.rollback()
        form.code.errors.append(_("That code is not right. Check the app's clock, and enter the newest code."))
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name="Prism")
    return render_template("auth/two_step.html", form=form, enabled=False, secret=secret, uri=uri)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    if EmptyForm().validate_on_submit():
        user = current_user._get_current_object()
        user.rotate_session_token()  # revokes every copy of this user's session and remember cookies
        audit.record(audit.LOGOUT, actor=user, target=user)
        db.session.commit()
        logout_user()
        clear_session_keeping_locale()
        flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/account/", methods=["GET", "POST"])
@login_required
def account():
    if request.method == "POST":
        return _create_token()
    return _account_page(TokenForm())


@fresh_login_required
def _create_token():
    form = TokenForm()
    new_secret = None
    if form.validate_on_submit():
        token, new_secret = ApiToken.issue(current_user, form.name.data.strip())
        db.session.add(token)
        db.session.flush()
        audit.record(audit.TOKEN_CREATED, target=token, details={"name": token.name})
        db.session.commit()
        form = TokenForm(formdata=None)
    return _account_page(form, new_secret)


def _account_page(form: TokenForm, new_secret: str | None = None, preferences: PreferencesForm | None = None):
    tokens = db.session.scalars(
        select(ApiToken).where(ApiToken.user_id == current_user.id).order_by(ApiToken.created_at.desc())
    ).all()
    return render_template(
        "auth/account.html",
        form=form,
        tokens=tokens,
        new_secret=new_secret,
        revoke_form=EmptyForm(),
        preferences=preferences or PreferencesForm(obj=current_user, formdata=None),
    )


@bp.route("/account/preferences", methods=["POST"])
@login_required
def preferences():
    """Save the time zone times are shown in and the interface language (also applied at once)."""
    form = PreferencesForm()
    if not form.validate_on_submit():
        return _account_page(TokenForm(formdata=None), preferences=form), 400
    current_user.time_zone, current_user.language = form.time_zone.data, form.language.data
    session[SESSION_KEY] = form.language.data
    db.session.commit()
    flash(_("Preferences saved."), "success")
    return redirect(url_for("auth.account"))


@bp.route("/account/time-zone", methods=["POST"])
@login_required
def browser_time_zone():
    """The browser's time zone, sent once by ``static/js/timezone.js`` while the account has none:
    204 when saved or already set (a choice made on the account page is never overwritten), 400
    when the name is not a known zone or the CSRF token is missing. A zone this server's tzdata does
    not know is noted in the session, so base.html stops loading the script (it would post again on
    every page) for the rest of this session."""
    form = BrowserZoneForm()
    if not form.validate_on_submit():
        return "", 400
    if not is_zone(form.time_zone.data):
        session[BROWSER_ZONE_REFUSED] = True
        return "", 400
    if current_user.time_zone is None:
        current_user.time_zone = form.time_zone.data
        db.session.commit()
    return "", 204


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
@fresh_login_required
def change_password():
    """A new password ends every other session and remember cookie (the session token rotates) and
    revokes every API token: whoever held the old password may have made some. It must differ from
    the current one, and ends an admin reset's hold (``must_change_password``)."""
    user = current_user._get_current_object()
    form = PasswordChangeForm(user.username)
    if form.validate_on_submit():
        if not user.check_password(form.current.data):
            form.current.errors.append(_("That is not your current password."))
        elif form.password.data == form.current.data:  # above all, a temporary one from an admin
            form.password.errors.append(_("Choose a password different from your current one."))
        else:
            user.set_password(form.password.data, current_app.config["PRISM_PASSWORD_HASH_METHOD"])
            user.must_change_password = False
            revoked = user.sign_out_everywhere()
            audit.record(audit.PASSWORD_CHANGED, actor=user, target=user, details={"tokens_revoked": revoked})
            db.session.commit()
            _start_session(user, remember=False)  # this browser stays signed in, with the new token
            flash(
                _(
                    "Password changed. Every other session is signed out and %(count)d API token(s) revoked.",
                    count=revoked,
                ),
                "success",
            )
            return redirect(url_for("auth.account"))
    return render_template("auth/password.html", form=form)


@bp.route("/account/tokens/<int:token_id>/revoke", methods=["POST"])
@login_required
def revoke_token(token_id: int):
    token = db.first_or_404(select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == current_user.id))
    if EmptyForm().validate_on_submit() and token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(audit.TOKEN_REVOKED, target=token, details={"name": token.name})
        db.session.commit()
        flash(_("Token “%(name)s” revoked.", name=token.name), "info")
    return redirect(url_for("auth.account"))
