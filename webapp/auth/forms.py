from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp

USERNAME_RULE = Regexp(r"^[\w.\-]+$", message=_l("Use letters, digits, '.', '-' or '_' only."))


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])
    remember = BooleanField(_l("Keep me signed in on this device"))
    submit = SubmitField(_l("Sign in"))


class RegisterForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(min=3, max=64), USERNAME_RULE])
    # ASVS 5: at least 8 characters, long passphrases allowed, no composition rules.
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(min=8, max=256)])
    confirm = PasswordField(
        _l("Repeat password"), validators=[DataRequired(), EqualTo("password", message=_l("Passwords differ."))]
    )
    submit = SubmitField(_l("Create account"))


class TokenForm(FlaskForm):
    name = StringField(_l("Token name"), validators=[DataRequired(), Length(max=64)])
    submit = SubmitField(_l("Create token"))
