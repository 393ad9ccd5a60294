"""Forms are usable with a screen reader: every field is labelled, and ARIA attributes carry real values."""

from __future__ import annotations

import re

import pytest

from tests.conftest import client_for, csrf_token, png_bytes, submit

_INPUT = re.compile(r"<(input|select|textarea)\b([^>]*)>")


def assert_fields_labelled(html: str) -> None:
    """Each visible field has a <label for=...> or sits inside a <label>; no attribute renders as 'None'."""
    assert '="None"' not in html
    fields = [attrs for _, attrs in _INPUT.findall(html) if 'type="hidden"' not in attrs]
    assert fields
    for attrs in fields:
        field_id = re.search(r'id="([^"]+)"', attrs).group(1)
        wrapped = re.search(rf'<label[^>]*>\s*<input[^>]*id="{field_id}"', html)
        assert f'for="{field_id}"' in html or wrapped, f"no label for #{field_id}"


def assert_described_by_existing_ids(html: str) -> None:
    """The page describes some field, and every id named in an aria-describedby exists on it."""
    described = re.findall(r'aria-describedby="([^"]*)"', html)
    assert described, "no field on the page has an aria-describedby"
    for value in described:
        for ref in value.split():
            assert f'id="{ref}"' in html, f"aria-describedby points at missing #{ref}"


@pytest.mark.parametrize("url", ["/login", "/register"])
def test_fields_have_labels_and_no_placeholder_aria_values(client, url):
    """Each visible field on the sign-in and sign-up forms has a label; no attribute renders as 'None'."""
    assert_fields_labelled(client.get(url).get_data(as_text=True))


@pytest.mark.parametrize(
    ("scenario", "role"), [("service", "user"), ("medical", "clinician"), ("education", "teacher")]
)
def test_scenario_form_fields_are_labelled(app, scenario, role):
    """The scenario form's file and text fields are labelled and described by help texts that exist."""
    html = client_for(app, "alice", role).get(f"/{scenario}/").get_data(as_text=True)
    assert_fields_labelled(html)
    assert_described_by_existing_ids(html)
    file_input = re.search(r'<input[^>]*type="file"[^>]*>', html).group(0)
    assert 'aria-describedby="image-help"' in file_input


def test_record_page_review_form_is_labelled(alice):
    """On a record page, the correction field and comment box of each review form are labelled."""
    location = submit(alice, text="Thanks, great service!", image=png_bytes()).headers["Location"]
    html = alice.get(location).get_data(as_text=True)
    # one form per prediction: ocr, caption, sentiment, category, reply, fusion, agreement
    assert html.count('class="review-form"') == 7
    assert_fields_labelled(html)
    assert re.search(r"<legend>\s*Your decision\s*</legend>", html)
    buttons = re.findall(r'<button type="submit" name="decision" value="(\w+)"[^>]*>([^<]+)</button>', html)
    assert [value for value, _ in buttons] == ["accept", "correct", "reject"] * 7
    assert all(label.strip() for _, label in buttons)


def test_invalid_field_is_marked_and_points_at_its_error(client):
    """After a failed submit the field says aria-invalid and is described by its error list."""
    response = client.post(
        "/register",
        data={"username": "x", "password": "short", "confirm": "short", "csrf_token": csrf_token(client, "/register")},
    )
    html = response.get_data(as_text=True)
    username = re.search(r'<input[^>]*id="username"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in username
    assert "username-errors" in username and 'id="username-errors"' in html


def test_rejected_upload_marks_the_image_field(alice):
    """A rejected upload marks the file input aria-invalid and describes it by its error list."""
    response = submit(alice, text="hello", image=b"not an image", filename="x.png")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    file_input = re.search(r'<input[^>]*type="file"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in file_input
    assert "image-errors" in file_input and 'id="image-errors"' in html
    assert_described_by_existing_ids(html)
