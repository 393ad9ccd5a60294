"""The markup the responsive header and the upload area rely on, per scenario, rendered server-side.

The browser behaviour itself (menu folding, previews, checks before upload) is in
tests/browser/test_frontend_smoke.py; these tests pin the attributes that behaviour and the no-JS
fallback need.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import client_for, make_token, record_id
from tests.test_education import create_assignment, create_rubric, rubric_ids


class _Tags(HTMLParser):
    """Every start tag of a page as (tag, attributes), in document order."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def file_inputs(html: str) -> list[dict[str, str | None]]:
    return [attrs for tag, attrs in tags(html) if tag == "input" and attrs.get("type") == "file"]


def dropzone(html: str) -> dict[str, str | None]:
    [zone] = [attrs for _, attrs in tags(html) if "data-dropzone" in attrs]
    return zone


@pytest.mark.parametrize(
    ("scenario", "role", "camera"),
    [("service", "user", False), ("medical", "clinician", False), ("education", "teacher", True)],
)
def test_scenario_upload_area_markup(app, scenario, role, camera):
    """Each scenario form has one drop zone whose main input takes several files (a batch); only
    education's photos get a camera input, and no input offering DICOM has `capture`."""
    html = client_for(app, "alice", role).get(f"/{scenario}/").get_data(as_text=True)
    zone = dropzone(html)
    for key in ("data-msg-too-big", "data-msg-type", "data-msg-too-many", "data-remove-label", "data-progress-label"):
        assert zone[key], key
    assert "{name}" in zone["data-msg-too-big"] and "{max}" in zone["data-msg-too-big"]
    main, *others = file_inputs(html)
    assert main["name"] == "image" and "multiple" in main and "capture" not in main
    # The limits prism.js checks before sending, from the config and the server's list of types.
    assert main["data-max-bytes"] == str(app.config["PRISM_MAX_IMAGE_BYTES"])
    assert main["data-max-files"] == str(app.config["PRISM_MAX_BATCH_FILES"])
    assert "image/png" in main["data-accept"].split(",")
    if camera:
        [photo] = others
        assert (photo["name"], photo["capture"], photo["accept"]) == ("image", "environment", "image/*")
        assert "multiple" not in photo
    else:
        assert others == []
    for attrs in file_inputs(html):
        assert not ("capture" in attrs and "dicom" in (attrs.get("accept") or "")), attrs
    if scenario == "medical":
        assert "application/dicom" in main["accept"]


def test_education_batch_upload_takes_many_photos_and_the_camera(app):
    """The assignment page's homework upload takes several files and offers the camera, both named 'images'."""
    teacher = client_for(app, "tina", "teacher")
    assert create_rubric(teacher).status_code == 302
    assignment_id = record_id(create_assignment(teacher, rubric_ids(app)[0]))
    html = teacher.get(f"/education/assignments/{assignment_id}").get_data(as_text=True)
    assert dropzone(html)["data-msg-too-many"]
    main, photo = file_inputs(html)
    assert main["name"] == photo["name"] == "images"
    assert main["data-max-files"] == str(app.config["PRISM_MAX_BATCH_FILES"])
    assert "multiple" in main and "capture" not in main
    assert photo["capture"] == "environment"


def test_paste_hint_names_the_keys_only_inside_its_device_dependent_span(app):
    """'Ctrl+V' appears only in the hint CSS shows where a keyboard is likely, with the Mac keys beside it."""
    html = client_for(app, "alice", "user").get("/service/").get_data(as_text=True)
    assert html.count("Ctrl+V") == 1
    assert '<span class="hint-paste" data-mac-keys="⌘V">Or paste an image (Ctrl+V).</span>' in html


@pytest.mark.parametrize("signed_in", [False, True])
def test_header_menu_toggle_and_nav_without_js(app, client, signed_in):
    """The header has a Menu button controlling the menu (hidden until prism.js shows it); the menu
    itself is never hidden in the markup, so every link is reachable without JS."""
    browser = client_for(app, "root", "admin") if signed_in else client
    html = browser.get("/").get_data(as_text=True)
    found = tags(html)
    [toggle] = [attrs for tag, attrs in found if tag == "button" and "nav-toggle" in (attrs.get("class") or "")]
    assert toggle["aria-controls"] == "site-menu" and toggle["aria-expanded"] == "false"
    assert "hidden" in toggle and toggle["type"] == "button"
    [menu] = [attrs for _, attrs in found if attrs.get("id") == "site-menu"]
    assert "hidden" not in menu
    start = html.index('id="site-menu"')
    menu_html = html[start : html.index("</nav>", start)]
    expected = ["/history/", "/admin/", "/account", "/lang/zh"] if signed_in else ["/login", "/register", "/lang/zh"]
    for href in expected:
        assert f'href="{href}' in menu_html, href


def test_account_tokens_table_scrolls_in_its_own_labelled_region(app):
    """The API-token table sits in a focusable, labelled .table-scroll region, so it never widens the page."""
    user = client_for(app, "alice", "user")
    make_token(app, "alice", name="报表脚本")
    html = user.get("/account/").get_data(as_text=True)
    [region] = [attrs for _, attrs in tags(html) if "table-scroll" in (attrs.get("class") or "").split()]
    assert region["tabindex"] == "0" and region["role"] == "region" and region["aria-label"]
    assert html.index("table-scroll") < html.index("报表脚本")


def _luminance(colour: str) -> float:
    if len(colour) == 4:  # #rgb
        colour = "#" + "".join(c * 2 for c in colour[1:])
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two #rgb / #rrggbb colours."""
    light, dark = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_colour_tokens_meet_wcag_aa():
    """Text tokens reach 4.5:1 on the grounds they are used on; control borders and focus rings 3:1."""
    css = (Path(__file__).parent.parent / "static" / "css" / "prism.css").read_text()
    root = css[css.index(":root {") : css.index("}", css.index(":root {"))]
    tokens = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3})\b", root)) | {"white": "#ffffff"}
    grounds = ["bg", "surface", "surface-muted", "surface-tint"]
    text = [(fg, bg) for fg in ("text", "muted", "accent", "danger", "ok") for bg in grounds]
    text += [("accent", "accent-soft"), ("danger", "danger-soft"), ("ok", "ok-soft"), ("info", "info-soft")]
    text += [("white", "accent"), ("white", "accent-dark"), ("white", "danger"), ("white", "ok")]
    text += [("header-text", "header-bg"), ("focus-on-dark", "header-bg")]
    for fg, bg in text:
        assert contrast(tokens[fg], tokens[bg]) >= 4.5, (fg, bg)
    for line, bg in [("border-strong", ground) for ground in grounds] + [("focus", g) for g in grounds]:
        assert contrast(tokens[line], tokens[bg]) >= 3, (line, bg)
