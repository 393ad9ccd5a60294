"""Where uploaded bytes live: one small interface, picked by ``PRISM_STORAGE_URL`` (CTFd's UPLOADERS pattern).

Views, jobs and exports only ever name objects by key (``uploads.image_key``: content hash plus
extension) and go through ``get_storage()``; none of them builds a file path. The URL's scheme picks
the backend: unset keeps objects under ``UPLOAD_FOLDER``, ``file:///abs/dir`` under that directory,
``s3://bucket/prefix`` in an S3-compatible bucket reached with the ``PRISM_S3_*`` settings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from flask import Flask, current_app

from .base import ObjectMissing, Storage, StorageUnavailable
from .local import LocalStorage

__all__ = ["ObjectMissing", "Storage", "StorageUnavailable", "get_storage", "init_app"]

EXTENSION_KEY = "prism_storage"


def _local(app: Flask, url: SplitResult) -> Storage:
    path = unquote(url.path)
    if url.netloc not in {"", "localhost"} or not Path(path).is_absolute():
        raise RuntimeError(f"PRISM_STORAGE_URL={url.geturl()!r}: a file URL names an absolute directory, file:///dir")
    return LocalStorage(path)


def _s3(app: Flask, url: SplitResult) -> Storage:
    # Imported here so that a local-storage process never pays for importing boto3.
    from .s3 import S3Storage, make_client

    if not url.netloc:
        raise RuntimeError(f"PRISM_STORAGE_URL={url.geturl()!r}: name the bucket, s3://bucket/prefix")
    client = make_client(
        endpoint_url=app.config["PRISM_S3_ENDPOINT_URL"],
        region=app.config["PRISM_S3_REGION"],
        access_key_id=app.config["PRISM_S3_ACCESS_KEY_ID"],
        secret_access_key=app.config["PRISM_S3_SECRET_ACCESS_KEY"],
    )
    return S3Storage(url.netloc, unquote(url.path), client)


BACKENDS: dict[str, Callable[[Flask, SplitResult], Storage]] = {"file": _local, "s3": _s3}


def init_app(app: Flask) -> None:
    """Build the backend named by ``PRISM_STORAGE_URL``; refuses a URL it cannot use, before any request."""
    # LocalStorage resolves its root the same way, so a relative UPLOAD_FOLDER means what it always did.
    setting = app.config["PRISM_STORAGE_URL"] or Path(app.config["UPLOAD_FOLDER"]).resolve().as_uri()
    url = urlsplit(setting)
    if url.scheme not in BACKENDS:
        raise RuntimeError(
            f"PRISM_STORAGE_URL={setting!r}: use {' or '.join(f'{scheme}://' for scheme in BACKENDS)}, "
            "or leave it unset for UPLOAD_FOLDER"
        )
    app.extensions[EXTENSION_KEY] = BACKENDS[url.scheme](app, url)


def get_storage() -> Storage:
    return current_app.extensions[EXTENSION_KEY]
