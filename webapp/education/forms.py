from __future__ import annotations

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from wtforms import (
    FieldList,
    FloatField,
    Form,
    FormField,
    HiddenField,
    SelectField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from ..models.education import MAX_FEEDBACK_CHARS, MAX_POINTS, Rubric

EMPTY_CRITERION_ROWS = 2  # blank rows under a rubric's criteria: more are one "Add rows" press away
MAX_CRITERIA = 50
MAX_REFERENCE_CHARS = 20_000


def strip(value):
    return value.strip() if isinstance(value, str) else value


class CriterionForm(Form):
    """One row of a rubric. A row without a title is left out (that is how a row is removed)."""

    criterion_id = HiddenField()
    title = StringField(_l("Title"), validators=[Optional(), Length(max=200)], filters=[strip])
    description = TextAreaField(_l("Description (optional)"), validators=[Optional(), Length(max=2000)])
    max_points = FloatField(
        _l("Points"),
        validators=[
            Optional(),
            NumberRange(min=0.5, max=MAX_POINTS, message=_l("From 0.5 to %(max)d points.", max=MAX_POINTS)),
        ],
    )

    @property
    def is_blank(self) -> bool:
        return not (self.title.data or "").strip()

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if not self.is_blank and self.max_points.data is None:
            self.max_points.errors.append(_("Give this criterion its points."))
            return False
        if self.is_blank and (self.max_points.data is not None or (self.description.data or "").strip()):
            self.title.errors.append(_("Give this criterion a title, or clear the row to remove it."))
            return False
        return True


class RubricForm(FlaskForm):
    title = StringField(_l("Rubric title"), validators=[DataRequired(), Length(max=200)], filters=[strip])
    criteria = FieldList(FormField(CriterionForm), min_entries=1, max_entries=MAX_CRITERIA)
    add_rows = SubmitField(_l("Add rows"))
    submit = SubmitField(_l("Save rubric"))

    @property
    def filled_rows(self) -> list[CriterionForm]:
        return [row.form for row in self.criteria if not row.form.is_blank]

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if not self.filled_rows:
            self.form_errors.append(_("A rubric needs at least one criterion."))
            return False
        return True

    def pad(self) -> None:
        """Add the blank rows a teacher fills to add criteria (no script needed)."""
        for _row in range(EMPTY_CRITERION_ROWS):
            if len(self.criteria) < MAX_CRITERIA:
                self.criteria.append_entry()


class AssignmentForm(FlaskForm):
    title = StringField(_l("Title"), validators=[DataRequired(), Length(max=200)], filters=[strip])
    reference_text = TextAreaField(
        _l("Reference text or answer key (optional)"), validators=[Optional(), Length(max=MAX_REFERENCE_CHARS)]
    )
    rubric = SelectField(_l("Rubric"), coerce=int, validators=[InputRequired()])
    submit = SubmitField(_l("Create assignment"))

    def offer(self, rubrics: list[Rubric]) -> None:
        self.rubric.choices = [(rubric.id, rubric.title) for rubric in rubrics]


class UploadForm(FlaskForm):
    """Homework photos: one submission per file, named after the file (``张伟.jpg`` is 张伟's)."""

    images = MultipleFileField(_l("Homework photos"))
    submit = SubmitField(_l("Upload"))

    @property
    def files(self) -> list:
        return [upload for upload in (self.images.data or []) if upload and upload.filename]

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if not self.files:
            self.images.errors.append(_("Choose one or more photos."))
            return False
        return True


class StudentNameForm(FlaskForm):
    student_name = StringField(_l("Student"), validators=[DataRequired(), Length(max=120)], filters=[strip])
    submit = SubmitField(_l("Rename"))


class GradeForm(FlaskForm):
    """Feedback and the save buttons; ``grade_form`` adds one points field per criterion of a rubric."""

    feedback = TextAreaField(_l("Feedback"), validators=[Optional(), Length(max=MAX_FEEDBACK_CHARS)])
    save = SubmitField(_l("Save"))
    save_next = SubmitField(_l("Save & next ungraded"))

    criterion_fields: list[tuple[int, str]]  # (criterion id, field name), in rubric order


def criterion_field(criterion_id: int) -> str:
    return f"criterion_{criterion_id}"


def grade_form(rubric: Rubric, **kwargs) -> GradeForm:
    """A ``GradeForm`` with a required points field, from 0 to the criterion's maximum, per criterion."""
    fields = {
        criterion_field(criterion.id): FloatField(
            criterion.title,
            validators=[
                InputRequired(message=_l("Give points for this criterion.")),
                NumberRange(
                    min=0,
                    max=criterion.max_points,
                    message=_l("Points from 0 to %(max)s.", max=f"{criterion.max_points:g}"),
                ),
            ],
        )
        for criterion in rubric.criteria
    }
    form = type("RubricGradeForm", (GradeForm,), fields)(**kwargs)
    form.criterion_fields = [(criterion.id, criterion_field(criterion.id)) for criterion in rubric.criteria]
    return form
