"""axe-core on every page at 1280 px and 390 px, in English and Chinese: no serious or critical
accessibility violation, and no page wider than the window.

axe-core (tests/browser/vendor, with its hash) is evaluated into each page through the DevTools
protocol, so Prism's Content-Security-Policy stays as it is. A screenshot of each page goes to
$PRISM_SCREENSHOTS (else tmp_path).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.helpers import DESKTOP, PHONE, page_width_overflow, visit_pages
from tests.browser.test_frontend_smoke import PAGES, WORK_PAGES

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING = {"serious", "critical"}

# Pages beyond the main and work pages: every other page a signed-in person or an admin opens.
MORE_PAGES = [
    ("uma", "/dashboard"),
    ("uma", "/docs/api"),
    ("uma", "/account/password"),
    ("uma", "/account/two-step"),
    ("uma", "/history/1"),
    ("uma", "/review/service/"),
    ("root", "/service-desk/categories"),
    ("clara", "/history/3"),
    ("tina", "/education/rubrics/new"),
    ("tina", "/education/assignments/new"),
    ("root", "/dashboard"),
    ("uma", "/history/?sort=scenario&from=notadate"),  # a refused filter, named above the form
    ("root", "/admin/audit?actor=uma&from=2026-01-01"),
]

EVERY_PAGE = PAGES + WORK_PAGES + MORE_PAGES


def blocking_violations(page) -> list[dict]:
    """axe's serious and critical violations on ``page``, each with its rule, help and first nodes."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {
            "rule": violation["id"],
            "impact": violation["impact"],
            "help": violation["help"],
            "nodes": [node["target"] for node in violation["nodes"][:3]],
        }
        for violation in results["violations"]
        if violation["impact"] in BLOCKING
    ]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("width", [DESKTOP, PHONE])
def test_every_page_passes_axe_and_fits_the_window(signed_in, live_server, screenshots, width, lang):
    """Each page answers 200, has no serious or critical axe violation and is no wider than the window."""
    problems = {}

    def check(account, path, page):
        found = blocking_violations(page)
        if overflow := page_width_overflow(page):
            found.append({"rule": "wider-than-window", "excess_px": overflow})
        if found:
            problems[f"{account or 'anon'} {path}"] = found
        name = f"axe-{width}-{lang}-{account or 'anon'}{path.replace('/', '_')}.png"
        page.screenshot(path=str(screenshots / name), full_page=True)

    visit_pages(signed_in, live_server, EVERY_PAGE, width, 900, lang, check)
    assert problems == {}, json.dumps(problems, ensure_ascii=False, indent=1)


def test_axe_finds_a_real_violation(signed_in, live_server):
    """The check can fail: an image without alt text and an unlabelled field added to a page are
    reported as critical violations."""
    context = signed_in("uma", viewport={"width": DESKTOP, "height": 900})
    try:
        page = context.new_page()
        page.goto(live_server("/service/"))
        page.evaluate(
            "() => { const main = document.querySelector('main');"
            " main.insertAdjacentHTML('beforeend', '<img src=\"/static/img/x.png\"><input type=text>'); }"
        )
        rules = {violation["rule"] for violation in blocking_violations(page)}
    finally:
        context.close()
    assert {"image-alt", "label"} <= rules
