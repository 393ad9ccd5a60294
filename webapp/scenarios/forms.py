from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from wtforms import SubmitField, TextAreaField
from wtforms.validators import Optional


class AnalysisForm(FlaskForm):
    """One or more images and/or a text. Several images make a batch (one record each, no text).

    Image content is validated in uploads.py (by decoding, not by extension); the text length against
    PRISM_MAX_TEXT_CHARS in analyses.submit_analysis, the one place both the form and the API go through.
    """

    image = MultipleFileField(_l("Image"))
    text = TextAreaField(_l("Text"), validators=[Optional()])
    submit = SubmitField(_l("Analyse"))

    @property
    def files(self) -> list:
        return [upload for upload in (self.image.data or []) if upload and upload.filename]

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        has_text = bool((self.text.data or "").strip())
        if not self.files and not has_text:
            self.form_errors.append(_("Add an image, a text, or both."))
            return False
        if len(self.files) > 1 and has_text:
            self.form_errors.append(
                _("Several images make a batch of separate records, which take no text. Send the text with one image.")
            )
            return False
        return True
