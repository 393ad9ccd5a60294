from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, Regexp, ValidationError

from ..i18n import LANGUAGES, current_locale
from ..localtime import zone_names
from .passwords import MAX_LENGTH, password_problem

USERNAME_RULE = Regexp(r"^[\w.\-]+$", message=_l("Use letters, digits, '.', '-' or '_' only."))


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=MAX_LENGTH)])
    remember = BooleanField(_l("Keep me signed in on this device"))
    submit = SubmitField(_l("Sign in"))


class RegisterForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(min=3, max=64), USERNAME_RULE])
    # The one policy (passwords.py): length, and not a common password or the username.
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=MAX_LENGTH)])
    confirm = PasswordField(
        _l("Repeat password"), validators=[DataRequired(), EqualTo("password", message=_l("Passwords differ."))]
    )
    submit = SubmitField(_l("Create account"))

    def validate_password(self, field: PasswordField) -> None:
        if problem := password_problem(field.data or "", self.username.data):
            raise ValidationError(str(problem))


class PasswordChangeForm(FlaskForm):
    current = PasswordField(_l("Current password"), validators=[DataRequired(), Length(max=MAX_LENGTH)])
    password = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=MAX_LENGTH)])
    confirm = PasswordField(
        _l("Repeat new password"), validators=[DataRequired(), EqualTo("password", message=_l("Passwords differ."))]
    )
    submit = SubmitField(_l("Change password"))

    def __init__(self, username: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.username = username

    def validate_password(self, field: PasswordField) -> None:
        if problem := password_problem(field.data or "", self.username):
            raise ValidationError(str(problem))


CODE_RULE = Regexp(r"^\s*\d{3}\s?\d{3}\s*$", message=_l("Enter the 6 digits your authenticator app shows."))


class CodeForm(FlaskForm):
    """The second step of signing in, and the confirmation of setting it up or turning it off."""

    code = StringField(_l("6-digit code"), validators=[DataRequired(), CODE_RULE])
    submit = SubmitField(_l("Continue"))


class TokenForm(FlaskForm):
    name = StringField(_l("Token name"), validators=[DataRequired(), Length(max=64)])
    submit = SubmitField(_l("Create token"))


class PreferencesForm(FlaskForm):
    """Display preferences on the account page; zones are IANA names (``localtime.zone_names``)."""

    time_zone = SelectField(_l("Time zone"), validators=[DataRequired()])
    language = SelectField(
        _l("Language"), choices=[SelectChoice(code, name) for code, (_tag, name) in LANGUAGES.items()]
    )
    submit = SubmitField(_l("Save preferences"))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.time_zone.choices = [SelectChoice(name, name) for name in zone_names()]
        self.time_zone.data = self.time_zone.data or "UTC"
        self.language.data = self.language.data or current_locale()


class BrowserZoneForm(FlaskForm):
    """The zone ``static/js/timezone.js`` reads from the browser (checked by the view: any string here)."""

    time_zone = StringField(validators=[DataRequired(), Length(max=64)])
