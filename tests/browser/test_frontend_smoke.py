"""The responsive layout, the header menu and the upload area in a real browser (headless Chromium).

At 360 and 390 px (phones) and 1280 px (a laptop), in English and Chinese: no main page is wider than
the window; the header folds its menu behind a button on the phone and opens it, and the upload area
shows a dropped file with a preview that can be removed, refuses an oversized file before anything is
sent, and sends a good one with progress. Screenshots go to $PRISM_SCREENSHOTS (else tmp_path).
"""

from __future__ import annotations

import pytest

from tests.browser.helpers import DESKTOP, DROP, PHONE, SMALLEST, b64, page_width_overflow, visit_pages
from tests.conftest import png_bytes

# (account, path): the main pages, each seen by an account that may open it (ids: tests/browser/conftest.py).
PAGES = [
    (None, "/"),
    (None, "/login"),
    (None, "/register"),
    ("uma", "/service/"),
    ("clara", "/medical/"),
    ("tina", "/education/"),
    ("uma", "/history/"),
    ("uma", "/history/2"),  # a record: Chinese text, score bars
    ("uma", "/account/"),
    ("root", "/"),
    ("root", "/admin/"),
    ("root", "/admin/users"),
    ("root", "/admin/analyses"),
    ("root", "/admin/audit"),
]

# Pages of daily work beyond the main ones, checked on the smallest phone.
WORK_PAGES = [
    ("uma", "/service-desk/"),
    ("uma", "/review/"),
    ("tina", "/education/rubrics/"),
    ("tina", "/education/assignments/"),
    ("tina", "/education/assignments/1"),
    ("tina", "/education/assignments/1/submissions/1"),
    ("tina", "/education/assignments/1/summary"),
    ("tina", "/batches/1"),
    ("tina", "/review/education/"),
]


def pages_wider_than_the_window(signed_in, live_server, screenshots, pages, width, lang) -> dict:
    """{(account, path): excess px} for the pages wider than a ``width`` px window; saves a screenshot of each."""
    too_wide = {}

    def check(account, path, page):
        if overflow := page_width_overflow(page):
            too_wide[(account, path)] = overflow
        name = f"{width}-{lang}-{account or 'anon'}{path.replace('/', '_')}.png"
        page.screenshot(path=str(screenshots / name), full_page=True)

    visit_pages(signed_in, live_server, pages, width, 800, lang, check)
    return too_wide


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("width", [SMALLEST, PHONE, DESKTOP])
def test_no_main_page_is_wider_than_the_window(signed_in, live_server, screenshots, width, lang):
    """None of the main pages scrolls sideways, at any of the widths, in either language."""
    assert pages_wider_than_the_window(signed_in, live_server, screenshots, PAGES, width, lang) == {}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_no_work_page_is_wider_than_a_small_phone(signed_in, live_server, screenshots, lang):
    """The triage, review, assignment, grading, summary and batch pages fit a 360 px phone too."""
    assert pages_wider_than_the_window(signed_in, live_server, screenshots, WORK_PAGES, SMALLEST, lang) == {}


def test_header_menu_folds_on_a_phone_and_opens(signed_in, live_server, screenshots):
    """At 390 px the menu is behind an expanded=false button that opens and closes it; at 1280 px it is open."""
    context = signed_in("root", viewport={"width": PHONE, "height": 800})
    page = context.new_page()
    page.goto(live_server("/"))
    toggle, menu = page.locator(".nav-toggle"), page.locator("#site-menu")
    assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
    assert not menu.is_visible()
    header_height = page.locator(".site-header").bounding_box()["height"]
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    assert page.get_by_role("link", name="Admin").is_visible()
    page.screenshot(path=str(screenshots / "390-menu-open.png"))
    page.keyboard.press("Escape")
    assert toggle.get_attribute("aria-expanded") == "false" and not menu.is_visible()
    page.set_viewport_size({"width": DESKTOP, "height": 800})
    assert not toggle.is_visible() and page.get_by_role("link", name="Admin").is_visible()
    context.close()
    assert header_height <= 72, header_height


