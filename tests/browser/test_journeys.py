"""What people do with Prism, start to end, in headless Chromium against the model-backed live server
(``model_server``: tiny real checkpoints, the packaged OCR, jobs run by a consumer in the server).

Each journey goes through the pages only, as a person would: registering, signing in and out, each
scenario's main flow (a dropped screenshot, a clinician's correction, a teacher's several photos
climbing to 100% and a grade), the language switch, a password change, and the admin reading the
audit log of all of it. The journeys share the server, so they run in this file's order.
Screenshots go to $PRISM_SCREENSHOTS (else each test's tmp_path).
"""

from __future__ import annotations

import re

import pytest

from tests.browser.helpers import DESKTOP, DROP, PHONE, b64, page_width_overflow
from tests.conftest import TEST_PASSWORD, png_bytes

NEW_PASSWORD = "orchid-lantern-47-kettle"
# Long enough for a tiny model's first load and the OCR on two cores; a journey never waits this long
# unless something is wrong.
JOB_WAIT_MS = 90_000


@pytest.fixture(scope="module")
def people(browser, model_server):
    """Browser contexts by username, created on first use; all closed at the end of the module."""
    contexts = {}
    yield contexts
    for context in contexts.values():
        context.close()


def register(browser, server, people, username: str, width: int = DESKTOP):
    """A new account made through /register; returns its signed-in page."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    people[username] = context
    page = context.new_page()
    page.goto(server("/register"))
    page.fill("#username", username)
    page.fill("#password", TEST_PASSWORD)
    page.fill("#confirm", TEST_PASSWORD)
    page.click("main form button[type=submit]")
    page.wait_for_load_state()
    assert "/register" not in page.url, page.inner_text("main")
    return page


def sign_in(page, server, username: str, password: str = TEST_PASSWORD) -> None:
    page.goto(server("/login"))
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("main form button[type=submit]")
    page.wait_for_load_state()


def set_role(browser, server, people, username: str, role: str) -> None:
    """The admin gives ``username`` a role on the users page, as the README says to."""
    page = admin_page(browser, server, people)
    page.goto(server("/admin/users"))
    row = page.locator("tr", has_text=username)
    row.locator("select").select_option(role)
    with page.expect_navigation():
        row.get_by_role("button", name="Save").click()
    # Read the role back from a fresh page: the row's text lists every role (the select's options), and
    # the select on the page just submitted shows the choice whether or not it was saved.
    page.goto(server("/admin/users"))
    row = page.locator("tr", has_text=username)
    assert row.locator("select").input_value() == role
    assert role in row.inner_text().lower() or row.locator("select").input_value() == role


def admin_page(browser, server, people):
    """The admin's signed-in page (signed in through the form on first use)."""
    if "root" in people:
        return page_of(people, "root")
    context = browser.new_context(viewport={"width": DESKTOP, "height": 900})
    people["root"] = context
    page = context.new_page()
    sign_in(page, server, "root")
    return page


def page_of(people, username: str):
    return people[username].pages[0]


def wait_until_done(page) -> None:
    """The record page polls while its job runs and reloads when it finishes."""
    page.wait_for_selector("[data-poll]", state="detached", timeout=JOB_WAIT_MS)
    page.wait_for_load_state()


def test_register_sign_out_and_sign_in_again(browser, model_server, people, screenshots):
    """A new visitor registers, lands signed in, signs out from the header and signs back in."""
    page = register(browser, model_server, people, "wang.fang")
    assert page.get_by_role("link", name="wang.fang").is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    assert page.get_by_role("link", name="Sign in").first.is_visible()
    sign_in(page, model_server, "wang.fang")
    assert page.get_by_role("link", name="wang.fang").is_visible()
    page.screenshot(path=str(screenshots / "journey-signed-in.png"))


def test_service_desk_message_with_a_dropped_screenshot(model_server, people, screenshots):
    """The agent types a customer's message in Chinese, drops a screenshot, sends, and gets the
    sentiment, category and an editable reply draft from the models; then accepts the sentiment."""
    page = page_of(people, "wang.fang")
    page.goto(model_server("/service/"))
    page.fill("#text", "我的订单还没到，很失望。请尽快帮我查一下。")
    page.evaluate(DROP, ["[data-dropzone]", [["screenshot.png", "image/png", b64(png_bytes((120, 80)))]]])
    assert page.locator(".file-item").count() == 1
    page.locator("main form[method=post] button[type=submit]").first.click()
    page.wait_for_url(re.compile(r"/history/\d+$"), timeout=JOB_WAIT_MS)
    wait_until_done(page)
    main = page.locator("main")
    assert "我的订单还没到" in main.inner_text()
    for section in ("sentiment", "category", "reply", "caption"):
        assert page.locator(f".prediction-{section}").count() == 1, section
    page.screenshot(path=str(screenshots / "journey-service-record.png"), full_page=True)
    sentiment = page.locator(".prediction-sentiment")
    sentiment.get_by_role("button", name="Accept").click()
    page.wait_for_load_state()
    assert "review-accepted" in page.locator(".prediction-sentiment").get_attribute("class")


