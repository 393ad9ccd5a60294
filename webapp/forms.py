"""Forms shared by several blueprints."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SubmitField


class EmptyForm(FlaskForm):
    """Only a CSRF token: every state-changing button (logout, delete, revoke) posts one of these."""

    submit = SubmitField(_l("Submit"))
