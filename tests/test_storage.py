"""Upload validation (uploads.validate_image) and content-addressed storage (storage.LocalStorage)."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from tests.conftest import client_for, png_bytes, submit
from webapp.extensions import db
from webapp.models import Analysis
from webapp.storage import ObjectMissing
from webapp.storage import local as local_storage
from webapp.storage.local import LocalStorage
from webapp.uploads import UploadRejected, display_filename, image_key, validate_image

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 40_000_000}


def encode(fmt: str, size=(32, 24), mode="RGB", **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (120, 60, 30) if mode == "RGB" else 1).save(buffer, fmt, **save_args)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height, all zeros: a few KB that would decode to width*height pixels.

    Built by streaming zero rows through zlib, so the test itself never holds the pixels either.
    """
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    rows_per_block = 256
    block = row * rows_per_block
    idat = bytearray()
    for _ in range(height // rows_per_block):
        idat += compressor.compress(block)
    idat += compressor.compress(row * (height % rows_per_block))
    idat += compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(idat)) + _chunk(b"IEND", b"")


@pytest.fixture
def decode_spy(monkeypatch):
    """Records every attempt to decode pixels (ImageFile.load), so tests can prove none happened."""
    calls = []
    original = ImageFile.ImageFile.load

    def spy(self):
        if self.tile:  # pixels still to decode (a loaded image has none; load() then returns at once)
            calls.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_allowed_formats_are_accepted(fmt):
    """PNG, JPEG, WebP, GIF, BMP and TIFF validate; what is kept is a fresh encoding (a JPEG as JPEG,
    the rest as PNG) of the same pixels, named by its own SHA-256."""
    data = encode(fmt, size=(33, 21))
    image = validate_image(data, f"pic.{fmt.lower()}", **LIMITS)
    stored_format = "JPEG" if fmt == "JPEG" else "PNG"
    assert (image.format, image.width, image.height) == (stored_format, 33, 21)
    assert image.sha256 == hashlib.sha256(image.data).hexdigest()
    with Image.open(io.BytesIO(image.data)) as stored, Image.open(io.BytesIO(data)) as original:
        assert stored.format == stored_format
        if fmt not in ("JPEG", "WEBP"):  # lossless sources: the very same pixels
            assert list(stored.convert("RGB").getdata()) == list(original.convert("RGB").getdata())
    assert image.to_rgb().mode == "RGB" and image.to_rgb().size == (33, 21)