def test_clinician_corrects_a_proposed_caption(browser, model_server, people, screenshots):
    """A clinician (role given by the admin) uploads an image, corrects the AI's caption with a
    comment; the record keeps both the AI original and the correction."""
    register(browser, model_server, people, "dr.li")
    set_role(browser, model_server, people, "dr.li", "clinician")
    page = page_of(people, "dr.li")
    page.goto(model_server("/medical/"))
    page.set_input_files(
        "#image", files=[{"name": "chest.png", "mimeType": "image/png", "buffer": png_bytes((96, 96), (90, 90, 90))}]
    )
    page.locator("main form[method=post] button[type=submit]").first.click()
    page.wait_for_url(re.compile(r"/history/\d+$"), timeout=JOB_WAIT_MS)
    wait_until_done(page)
    card = page.locator(".prediction-caption")
    original = card.locator(".review-correct textarea, .review-correct input[type=text]").first.input_value()
    card.locator(".review-correct textarea, .review-correct input[type=text]").first.fill(
        "右下肺野小结节 small nodule, right lower zone"
    )
    card.locator("textarea[name=comment]").fill("seen on the lateral view")
    card.get_by_role("button", name="Save correction").click()
    page.wait_for_load_state()
    card = page.locator(".prediction-caption")
    assert "review-corrected" in card.get_attribute("class")
    assert "右下肺野小结节" in card.locator(".human-value").inner_text()
    if original.strip():
        assert original.strip() in card.locator(".ai-original").inner_text()
    page.screenshot(path=str(screenshots / "journey-medical-corrected.png"), full_page=True)


def test_teacher_uploads_several_photos_and_grades_one(browser, model_server, people, screenshots):
    """A teacher writes a rubric and an assignment, drops three homework photos at once, watches them
    being read until the progress panel is done, and grades one."""
    register(browser, model_server, people, "ms.zhao", width=PHONE)
    set_role(browser, model_server, people, "ms.zhao", "teacher")
    page = page_of(people, "ms.zhao")
    page.goto(model_server("/education/rubrics/new"))
    page.fill("#title", "分数 Fractions")
    page.fill("#criteria-0-title", "Method")
    page.fill("#criteria-0-max_points", "5")
    page.get_by_role("button", name="Save rubric").click()
    page.wait_for_load_state()
    page.goto(model_server("/education/assignments/new"))
    page.fill("#title", "第三次作业 Homework 3")
    page.get_by_role("button", name="Create assignment").click()
    page.wait_for_url(re.compile(r"/education/assignments/\d+$"))
    photos = [
        [f"{name}.png", "image/png", b64(png_bytes((80, 60), colour))]
        for name, colour in (("张伟", (200, 20, 20)), ("Li Na", (20, 200, 20)), ("Ahmed", (20, 20, 200)))
    ]
    page.evaluate(DROP, ["[data-dropzone]", photos])
    assert page.locator(".file-item").count() == 3
    assert page_width_overflow(page) == 0
    page.locator("[data-dropzone]").locator("xpath=ancestor::form").locator("button[type=submit]").first.click()
    page.wait_for_url(re.compile(r"/education/assignments/\d+$"), timeout=JOB_WAIT_MS)
    wait_until_done(page)  # the progress panel polls, and goes once every photo is read
    listing = page.locator("main").inner_text()
    for student in ("张伟", "Li Na", "Ahmed"):
        assert student in listing, student
    page.screenshot(path=str(screenshots / "journey-assignment-390.png"), full_page=True)
    assert page_width_overflow(page) == 0
    page.get_by_role("link", name=re.compile("张伟")).first.click()
    page.wait_for_url(re.compile(r"/submissions/\d+$"))
    page.locator("input[name^=criterion_]").first.fill("4")
    page.fill("#feedback", "方法正确，注意约分。")
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_load_state()
    assert page.locator("input[name^=criterion_]").first.input_value() in {"4", "4.0"}
    page.screenshot(path=str(screenshots / "journey-graded-390.png"), full_page=True)


def test_language_switch_is_remembered(model_server, people):
    """Choosing 中文 in the header turns the interface Chinese, on this page and the next."""
    page = page_of(people, "wang.fang")
    page.goto(model_server("/history/"))
    page.locator(".lang-switch").get_by_role("link", name="中文").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang").startswith("zh")
    assert "/history/" in page.url
    page.goto(model_server("/service/"))
    assert page.locator("html").get_attribute("lang").startswith("zh")
    assert "历史" in page.locator("header").inner_text()
    page.locator(".lang-switch").get_by_role("link", name="English").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "en"


