"""The three scenario pages. In v1 they share one form and one result view; each names its inputs.

The texts are lazy strings, rendered in the language of the request that shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l


@dataclass(frozen=True)
class Scenario:
    key: str
    title: LazyString
    summary: LazyString
    image_label: LazyString
    image_help: LazyString
    text_label: LazyString
    text_placeholder: LazyString


SCENARIO_PAGES = {
    "service": Scenario(
        key="service",
        title=_l("Customer service"),
        summary=_l(
            "Paste a customer message and, if they sent one, a screenshot. Prism reads the mood "
            "of the message and describes the screenshot."
        ),
        image_label=_l("Screenshot (optional)"),
        image_help=_l("Paste with Ctrl+V, drop a file here, or choose one."),
        text_label=_l("Customer message"),
        text_placeholder=_l("e.g. My order arrived broken and nobody answers my emails. / 订单到了但是坏了…"),
    ),
    "medical": Scenario(
        key="medical",
        title=_l("Medical imaging"),
        summary=_l(
            "Upload an image and add a clinical note or question. Prism proposes a caption for you "
            "to review; it is a suggestion, never a diagnosis."
        ),
        image_label=_l("Image (PNG or JPEG)"),
        image_help=_l("Drop a file here or choose one."),
        text_label=_l("Clinical note or question (optional)"),
        text_placeholder=_l("e.g. Follow-up image, patient reports less pain than last visit."),
    ),
    "education": Scenario(
        key="education",
        title=_l("Education"),
        summary=_l(
            "Upload a photo of homework and paste the student's written answer or reflection. "
            "Prism describes the photo and reads the tone of the reflection."
        ),
        image_label=_l("Homework photo"),
        image_help=_l("Drop a file here or choose one."),
        text_label=_l("Student's answer or reflection"),
        text_placeholder=_l("e.g. I found fractions hard at first but now I enjoy them. / 我觉得这次作业很有意思。"),
    ),
}