def test_to_rgb_applies_exif_orientation():
    """The EXIF orientation is applied once, at upload: what is stored is upright and has no EXIF."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode("JPEG", size=(40, 20), exif=exif.tobytes())
    image = validate_image(data, "phone.jpg", **LIMITS)
    assert (image.width, image.height) == (20, 40)  # as displayed
    assert image.to_rgb().size == (20, 40)
    with Image.open(io.BytesIO(image.data)) as stored:
        assert stored.size == (20, 40) and not stored.getexif()


def test_valid_image_is_fully_decoded(decode_spy):
    """Accepted images are decoded in full once (the spy used below sees decoding when it happens)."""
    validate_image(png_bytes(size=(64, 48)), "ok.png", **LIMITS)
    assert decode_spy == [(64, 48)]


def test_empty_file_is_rejected():
    """Zero bytes are rejected with a clear message."""
    with pytest.raises(UploadRejected, match="empty"):
        validate_image(b"", "x.png", **LIMITS)


def test_file_over_byte_limit_is_rejected():
    """A file over max_bytes is rejected before parsing."""
    with pytest.raises(UploadRejected, match="larger than"):
        validate_image(png_bytes(), "x.png", max_bytes=100, max_pixels=10**6)


@pytest.mark.parametrize(
    "data",
    [
        b"Dear customer, this is a text file pretending to be a PNG.\n",
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><foreignObject>'
        b"<html><script>alert(2)</script></html></foreignObject></svg>",
        b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
        b"GIF89a/*<script>alert(1)</script>*/",
        b"\x89PNG\r\n\x1a\n",
    ],
    ids=["text", "svg-html", "html", "gif-js-polyglot", "png-signature-only"],
)
def test_non_images_are_rejected(data, decode_spy):
    """Text, SVG/HTML and polyglot stubs named .png are rejected without decoding anything."""
    with pytest.raises(UploadRejected):
        validate_image(data, "innocent.png", **LIMITS)
    assert decode_spy == []


def test_truncated_png_is_rejected():
    """A PNG cut off mid-stream fails the full decode and is rejected."""
    noisy = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    buffer = io.BytesIO()
    noisy.save(buffer, "PNG")
    data = buffer.getvalue()
    with pytest.raises(UploadRejected, match="could not be read"):
        validate_image(data[: len(data) * 2 // 3], "cut.png", **LIMITS)


def test_decompression_bomb_is_rejected_before_decoding(decode_spy):
    """A tiny PNG declaring 20000x20000 pixels is refused from its header; no pixel buffer is allocated."""
    data = bomb_png(20000, 20000)
    assert len(data) < 100 * 1024
    with pytest.raises(UploadRejected, match="too many pixels"):
        validate_image(data, "bomb.png", **LIMITS)
    assert decode_spy == []


def test_bomb_below_pillows_own_limit_is_still_rejected(decode_spy):
    """A 48 Mpx image (over our cap, under Pillow's warning threshold) is refused by our own header check."""
    data = bomb_png(8000, 6000)
    assert 8000 * 6000 < Image.MAX_IMAGE_PIXELS
    with pytest.raises(UploadRejected, match="too many pixels"):
        validate_image(data, "bomb.png", **LIMITS)
    assert decode_spy == []


def test_pixel_cap_is_configurable():
    """Any image with more pixels than max_pixels is rejected, however few bytes it has."""
    with pytest.raises(UploadRejected, match="too many pixels"):
        validate_image(png_bytes(size=(64, 48)), "x.png", max_bytes=10**6, max_pixels=64 * 48 - 1)
    assert validate_image(png_bytes(size=(64, 48)), "x.png", max_bytes=10**6, max_pixels=64 * 48).width == 64


def test_formats_outside_the_allow_list_are_rejected(decode_spy):
    """Formats Pillow can read but Prism does not allow (PPM, ICO, TGA) are refused unparsed."""
    samples = {fmt: encode(fmt) for fmt in ("PPM", "ICO", "TGA")}
    for fmt, data in samples.items():
        assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would read it
    decode_spy.clear()
    for fmt, data in samples.items():
        with pytest.raises(UploadRejected, match="not a supported image"):
            validate_image(data, f"x.{fmt.lower()}", **LIMITS)
    assert decode_spy == []


def test_eps_and_pdf_are_not_accepted(monkeypatch):
    """EPS and PDF are never handed to their Pillow plugins (Ghostscript, known CVEs)."""
    from PIL import EpsImagePlugin

    def forbidden(*args, **kwargs):
        raise AssertionError("the EPS plugin was consulted")

    monkeypatch.setattr(EpsImagePlugin, "_accept", forbidden)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\n%%EOF\n"
    pdf = encode("PDF")
    assert pdf.startswith(b"%PDF")
    for data in (eps, pdf):
        with pytest.raises(UploadRejected, match="not a supported image"):
            validate_image(data, "doc.png", **LIMITS)


@pytest.mark.parametrize(
    "given, shown",
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.png", "evil.png"),
        ("/abs/path/pic.png", "pic.png"),
        ("作业.png", "作业.png"),
        ("bad\r\nname\x00.png", "badname.png"),
        ("", None),
        (None, None),
        ("../", None),
        ("a" * 300 + ".png", "a" * 255),
    ],
)
def test_display_filename(given, shown):
    """Display names drop directories and control characters, keep non-ASCII, and are capped at 255."""
    assert display_filename(given) == shown


def test_stored_name_is_the_hash_not_the_client_name(tmp_path):
    """A traversal filename never becomes a path: the object lands at <root>/<sha[:2]>/<sha>.<ext>."""
    root = tmp_path / "uploads"
    image = validate_image(png_bytes(), "../../etc/passwd", **LIMITS)
    LocalStorage(root).put(image.storage_key, image.data)
    path = root / image.sha256[:2] / f"{image.sha256}.png"
    assert path.read_bytes() == image.data
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [path]
    assert image.filename == "passwd"


