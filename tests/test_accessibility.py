"""Forms are usable with a screen reader: every field is labelled, and ARIA attributes carry real values."""

from __future__ import annotations

import re

import pytest

from tests.conftest import csrf_token

_INPUT = re.compile(r"<(input|select|textarea)\b([^>]*)>")


@pytest.mark.parametrize("url", ["/login", "/register"])
def test_fields_have_labels_and_no_placeholder_aria_values(client, url):
    """Each visible field has a <label for=...> or sits inside a <label>; no attribute renders as 'None'."""
    html = client.get(url).get_data(as_text=True)
    assert '="None"' not in html
    fields = [attrs for _, attrs in _INPUT.findall(html) if 'type="hidden"' not in attrs]
    assert fields
    for attrs in fields:
        field_id = re.search(r'id="([^"]+)"', attrs).group(1)
        wrapped = re.search(rf'<label[^>]*>\s*<input[^>]*id="{field_id}"', html)
        assert f'for="{field_id}"' in html or wrapped, f"no label for #{field_id}"


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
