from flask_wtf import FlaskForm
from wtforms import SelectField, SubmitField

from ..models import ROLES


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=[(role, role) for role in ROLES])
    submit = SubmitField("Save role")