def test_password_change_then_sign_in_with_the_new_one(browser, model_server, people):
    """The account page changes the password; the old one stops working and the new one signs in."""
    page = page_of(people, "wang.fang")
    page.goto(model_server("/account/password"))
    page.fill("#current", TEST_PASSWORD)
    page.fill("#password", NEW_PASSWORD)
    page.fill("#confirm", NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    page.wait_for_load_state()
    assert "/account/password" not in page.url, page.inner_text("main")
    other = browser.new_context()
    try:
        fresh = other.new_page()
        sign_in(fresh, model_server, "wang.fang", TEST_PASSWORD)
        assert "/login" in fresh.url
        sign_in(fresh, model_server, "wang.fang", NEW_PASSWORD)
        assert "/login" not in fresh.url
    finally:
        other.close()


def test_admin_reads_the_audit_log_of_these_journeys(browser, model_server, people, screenshots):
    """The admin's audit page lists who did what in these journeys, by name, on a phone too."""
    page = admin_page(browser, model_server, people)
    page.goto(model_server("/admin/audit"))
    text = page.locator("main").inner_text()
    for expected in ("wang.fang", "dr.li", "ms.zhao", "root"):
        assert expected in text, expected
    page.screenshot(path=str(screenshots / "journey-audit-1280.png"), full_page=True)
    page.set_viewport_size({"width": PHONE, "height": 900})
    page.reload()
    assert page_width_overflow(page) == 0
    page.screenshot(path=str(screenshots / "journey-audit-390.png"), full_page=True)


def test_several_photos_in_the_scenario_form_make_a_batch_that_reaches_100(model_server, people, screenshots):
    """Two photos dropped on the education form become a batch whose page climbs to 2 of 2."""
    page = page_of(people, "ms.zhao")
    page.goto(model_server("/education/"))
    photos = [[f"page-{n}.png", "image/png", b64(png_bytes((64, 64), (40 * n, 90, 160)))] for n in (1, 2)]
    page.evaluate(DROP, ["[data-dropzone]", photos])
    assert page.locator(".file-item").count() == 2
    page.locator("main form[method=post] button[type=submit]").first.click()
    page.wait_for_url(re.compile(r"/batches/\d+$"), timeout=JOB_WAIT_MS)
    page.wait_for_function(
        "() => { const p = document.querySelector('.job-status progress');"
        " return p && p.max === 2 && Number(p.value) === 2; }",
        timeout=JOB_WAIT_MS,
    )
    assert page.locator("[data-poll]").count() == 0  # finished: the page stopped polling
    page.screenshot(path=str(screenshots / "journey-batch-100-390.png"), full_page=True)


def test_admin_resets_a_forgotten_password(browser, model_server, people, screenshots):
    """The admin resets dr.li's password on the users page (after the confirm dialog) and reads the
    temporary password once; dr.li signs in with it and is made to choose a new one first."""
    page = admin_page(browser, model_server, people)
    page.set_viewport_size({"width": PHONE, "height": 900})
    page.goto(model_server("/admin/users"))
    assert page_width_overflow(page) == 0
    page.screenshot(path=str(screenshots / "journey-users-390.png"), full_page=True)
    page.set_viewport_size({"width": DESKTOP, "height": 900})
    page.screenshot(path=str(screenshots / "journey-users-1280.png"), full_page=True)
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr", has_text="dr.li").get_by_role("button", name="Reset password").click()
    page.wait_for_load_state()
    temporary = page.locator("#temporary-password").inner_text().strip()
    assert len(temporary) == 16 and "dr.li" in page.locator("h1").inner_text()
    page.screenshot(path=str(screenshots / "journey-password-reset-1280.png"), full_page=True)
    page.set_viewport_size({"width": PHONE, "height": 900})
    assert page_width_overflow(page) == 0
    page.screenshot(path=str(screenshots / "journey-password-reset-390.png"), full_page=True)
    page.set_viewport_size({"width": DESKTOP, "height": 900})
    other = browser.new_context(viewport={"width": PHONE, "height": 900})
    try:
        fresh = other.new_page()
        sign_in(fresh, model_server, "dr.li", temporary)
        assert fresh.url.endswith("/account/password"), fresh.inner_text("main")
        assert "Choose a new one to continue" in fresh.inner_text("main")
        fresh.goto(model_server("/history/"))
        assert fresh.url.endswith("/account/password")
        fresh.fill("#current", temporary)
        fresh.fill("#password", NEW_PASSWORD)
        fresh.fill("#confirm", NEW_PASSWORD)
        fresh.get_by_role("button", name="Change password").click()
        fresh.wait_for_load_state()
        assert fresh.url.endswith("/account/"), fresh.inner_text("main")
        fresh.goto(model_server("/history/"))
        assert fresh.url.endswith("/history/")
    finally:
        other.close()
