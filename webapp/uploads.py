"""Upload validation: what an accepted image is. Where its bytes live is ``webapp.storage``'s business.

One pipeline for every route (the web forms, batches, the API), following Pillow's security handbook:
1. only an allow-list of formats is parsed;
2. from the header alone, before any decoding, an image over ``PRISM_MAX_IMAGE_PIXELS`` is refused,
   and so is one whose decoded frame (width x height x bands x bytes per band) would need more
   than ``PRISM_MAX_DECODE_BYTES`` (a 113 KB PNG can decode to 600 MB);
3. decoding holds one of ``PRISM_MAX_CONCURRENT_DECODES`` per-process slots, so 16 bombs sent at
   once decode a few at a time instead of all together;
4. the image is fully decoded (truncated and fake files are refused up front), turned upright per
   its EXIF orientation, and **re-encoded**: a JPEG as JPEG, anything else as PNG. Nothing of the
   upload's bytes is stored: no EXIF (GPS, camera serial), no text chunks, no ICC profile, no
   trailing data (a PNG with a ``<script>`` after IEND, a JPEG with a ``<?php`` comment).
Stored objects are named by the SHA-256 of what is stored (``storage_key``), so the client's
filename never reaches a path and identical uploads are stored once.

A DICOM file (``webapp.dicom``) keeps its own path: what is stored is its de-identified copy, never
the upload, and its file name is dropped (a DICOM file is often named after the patient).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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
JPEG_QUALITY = 95  # a re-encoded photo stays visually the same (homework handwriting, screenshots' text)
DEFAULT_MAX_DECODE_BYTES = 256 * 1024 * 1024
DEFAULT_CONCURRENT_DECODES = 2


def accepted_mime_types() -> str:
    """The media types a file input may offer, comma-separated, for the browser's check before an
    upload (``data-accept``); the server still decides by decoding the bytes."""
    return ",".join(MIME_TYPES.values())


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


# Pillow allocates pixels in blocks of 16 MiB by default. glibc serves allocations under its dynamic
# mmap threshold (up to 32 MiB) from per-thread heaps that it rarely returns, so a worker that once
# decoded big images in many threads kept gigabytes (the finding: 6.2 GB peak, 5.8 GB after). Blocks
# above the threshold are mmapped and handed back to the OS when freed. Only Pillow is affected.
PILLOW_BLOCK_BYTES = 33 * 1024 * 1024
_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


@contextmanager
def decode_slot(limit: int) -> Iterator[None]:
    """Hold one of ``limit`` decoding slots of this process (every thread, every app)."""
    with _slots_lock:
        if not _slots:
            Image.core.set_block_size(PILLOW_BLOCK_BYTES)
        slots = _slots.setdefault(limit, threading.BoundedSemaphore(limit))
    with slots:
        yield


def decoded_bytes(image: Image.Image) -> int:
    """The memory one decoded frame of ``image`` takes, from its header: width x height x bands x
    bytes per band (Pillow keeps 1-bit images a byte per pixel)."""
    mode = image.mode
    per_band = 4 if mode in ("I", "F") else 2 if mode.startswith("I;16") else 1
    return image.width * image.height * len(image.getbands()) * per_band


def decode_rgb(
    data: bytes, image_format: str, *, max_side: int | None = None, concurrent: int = DEFAULT_CONCURRENT_DECODES
) -> Image.Image:
    """A decoded RGB copy of stored, already validated bytes, upright per EXIF orientation (a DICOM
    file: its first frame in the file's own window). With ``max_side``, no larger than the models
    need: a large JPEG is decoded at 1/2, 1/4 or 1/8 scale (``draft``), anything else shrunk after."""
    if image_format == "DICOM":
        with decode_slot(concurrent):
            return read_stored(data).render(0).convert("RGB")
    with Image.open(io.BytesIO(data), formats=[image_format]) as image, decode_slot(concurrent):
        image.seek(0)
        if max_side:
            image.thumbnail((max_side, max_side))  # decodes a JPEG at reduced scale (draft) first
        ImageOps.exif_transpose(image, in_place=True)
        return image.convert("RGB")


def validate_image(
    data: bytes,
    filename: str | None,
    *,
    max_bytes: int,
    max_pixels: int,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    concurrent_decodes: int = DEFAULT_CONCURRENT_DECODES,
) -> ValidatedImage:
    """The upload as it will be stored (re-encoded; see the module docstring), or ``UploadRejected``."""
    if not data:
        raise UploadRejected(_l("The uploaded file is empty."))
    if len(data) > max_bytes:
        raise UploadRejected(_l("The image is larger than %(size)s.", size=human_size(max_bytes)))
    if looks_like_dicom(data):
        with decode_slot(concurrent_decodes):  # its own path (webapp.dicom), the same slots
            return _validate_dicom(data, max_pixels)
    try:
        # Image.open reads only the header, so both caps are checked before any decoding.
        # Pillow's global MAX_IMAGE_PIXELS is left alone (mutating it is not thread-safe); our cap
        # is lower than its warning threshold, so its warning never decides anything here.
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            if image.width * image.height > max_pixels:
                raise UploadRejected(_l("The image has too many pixels (possible decompression bomb)."))
            if (needed := decoded_bytes(image)) > max_decode_bytes:
                raise UploadRejected(
                    _l(
                        "The image would take %(needed)s of memory to open; the limit is %(limit)s.",
                        needed=human_size(needed),
                        limit=human_size(max_decode_bytes),
                    )
                )
            with decode_slot(concurrent_decodes):
                image.load()  # full decode: catches truncated and malformed files
                stored_format, stored, (width, height) = _reencode(image)
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
    return ValidatedImage(
        data=stored,
        sha256=hashlib.sha256(stored).hexdigest(),
        format=stored_format,
        width=width,
        height=height,
        filename=display_filename(filename),
    )


def _reencode(image: Image.Image) -> tuple[str, bytes, tuple[int, int]]:
    """(format, bytes, size) of a fresh encoding of ``image``'s first frame, upright: a JPEG stays JPEG, the
    rest become PNG (alpha kept; 16-bit and float images stretched to 8-bit grey, min to max). No
    metadata is carried over."""
    if image.format not in ALLOWED_FORMATS:
        raise UploadRejected(_l("The file is not a supported image."))
    source_format = image.format
    ImageOps.exif_transpose(image, in_place=True)  # no copy: at 40 Mpx each one is 120 MB
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if source_format == "JPEG":
        stored_format, mode, options = "JPEG", ("L" if image.mode == "L" else "RGB"), {"quality": JPEG_QUALITY}
    else:
        stored_format, options = "PNG", {}
        mode = "RGBA" if has_alpha else "L" if image.mode in ("1", "L") else "RGB"
    clean = image if image.mode == mode else image.convert(mode)
    clean.info = {}  # some encoders fall back to .info (ICC profile, EXIF, text): none of it is kept
    encoded = io.BytesIO()
    clean.save(encoded, stored_format, **options)
    return stored_format, encoded.getvalue(), clean.size


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image as 8-bit grey, its darkest value black and its brightest
    white (Pillow's own conversion clips everything above 255 to white)."""
    values = image.convert("F")
    low, high = values.getextrema()
    scale = 255.0 / (high - low) if high > low else 0.0
    return values.point(lambda value: (value - low) * scale).convert("L")


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