@pytest.mark.parametrize(
    "digest",
    ["../" * 21 + "a", "A" * 64, "g" * 64, "a" * 63, "a" * 65, "a" * 62 + "/x", ""],
)
def test_image_key_rejects_non_hex(digest):
    """image_key accepts only a 64-character lowercase hex digest."""
    with pytest.raises(ValueError):
        image_key(digest, "PNG")


@pytest.mark.parametrize("key", ["../outside.png", "/etc/passwd", "ab/../../x"])
def test_local_storage_refuses_keys_that_leave_its_root(tmp_path, key):
    """No key can make LocalStorage read or write outside its directory."""
    store = LocalStorage(tmp_path / "root")
    with pytest.raises(ValueError):
        store.put(key, b"x")
    with pytest.raises(ValueError):
        store.get(key)


def test_put_is_idempotent_and_get_reads_back(tmp_path):
    """Putting the same object twice leaves one file and no temp files; get returns the bytes."""
    store = LocalStorage(tmp_path)
    image = validate_image(png_bytes(), "a.png", **LIMITS)
    store.put(image.storage_key, image.data)
    store.put(image.storage_key, image.data)
    assert store.get(image.storage_key) == image.data and store.exists(image.storage_key)
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1


def test_failed_put_leaves_no_partial_file(tmp_path, monkeypatch):
    """If writing fails midway, neither the final file nor a .upload-* temp file remains."""
    store = LocalStorage(tmp_path)
    image = validate_image(png_bytes(), "a.png", **LIMITS)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_storage.os, "fsync", disk_full)
    with pytest.raises(OSError):
        store.put(image.storage_key, image.data)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    monkeypatch.undo()
    store.put(image.storage_key, image.data)
    assert store.get(image.storage_key) == image.data


def test_delete_is_idempotent_and_get_of_missing_raises(tmp_path):
    """Deleting a stored object removes it; deleting again is a no-op; reading it then is ObjectMissing."""
    store = LocalStorage(tmp_path)
    image = validate_image(png_bytes(), "a.png", **LIMITS)
    store.put(image.storage_key, image.data)
    store.delete(image.storage_key)
    store.delete(image.storage_key)
    assert not store.exists(image.storage_key)
    with pytest.raises(ObjectMissing):
        store.get(image.storage_key)


def test_form_upload_with_traversal_and_chinese_names(app, tmp_path):
    """Through the form, a traversal name is stored by hash and shown as its base name; 作业.png is kept."""
    teacher = client_for(app, "tina", "teacher")
    submit(teacher, "education", text=None, image=png_bytes(color=(5, 5, 5)), filename="../../etc/passwd")
    submit(teacher, "education", text=None, image=png_bytes(color=(6, 6, 6)), filename="作业.png")
    with app.app_context():
        rows = db.session.scalars(db.select(Analysis).order_by(Analysis.id)).all()
        assert [r.image_filename for r in rows] == ["passwd", "作业.png"]
        uploads = Path(app.config["UPLOAD_FOLDER"])
        files = sorted(p for p in uploads.rglob("*") if p.is_file())
        assert sorted(f.name for f in files) == sorted(f"{r.image_sha256}.png" for r in rows)
    assert not (tmp_path / "etc").exists()
    body = teacher.get(f"/history/{rows[1].id}").get_data(as_text=True)
    assert "作业.png" in body


def test_form_rejects_bomb_with_message(app, alice):
    """The decompression bomb uploaded through the form is a 400 with the pixel message, and nothing is stored."""
    response = submit(alice, text=None, image=bomb_png(20000, 20000), filename="bomb.png")
    assert response.status_code == 400
    assert "too many pixels" in response.get_data(as_text=True)
    uploads = Path(app.config["UPLOAD_FOLDER"])
    assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))


def test_png_with_html_trailer_is_only_served_as_an_image(app, alice):
    """A valid PNG with HTML appended is stored verbatim but served as image/png with nosniff, never as HTML."""
    data = png_bytes() + b"<html><script>alert(document.cookie)</script></html>"
    response = submit(alice, text=None, image=data, filename="polyglot.html")
    assert response.status_code == 302
    served = alice.get(response.headers["Location"] + "/image")
    assert served.mimetype == "image/png"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in served.headers["Content-Security-Policy"]
