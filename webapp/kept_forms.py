"""Nothing lost: a form post refused before its view runs is answered with the same form, filled in.

Werkzeug refuses a body over MAX_CONTENT_LENGTH (413) and Flask-WTF an expired or missing CSRF token
(400) in ``before_request``, so the view never sees what was typed, and a bare error page dropped it.
A page that registers a renderer (``keeps_form``) is answered instead with its form holding the text
fields the browser sent (never files, passwords or the old token), a fresh token, the message and
the status. Without a renderer, or for a cross-site post, the plain error page stays.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app, request
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.wsgi import LimitedStream

# A body refused for its size is still read (its files thrown away) up to this many times the limit:
# reading costs only the upload's bandwidth, and a photo a few MB too big is the usual case. Anything
# larger gets the plain 413 without being read.
SALVAGE_LIMIT_FACTOR = 4
_DROPPED_FIELDS = ("csrf_token",)


@dataclass(frozen=True)
class KeptForm:
    formdata: MultiDict  # the text fields as sent, for ``Form(formdata=...)``
    message: str
    field: str | None  # the field the message belongs to, or None for the whole form
    status: int

    def show_on(self, form: FlaskForm) -> None:
        """Show the message under its field, or at the top of the form."""
        target = getattr(form, self.field, None) if self.field else None
        if target is None:
            form.form_errors.append(self.message)
        else:
            target.errors = [*target.errors, self.message]  # a tuple until the form is validated


Renderer = Callable[..., ResponseReturnValue | None]
_RENDERERS: dict[str, Renderer] = {}


def keeps_form(*endpoints: str) -> Callable[[Renderer], Renderer]:
    """Register ``renderer(kept, **view_args)`` for ``endpoints``; it returns the page, or None when it
    cannot show the form to this user (then the plain error page is sent)."""

    def register(renderer: Renderer) -> Renderer:
        for endpoint in endpoints:
            _RENDERERS[endpoint] = renderer
        return renderer

    return register


def kept_form_response(
    status: int, message: str, *, field: str | None = None, formdata: MultiDict | None = None
) -> ResponseReturnValue | None:
    """The form of the page this post came from, filled in again with ``message``; None when there is
    none to show (not a registered page, not a same-site post, or the session checks say no)."""
    from .auth import check_session  # the refusal came ahead of the session checks: run them now

    renderer = _RENDERERS.get(request.endpoint or "")
    if renderer is None or request.method != "POST" or not _same_site() or check_session() is not None:
        return None
    fields = request.form if formdata is None else formdata
    kept = MultiDict(
        (name, value)
        for name, value in fields.items(multi=True)
        if name not in _DROPPED_FIELDS and "password" not in name.lower()
    )
    return renderer(KeptForm(kept, message, field, status), **(request.view_args or {}))


def salvage_oversized() -> tuple[MultiDict, list[int]] | None:
    """(text fields, sizes of the files dropped) of a multipart body refused for its size, read with
    every file thrown away as it streams in; None when it cannot or should not be read."""
    length, limit = request.content_length, current_app.config.get("MAX_CONTENT_LENGTH")
    if length is None or limit is None or length > SALVAGE_LIMIT_FACTOR * limit:
        return None
    if request.mimetype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return None
    sinks: list[_Sink] = []

    def discard(*_args: Any, **_kwargs: Any) -> _Sink:
        sinks.append(_Sink())
        return sinks[-1]

    parser = FormDataParser(
        stream_factory=discard,
        max_form_memory_size=request.max_form_memory_size,  # each text field is still capped
        max_form_parts=request.max_form_parts,
    )
    # request.stream refuses to read past MAX_CONTENT_LENGTH; the raw input, capped at its length, may.
    stream = LimitedStream(request.environ["wsgi.input"], length)
    try:
        _rest, form, _files = parser.parse(stream, request.mimetype, length, request.mimetype_params)
    except (RequestEntityTooLarge, ValueError):
        return None
    return form, [sink.size for sink in sinks]


class _Sink(io.BytesIO):
    """A file part's destination that keeps nothing but its size."""

    size = 0

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)


def _same_site() -> bool:
    """Whether the browser says the post came from this site: a forged cross-site post must not come
    back as a form filled in with the forger's text and a valid token."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == request.host_url.rstrip("/")
