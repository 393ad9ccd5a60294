"""Upload validation: what an accepted image is. Where its bytes live is ``webapp.storage``'s business.

Validation follows Pillow's security handbook: only an allow-list of formats is parsed, and images
over ``PRISM_MAX_IMAGE_PIXELS`` are refused from their header, before decoding (by default Pillow only
warns between 1x and 2x its ``MAX_IMAGE_PIXELS``, and a 12 KB PNG can decode to 100 Mpx).
The file is fully decoded before it is accepted, so truncated or fake images are refused up front.
Stored objects are named by their SHA-256 (``storage_key``), so the client's filename never reaches
a path and identical uploads are stored once.

A DICOM file (``webapp.dicom``) is accepted too: what is stored is its de-identified copy, never the
upload, and its file name is dropped (a DICOM file is often named after the patient).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

from flask_babel import lazy_gettext as _l
from PIL import Image, ImageOps, UnidentifiedImageError

from .dicom import DicomRejected, looks_like_dicom, read_dicom, read_stored

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
MIME_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "DICOM": "application/dicom",
}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif", "DICOM": "dcm"}


def human_size(num_bytes: int) -> str:
    """1536 -> '1.5 KB', 10485760 -> '10 MB' (binary units, as file managers show them)."""
    for unit in ("bytes", "KB", "MB"):
        if num_bytes < 1024 or unit == "MB":
            return f"{num_bytes:g} {unit}" if unit == "bytes" else f"{num_bytes:.3g} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


class UploadRejected(ValueError):
    """The upload is not an acceptable image; the message is safe to show to the user.

    The message is a lazy string: ``str(exc)`` renders it in the current request's language, and in
    English outside a request or in the JSON API.
    """


@dataclass(frozen=True)
class ValidatedImage:
    data: bytes
    sha256: str
    format: str
    width: int
    height: int
    filename: str | None
    # DICOM only: frames, the file's window, and the non-identifying metadata (``webapp.dicom``).
    meta: dict[str, Any] | None = None

    @property
    def storage_key(self) -> str:
        return image_key(self.sha256, self.format)

    def to_rgb(self) -> Image.Image:
        """A decoded RGB copy, upright per EXIF orientation, for the model service."""
        return decode_rgb(self.data, self.format)


def image_key(sha256: str, image_format: str) -> str:
    """The storage key of an image: ``<sha[:2]>/<sha>.<ext>`` (the layout v1 used on disk)."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 hex digest")
    return f"{sha256[:2]}/{sha256}.{EXTENSIONS[image_format]}"


def decode_rgb(data: bytes, image_format: str) -> Image.Image:
    """A decoded RGB copy of stored, already validated bytes, upright per EXIF orientation (a DICOM
    file: its first frame in the file's own window)."""
    if image_format == "DICOM":
        return read_stored(data).render(0).convert("RGB")
    with Image.open(io.BytesIO(data), formats=[image_format]) as image:
        image.seek(0)
        return ImageOps.exif_transpose(image).convert("RGB")


def validate_image(data: bytes, filename: str | None, *, max_bytes: int, max_pixels: int) -> ValidatedImage:
    if not data:
        raise UploadRejected(_l("The uploaded file is empty."))
    if len(data) > max_bytes:
        raise UploadRejected(_l("The image is larger than %(size)s.", size=human_size(max_bytes)))
    if looks_like_dicom(data):
        return _validate_dicom(data, max_pixels)
    try:
        # Image.open reads only the header, so the pixel count is checked before any decoding.
        # Pillow's global MAX_IMAGE_PIXELS is left alone (mutating it is not thread-safe); our cap
        # is lower than its warning threshold, so its warning never decides anything here.
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            image_format = image.format
            width, height = image.size
            if width * height > max_pixels:
                raise UploadRejected(_l("The image has too many pixels (possible decompression bomb)."))
            image.load()  # full decode: catches truncated and malformed files
    except UploadRejected:
        raise
    except Image.DecompressionBombError:
        raise UploadRejected(_l("The image has too many pixels (possible decompression bomb).")) from None
    except UnidentifiedImageError:
        raise UploadRejected(
            _l("The file is not a supported image (DICOM, PNG, JPEG, WebP, GIF, BMP or TIFF).")
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UploadRejected(_l("The image could not be read (%(error)s).", error=type(exc).__name__)) from None
    if image_format not in ALLOWED_FORMATS:
        raise UploadRejected(_l("The file is not a supported image."))
    clean_name = display_filename(filename)
    return ValidatedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        format=image_format,
        width=width,
        height=height,
        filename=clean_name,
    )


def _validate_dicom(data: bytes, max_pixels: int) -> ValidatedImage:
    try:
        study = read_dicom(data, max_pixels=max_pixels)
    except DicomRejected as exc:
        raise UploadRejected(str(exc)) from None
    stored = study.deidentified_bytes
    return ValidatedImage(
        data=stored,
        sha256=hashlib.sha256(stored).hexdigest(),
        format="DICOM",
        width=study.columns,
        height=study.rows,
        filename=None,
        meta={
            "frames": study.frames,
            "window_center": study.window_center,
            "window_width": study.window_width,
            "may_contain_burned_in_text": study.may_contain_burned_in_text,
            "metadata": study.metadata,
        },
    )


def display_filename(filename: str | None) -> str | None:
    """The client's file name, kept for display only (it never becomes a path; files are named by
    hash). Directory parts and control characters are dropped; non-ASCII names such as 作业.png stay."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return cleaned[:255] or None
