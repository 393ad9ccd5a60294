"""Forms of the service desk's admin pages (categories and their reply templates)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Regexp


class CategoryForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=64)])
    description = TextAreaField(
        _l("Description (what the model compares messages with; write it in the customers' languages)"),
        validators=[DataRequired(), Length(max=2000)],
    )
    position = IntegerField(_l("Position"), default=0, validators=[NumberRange(min=0, max=999)])
    active = BooleanField(_l("Active"), default=True)
    template_en = TextAreaField(_l("Reply template (English)"), validators=[Length(max=5000)])
    template_zh = TextAreaField(_l("Reply template (Chinese)"), validators=[Length(max=5000)])
    submit = SubmitField(_l("Save"))


class NewCategoryForm(CategoryForm):
    key = StringField(
        _l("Key (letters, digits and dashes; stored in results, never renamed)"),
        validators=[DataRequired(), Length(max=32), Regexp(r"^[a-z0-9][a-z0-9-]*$", message=_l("Use a-z, 0-9 and -."))],
    )
