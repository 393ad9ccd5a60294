from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import AnyOf, Length, Optional

from ..models import DECISIONS
from . import MAX_COMMENT_CHARS


class ReviewForm(FlaskForm):
    """One form per prediction: its buttons send ``decision``; ``value`` is parsed by the prediction's kind."""

    decision = StringField(validators=[AnyOf(tuple(DECISIONS))])
    value = TextAreaField(_l("Corrected value"), validators=[Optional()])
    comment = TextAreaField(_l("Comment (optional)"), validators=[Optional(), Length(max=MAX_COMMENT_CHARS)])
    queue = HiddenField()  # set when reviewing from a queue: go on to the next item
