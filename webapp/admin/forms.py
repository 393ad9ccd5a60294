from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectField, SubmitField
from wtforms.fields.choices import SelectChoice

from ..i18n import ROLE_NAMES
from ..models import ROLES


class RoleForm(FlaskForm):
    role = SelectField(_l("Role"), choices=[SelectChoice(role, ROLE_NAMES[role]) for role in ROLES])
    submit = SubmitField(_l("Save role"))
