"""The README's screenshots, taken by the browser suite from the live server (fake models, seeded
records; see conftest), in English and Chinese, on a phone (390 px) and a desktop (1280 px).

Each shot is also a check: the page answers 200, is in the language asked for and is no wider than
the window. To refresh the README's images after changing a page:

    PRISM_SCREENSHOTS=static/img python -m pytest tests/browser/test_readme_screenshots.py
"""

from __future__ import annotations

import re

import pytest
from pydicom.data import get_testdata_file

from tests.browser.helpers import DESKTOP, PHONE, page_width_overflow
from tests.conftest import png_bytes

# README image name -> (account, path or a scenario flow, width, language, what the page must show)
SHOTS = {
    "readme-record-phone-zh.png": ("uma", "/history/2", PHONE, "zh", "情感"),
    "readme-history-desktop-zh.png": ("uma", "/history/", DESKTOP, "zh", "历史"),
    "readme-dashboard-phone-en.png": ("uma", "/dashboard", PHONE, "en", "Dashboard"),
    "readme-grading-desktop-en.png": ("tina", "/education/assignments/1/submissions/1", DESKTOP, "en", "Feedback"),
    "readme-batch-phone-zh.png": ("tina", "/batches/1", PHONE, "zh", "批次"),
    "readme-audit-desktop-en.png": ("root", "/admin/audit", DESKTOP, "en", "Audit"),
}


def open_in(signed_in, live_server, account, width, lang):
    # Reduced motion: charts draw without animating, so a shot never catches a bar half grown.
    context = signed_in(account, viewport={"width": width, "height": 900}, reduced_motion="reduce")
    page = context.new_page()
    page.goto(live_server(f"/lang/{lang}"))
    return context, page


def check_and_shoot(page, lang, must_show, path) -> None:
    assert page.locator("html").get_attribute("lang").startswith("zh" if lang == "zh" else "en")
    assert must_show in page.locator("main").inner_text()
    assert page_width_overflow(page) == 0
    page.screenshot(path=str(path), full_page=True)


@pytest.mark.parametrize("name", sorted(SHOTS))
def test_readme_screenshot(signed_in, live_server, screenshots, name):
    account, path, width, lang, must_show = SHOTS[name]
    context, page = open_in(signed_in, live_server, account, width, lang)
    try:
        response = page.goto(live_server(path))
        assert response.status == 200
        check_and_shoot(page, lang, must_show, screenshots / name)
    finally:
        context.close()


def test_readme_screenshot_of_a_dicom_case(signed_in, live_server, screenshots):
    """A clinician uploads pydicom's CT sample through the form and marks a region: the case page
    (de-identified image in its window, metadata, the region) in Chinese on a desktop."""
    dicom = get_testdata_file("CT_small.dcm")
    if dicom is None:
        pytest.skip("pydicom's CT_small.dcm is not installed")
    context, page = open_in(signed_in, live_server, "clara", DESKTOP, "zh")
    try:
        page.goto(live_server("/medical/"))
        page.set_input_files("#image", dicom)
        page.locator("main form[method=post] button[type=submit]").first.click()
        page.wait_for_url(re.compile(r"/history/\d+$"))
        form = page.locator(".annotation-form")
        for field, value in {"x": "40", "y": "48", "width": "30", "height": "22"}.items():
            form.locator(f"input[name={field}]").fill(value)
        form.locator("#annotation-label").fill("低密度灶")
        form.locator("button[type=submit]").click()
        page.wait_for_load_state()
        assert "低密度灶" in page.locator("main").inner_text()
        check_and_shoot(page, "zh", "低密度灶", screenshots / "readme-medical-desktop-zh.png")
    finally:
        context.close()


def test_readme_screenshot_of_a_service_desk_record(signed_in, live_server, screenshots):
    """An agent sends a customer's message with a screenshot through the form: the record shows the
    text read from the screenshot, its caption, the sentiment, the category and the reply draft."""
    context, page = open_in(signed_in, live_server, "uma", DESKTOP, "en")
    try:
        page.goto(live_server("/service/"))
        page.fill("#text", "I was charged twice for my order #4521, please refund one of the payments.")
        page.set_input_files(
            "#image", files=[{"name": "receipt.png", "mimeType": "image/png", "buffer": png_bytes((160, 100))}]
        )
        page.locator("main form[method=post] button[type=submit]").first.click()
        page.wait_for_url(re.compile(r"/history/\d+$"))
        for kind in ("sentiment", "category", "reply"):
            assert page.locator(f".prediction-{kind}").count() == 1, kind
        check_and_shoot(page, "en", "Reply draft", screenshots / "readme-service-desktop-en.png")
    finally:
        context.close()
