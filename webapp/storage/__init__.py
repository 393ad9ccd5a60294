"""Where uploaded bytes live: one small interface, picked by ``PRISM_STORAGE`` (CTFd's UPLOADERS pattern).

Views, jobs and exports only ever name objects by key (``uploads.image_key``: content hash plus
extension) and go through ``get_storage()``; none of them builds a file path. ``local`` keeps
objects under ``UPLOAD_FOLDER``; an S3-compatible backend is the scale-out step's to add here.
"""

from __future__ import annotations

from flask import Flask, current_app

from .base import ObjectMissing, Storage
from .local import LocalStorage

__all__ = ["ObjectMissing", "Storage", "get_storage", "init_app"]

EXTENSION_KEY = "prism_storage"


BACKENDS = {"local": lambda app: LocalStorage(app.config["UPLOAD_FOLDER"])}


def init_app(app: Flask) -> None:
    name = app.config["PRISM_STORAGE"]
    if name not in BACKENDS:
        raise RuntimeError(f"PRISM_STORAGE={name!r}: choose one of {', '.join(BACKENDS)}")
    app.extensions[EXTENSION_KEY] = BACKENDS[name](app)


def get_storage() -> Storage:
    return current_app.extensions[EXTENSION_KEY]
