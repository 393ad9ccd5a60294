"""The explanation panel in a real browser: Explain, then the caption's words switch the heatmap on
hover and focus (aria-pressed follows), without JS the whole caption's map shows, and axe finds nothing
serious on the page."""

from __future__ import annotations

import pytest

from tests.browser.conftest import serving, sign_in
from tests.browser.test_axe import blocking_violations
from tests.conftest import login, make_app, make_user, png_bytes, record_id, submit


@pytest.fixture
def explained(tmp_path):
    """A server holding uma's service-desk record with a screenshot, not yet explained."""
    app = make_app(tmp_path, PRISM_RATELIMIT_ENABLED=False)
    make_user(app, "uma")
    client = app.test_client()
    login(client, "uma")
    record = record_id(submit(client, text="Great help, but the refund is late.", image=png_bytes((96, 64))))
    with serving(app, "explain-server") as server:
        yield server, record


def test_words_switch_the_overlay_and_the_page_passes_axe(browser, explained):
    """Clicking Explain shows the panel; hovering or focusing a word shows its map and presses it."""
    server, record = explained
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, server, "uma")
    page.goto(server(f"/history/{record}"))
    page.click("#explanation button[type=submit]")
    page.wait_for_load_state()
    overlay = page.locator(f"#explain-overlay-{record}")
    overall = overlay.get_attribute("src")
    assert overall.endswith(f"/history/{record}/explanation/overlay.png")
    assert page.evaluate(f"document.getElementById('explain-overlay-{record}').naturalWidth") > 0
    words = page.locator(".explain-word")
    assert words.count() >= 2
    words.nth(1).hover()
    assert overlay.get_attribute("src").endswith("overlay.png?word=1")
    assert (
        words.nth(1).get_attribute("aria-pressed") == "true" and words.nth(0).get_attribute("aria-pressed") == "false"
    )
    words.nth(0).focus()
    assert overlay.get_attribute("src").endswith("overlay.png?word=0")
    page.locator("h1").hover()
    page.locator("body").click(position={"x": 1, "y": 1})
    assert overlay.get_attribute("src") == overall
    assert page.locator("mark.attr").count() >= 1
    assert blocking_violations(page) == []
    context.close()


def test_without_javascript_the_whole_caption_map_shows(browser, explained):
    """With JS off the panel still shows the overall overlay, the words and the highlighted text."""
    server, record = explained
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, server, "uma")
    page.goto(server(f"/history/{record}"))
    page.click("#explanation button[type=submit]")
    page.wait_for_load_state()
    assert page.locator(f"#explain-overlay-{record}").get_attribute("src").endswith("/explanation/overlay.png")
    assert page.locator(".explain-word").count() >= 2 and page.locator("mark.attr").count() >= 1
    context.close()
