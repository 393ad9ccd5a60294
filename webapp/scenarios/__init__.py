"""The three scenario pages. In v1 they share one form and one result view; each names its inputs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    summary: str
    image_label: str
    image_help: str
    text_label: str
    text_placeholder: str


SCENARIO_PAGES = {
    "service": Scenario(
        key="service",
        title="Customer service",
        summary="Paste a customer message and, if they sent one, a screenshot. Prism reads the mood "
        "of the message and describes the screenshot.",
        image_label="Screenshot (optional)",
        image_help="Paste with Ctrl+V, drop a file here, or choose one.",
        text_label="Customer message",
        text_placeholder="e.g. My order arrived broken and nobody answers my emails. / 订单到了但是坏了…",
    ),
    "medical": Scenario(
        key="medical",
        title="Medical imaging",
        summary="Upload an image and add a clinical note or question. Prism proposes a caption for you "
        "to review; it is a suggestion, never a diagnosis.",
        image_label="Image (PNG or JPEG)",
        image_help="Drop a file here or choose one.",
        text_label="Clinical note or question (optional)",
        text_placeholder="e.g. Follow-up image, patient reports less pain than last visit.",
    ),
    "education": Scenario(
        key="education",
        title="Education",
        summary="Upload a photo of homework and paste the student's written answer or reflection. "
        "Prism describes the photo and reads the tone of the reflection.",
        image_label="Homework photo",
        image_help="Drop a file here or choose one.",
        text_label="Student's answer or reflection",
        text_placeholder="e.g. I found fractions hard at first but now I enjoy them. / 我觉得这次作业很有意思。",
    ),
}