def test_header_links_reachable_without_js(signed_in, live_server, screenshots):
    """With JavaScript off the phone header shows no dead button and every menu link is visible."""
    context = signed_in("root", viewport={"width": PHONE, "height": 800}, java_script_enabled=False)
    page = context.new_page()
    page.goto(live_server("/"))
    page.screenshot(path=str(screenshots / "390-no-js-header.png"))
    assert not page.locator(".nav-toggle").is_visible()
    for name in ("History", "Admin", "root"):
        assert page.get_by_role("link", name=name, exact=True).is_visible(), name
    context.close()


@pytest.mark.parametrize("width", [PHONE, DESKTOP])
def test_dropped_file_shows_a_preview_and_can_be_removed(signed_in, live_server, screenshots, width):
    """Dragging over the area highlights it; a dropped image is listed with its preview; Remove
    empties the list and the input."""
    context = signed_in("uma", viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(live_server("/service/"))
    page.dispatch_event("[data-dropzone]", "dragenter")
    zone = page.locator("[data-dropzone]")
    assert "dragover" in zone.get_attribute("class")
    assert zone.evaluate("z => getComputedStyle(z).borderTopStyle") == "solid"
    page.screenshot(path=str(screenshots / f"{width}-dragover.png"))
    page.evaluate(DROP, ["[data-dropzone]", [["receipt.png", "image/png", b64(png_bytes())]]])
    assert "dragover" not in zone.get_attribute("class")
    item = page.locator(".file-item")
    assert item.count() == 1 and item.locator("img.file-preview").is_visible()
    assert "receipt.png" in item.inner_text()
    assert page.evaluate("document.querySelector('#image').files.length") == 1
    assert page_width_overflow(page) == 0
    page.screenshot(path=str(screenshots / f"{width}-dropped.png"), full_page=True)
    page.get_by_role("button", name="Remove receipt.png").click()
    assert page.locator(".file-item").count() == 0
    assert page.evaluate("document.querySelector('#image').files.length") == 0
    context.close()


def test_oversized_file_is_refused_before_any_request(signed_in, live_server, screenshots):
    """A file over data-max-bytes gets the inline message and is not listed, and nothing is posted."""
    context = signed_in("uma", viewport={"width": PHONE, "height": 900})
    page = context.new_page()
    page.goto(live_server("/service/"))
    limit = page.evaluate("document.querySelector('#image').dataset.maxBytes")
    assert int(limit) == live_server.app.config["PRISM_MAX_IMAGE_BYTES"]
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    oversized = png_bytes(size=(400, 400), fmt="BMP")
    assert len(oversized) > int(limit)
    page.evaluate(DROP, ["[data-dropzone]", [["huge.bmp", "image/bmp", b64(oversized)]]])
    message = page.locator("[data-dropzone-message]")
    assert message.is_visible() and "huge.bmp" in message.inner_text()
    assert page.locator(".file-item").count() == 0
    assert page.evaluate("document.querySelector('#image').files.length") == 0
    page.screenshot(path=str(screenshots / "390-oversized.png"), full_page=True)
    context.close()
    assert posts == []


@pytest.mark.parametrize("server_list", [True, False])
def test_wrong_type_is_refused_before_any_request(signed_in, live_server, server_list):
    """A file whose type is not in data-accept (or, without it, the input's accept) gets the inline
    message and is not listed."""
    context = signed_in("uma", viewport={"width": PHONE, "height": 900})
    page = context.new_page()
    page.goto(live_server("/service/"))
    if server_list:
        page.evaluate("document.querySelector('#image').dataset.accept = 'image/png,image/jpeg'")
        refused = ["photo.webp", "image/webp", b64(png_bytes())]
    else:
        page.evaluate("delete document.querySelector('#image').dataset.accept")
        refused = ["notes.pdf", "application/pdf", b64(b"%PDF-1.4")]
    page.evaluate(DROP, ["[data-dropzone]", [refused]])
    assert refused[0] in page.locator("[data-dropzone-message]").inner_text()
    assert page.locator(".file-item").count() == 0
    context.close()


def test_dropped_files_are_sent_with_progress_and_open_the_batch(signed_in, live_server):
    """Two dropped photos on the education form go up by XMLHttpRequest (a progress bar per file) and
    the page becomes the batch page with its confirmation; Back and Forward work as after a plain submit."""
    context = signed_in("tina", viewport={"width": PHONE, "height": 900})
    page = context.new_page()
    page.goto(live_server("/education/"))
    files = [["a.png", "image/png", b64(png_bytes(color=(200, 0, 0)))], ["b.png", "image/png", b64(png_bytes())]]
    page.evaluate(DROP, ["[data-dropzone]", files])
    assert page.locator(".file-item progress").count() == 2
    page.get_by_role("button", name="Analyse").click()
    page.wait_for_function("() => location.pathname.startsWith('/batches/')")
    assert page.get_by_text("2 files queued; each becomes a record of this batch.").is_visible()
    # The new page's own script runs (it marks <html class="js">), so its progress polling works.
    page.wait_for_function("() => document.documentElement.classList.contains('js')")
    # Back returns to the (fresh) form, Forward to the batch, as after a plain submit.
    page.go_back()
    page.wait_for_function("() => location.pathname === '/education/'")
    page.locator("[data-dropzone]").wait_for()
    page.go_forward()
    page.wait_for_function("() => location.pathname.startsWith('/batches/')")
    page.wait_for_function("() => document.querySelector('.records') && !document.querySelector('[data-dropzone]')")
    context.close()


def test_a_refused_upload_comes_back_as_the_form_with_its_error(signed_in, live_server):
    """Sent by XMLHttpRequest, a form the server refuses (two images and a text) replaces the page
    with the re-rendered form and its message, on the same address, as a plain submit would."""
    context = signed_in("uma", viewport={"width": PHONE, "height": 900})
    page = context.new_page()
    page.goto(live_server("/service/"))
    files = [["a.png", "image/png", b64(png_bytes())], ["b.png", "image/png", b64(png_bytes(color=(0, 0, 200)))]]
    page.evaluate(DROP, ["[data-dropzone]", files])
    page.fill("textarea[name=text]", "两张图片和一段文字")
    with page.expect_response(lambda response: response.request.method == "POST") as answer:
        page.get_by_role("button", name="Analyse").click()
    assert answer.value.status == 400
    message = page.get_by_text("Several images make a batch of separate records, which take no text.")
    message.wait_for()
    assert page.url == live_server("/service/")
    assert page.locator("textarea[name=text]").input_value() == "两张图片和一段文字"
    context.close()


@pytest.mark.parametrize("touch", [True, False])
def test_touch_phones_get_the_camera_and_no_paste_hint(signed_in, live_server, screenshots, touch):
    """A touch phone sees "Take a photo" and no "Ctrl+V"; a mouse-and-keyboard browser the reverse."""
    options = {"is_mobile": True, "has_touch": True} if touch else {}
    context = signed_in("tina", viewport={"width": PHONE, "height": 900}, **options)
    page = context.new_page()
    page.goto(live_server("/education/"))
    assert page.locator(".hint-paste").is_visible() is not touch
    assert page.get_by_text("Take a photo").is_visible() is touch
    assert page_width_overflow(page) == 0
    page.screenshot(path=str(screenshots / f"390-education-{'touch' if touch else 'mouse'}.png"))
    context.close()


def test_file_limit_and_replace(signed_in, live_server, tmp_path):
    """Files past data-max-files are left out with the message; Replace swaps one file for another."""
    context = signed_in("tina", viewport={"width": PHONE, "height": 900})
    page = context.new_page()
    page.goto(live_server("/education/"))
    page.evaluate("document.querySelector('#image').dataset.maxFiles = '2'")
    files = [[name, "image/png", b64(png_bytes())] for name in ("一.png", "二.png", "三.png")]
    page.evaluate(DROP, ["[data-dropzone]", files])
    assert page.locator(".file-item").count() == 2
    assert "三.png" in page.locator("[data-dropzone-message]").inner_text()
    replacement = tmp_path / "王芳.png"
    replacement.write_bytes(png_bytes(color=(0, 120, 0)))
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Replace 一.png").click()
    chooser.value.set_files(str(replacement))
    names = page.locator(".file-name").all_inner_texts()
    assert names == ["王芳.png", "二.png"]
    assert page.evaluate("Array.from(document.querySelector('#image').files, f => f.name)") == names
    context.close()
