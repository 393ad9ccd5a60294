"""The scenario registry: for each scenario, who may submit and review, what it takes, what runs.

One generic view serves all three (``views.py``); a scenario gets its own module only where it
needs pages of its own. Admins read and audit everything but submit or review only where their
role is listed, as anyone else. The texts are lazy strings, rendered in the request's language.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l

from ..models import ROLES

OPTIONAL, REQUIRED = "optional", "required"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: LazyString
    summary: LazyString
    image_label: LazyString
    text_label: LazyString
    text_placeholder: LazyString
    roles: frozenset[str]  # may submit, and review their own records
    image: str = OPTIONAL
    # The prediction kinds that run, in display order: on the image, on the text (a clinical note gets
    # none), and then on whatever was given (they read what the others produced: the service desk's
    # category reads the message and the screenshot's text, its reply draft the category).
    image_tasks: tuple[str, ...] = ("caption",)
    text_tasks: tuple[str, ...] = ("sentiment",)
    after_tasks: tuple[str, ...] = ()
    # Text kinds that, when nothing was typed, read the text OCR found on the image instead (a
    # reflection handwritten on a homework page). They run after the image kinds, which include OCR.
    image_text_tasks: tuple[str, ...] = ()
    # Kinds that combine the image and the text (webapp/fusion.py), run last when both were given (a
    # homework photo handed in for an assignment is compared with the assignment: webapp.education).
    multimodal_tasks: tuple[str, ...] = ()
    # Review policy: whether every AI result waits for a human decision before it counts as final.
    review_required: bool = False
    # What the file chooser offers (the server checks the bytes whatever the browser sends).
    accept: str = "image/*"
    # Whether the upload area offers "Take a photo" (phones open the camera): for photographed
    # inputs, not screenshots or DICOM files.
    camera: bool = False

    def may_submit(self, user) -> bool:
        return user.is_authenticated and user.role in self.roles

    may_review = may_submit

    def tasks_for(self, *, has_image: bool, has_text: bool) -> list[str]:
        """The prediction kinds a submission with these inputs gets, in the order they run."""
        text_tasks = self.text_tasks if has_text else self.image_text_tasks if has_image else ()
        tasks = [*(self.image_tasks if has_image else ()), *text_tasks]
        multimodal = self.multimodal_tasks if has_image and has_text else ()
        return [*tasks, *self.after_tasks, *multimodal] if tasks else []

    @property
    def analyses_text(self) -> bool:
        return bool(self.text_tasks)


SCENARIO_PAGES = {
    "service": Scenario(
        key="service",
        title=_l("Customer service"),
        summary=_l(
            "Paste a customer message and, if they sent one, a screenshot. Prism reads the screenshot's "
            "text, the mood and the topic of the message, and drafts a reply for you to edit."
        ),
        image_label=_l("Screenshot (optional)"),
        text_label=_l("Customer message"),
        text_placeholder=_l("e.g. My order arrived broken and nobody answers my emails. / 订单到了但是坏了…"),
        roles=frozenset(ROLES),
        image_tasks=("ocr", "caption"),
        after_tasks=("category", "reply"),
        multimodal_tasks=("fusion", "agreement"),
    ),
    "medical": Scenario(
        key="medical",
        title=_l("Medical imaging"),
        summary=_l(
            "Upload an image and add a clinical note or question. Prism proposes a caption that you "
            "accept, correct or reject; it is a suggestion, never a diagnosis."
        ),
        image_label=_l("Image (DICOM, PNG or JPEG)"),
        text_label=_l("Clinical note or question (optional)"),
        text_placeholder=_l("e.g. Follow-up image, patient reports less pain than last visit."),
        roles=frozenset({"clinician"}),
        image=REQUIRED,
        accept="image/*,.dcm,application/dicom",
        text_tasks=(),
        review_required=True,
    ),
    "education": Scenario(
        key="education",
        title=_l("Education"),
        summary=_l(
            "Upload photos of homework (several at once make a batch) or paste a student's written "
            "reflection. Prism reads and describes each photo and the tone of the reflection (typed, or "
            "else the text read from the photo); you review them all."
        ),
        image_label=_l("Homework photo"),
        text_label=_l("Student's answer or reflection"),
        text_placeholder=_l("e.g. I found fractions hard at first but now I enjoy them. / 我觉得这次作业很有意思。"),
        roles=frozenset({"teacher"}),
        image_tasks=("ocr", "caption"),
        image_text_tasks=("sentiment",),
        multimodal_tasks=("fusion", "agreement"),
        review_required=True,
        camera=True,
    ),
}


def scenarios_for(user) -> dict[str, Scenario]:
    """The scenarios ``user`` may work in, in menu order."""
    return {key: page for key, page in SCENARIO_PAGES.items() if page.may_submit(user)}
