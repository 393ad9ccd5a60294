from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import SubmitField, TextAreaField
from wtforms.validators import Optional


class AnalysisForm(FlaskForm):
    """Image and/or text. Image content is validated in storage.py (by decoding, not by extension)."""

    image = FileField(_l("Image"))
    # Length is checked against PRISM_MAX_TEXT_CHARS in analyses.create_analysis, the one place both
    # the form and the API go through.
    text = TextAreaField(_l("Text"), validators=[Optional()])
    submit = SubmitField(_l("Analyse"))

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if not self.image.data and not (self.text.data or "").strip():
            self.form_errors.append(_("Add an image, a text, or both."))
            return False
        return True
