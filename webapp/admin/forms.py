from flask_wtf import FlaskForm
from wtforms import SelectField, SubmitField
from wtforms.fields.choices import SelectChoice

from ..models import ROLES


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=[SelectChoice(role, role) for role in ROLES])
    submit = SubmitField("Save role")
