"""Issue #8: a corpus of hostile and broken inputs replayed through the real routes (web form, batch
upload, JSON API): every malformed file pydicom ships, decompression bombs, truncations, polyglots,
wrong extensions, lone surrogates and huge ids. It reports, and requires: no 5xx, no file without
its record, and peak memory under the uploads' bound."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import pydicom

from tests.conftest import client_for, csrf_token, make_token, png_bytes
from webapp import integrity, ratelimit

PYDICOM_FILES = sorted(p for p in (Path(pydicom.__file__).parent / "data" / "test_files").rglob("*") if p.is_file())


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png(width: int, height: int, bit_depth: int, colour_type: int, bytes_per_row: int) -> bytes:
    """A valid PNG of zero rows, streamed through zlib: tiny on the wire, huge once decoded."""
    row, compressor, idat = b"\0" * (1 + bytes_per_row), zlib.compressobj(9), bytearray()
    for _ in range(height // 256):
        idat += compressor.compress(row * 256)
    idat += compressor.compress(row * (height % 256)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(idat)) + _chunk(b"IEND", b"")


@lru_cache(maxsize=1)
def _corpus() -> tuple[tuple[str, bytes], ...]:
    """Built once per run (the bombs take a moment to compress), shared by both tests."""
    jpeg = png_bytes(fmt="JPEG", size=(64, 48))
    png = png_bytes(size=(64, 48))
    found = [(f"pydicom/{path.name}", path.read_bytes()) for path in PYDICOM_FILES]
    found += [
        ("bomb-1bit-2.5Gpx.png", _png(50_000, 50_000, 1, 0, 50_000 // 8)),  # over the pixel cap
        # Under both caps (Pillow opens 16-bit RGBA as 8-bit: 144 MB): accepted, re-encoded, within the bound.
        ("big-16bit-rgba-36Mpx.png", _png(6_000, 6_000, 16, 6, 6_000 * 8)),
        ("truncated.png", png[: len(png) // 2]),
        ("truncated.jpg", jpeg[: len(jpeg) // 2]),
        ("header-only.png", png[:33]),
        ("polyglot.png", png + b"PK\x03\x04" + b"\0" * 26 + b"<html><script>alert(1)</script>"),
        ("polyglot.gif", b"GIF89a" + b"\x01\x00\x01\x00\x00\x00\x00;<?php system($_GET[1]); ?>"),
        ("jpeg-named.png", jpeg),
        ("png-named.dcm", png),
        ("dicom-preamble-only.dcm", b"\0" * 128 + b"DICM"),
        ("empty.png", b""),
        ("text.png", "客户留言，不是图片 — not an image".encode()),
        ("svg.png", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
        ("nul-name\x00.png", png),
    ]
    return tuple(found)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_the_corpus_through_every_upload_route(app):
    clinician = client_for(app, "dr", role="clinician")
    teacher = client_for(app, "tina", role="teacher")
    api = {"Authorization": f"Bearer {make_token(app, 'dr')}"}
    corpus = _corpus()
    assert len(corpus) > 90
    # Every input must reach validation: lift the per-user submission limit (tested in test_ratelimit).
    limits = {**app.config, "PRISM_RATELIMIT_SUBMIT": "100000 per minute", "PRISM_RATELIMIT_API": "100000 per minute"}
    app.extensions[ratelimit.EXTENSION_KEY] = ratelimit.RateLimits(limits)
    statuses: dict[str, list[int]] = {}
    idle, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        token = csrf_token(clinician, "/medical/")
        for name, data in corpus:
            form = clinician.post(
                "/medical/",
                data={"csrf_token": token, "text": "", "image": (io.BytesIO(data), name)},
                content_type="multipart/form-data",
            )
            multipart = app.test_client().post(
                "/api/v1/analyses",
                headers=api,
                data={"scenario": "medical", "image": (io.BytesIO(data), name)},
                content_type="multipart/form-data",
            )
            as_json = app.test_client().post(
                "/api/v1/analyses",
                headers=api,
                json={"scenario": "medical", "image": base64.b64encode(data).decode(), "filename": name},
            )
            statuses[name] = [form.status_code, multipart.status_code, as_json.status_code]
        # Education: the whole corpus (a third of it at a time) as batches of homework photos.
        batch_token = csrf_token(teacher, "/education/")
        for start in range(0, len(corpus), 40):
            files = [(io.BytesIO(data), name) for name, data in corpus[start : start + 40]]
            response = teacher.post(
                "/education/", data={"csrf_token": batch_token, "image": files}, content_type="multipart/form-data"
            )
            statuses[f"education batch {start}"] = [response.status_code]
        # Text and ids.
        for text in ("\ud800", "a\udfffb", "\x00", "\x1b[2J"):
            response = app.test_client().post(
                "/api/v1/analyses", headers=api, data=json.dumps({"text": text}), content_type="application/json"
            )
            statuses[f"text {text!r}"] = [response.status_code]
        for url in ("/history/18446744073709551616", "/api/v1/analyses/99999999999999999999", "/history/?page=1e99"):
            statuses[url] = [clinician.get(url, headers=api).status_code]
    finally:
        done.set()
        sampler.join()

    server_errors = {name: codes for name, codes in statuses.items() if any(code >= 500 for code in codes)}
    with app.app_context():
        report = integrity.check(grace=timedelta(0))  # any file without its record, however new
    added = peak[0] - idle
    accepted = sum(code in (201, 202, 302) for codes in statuses.values() for code in codes)
    print(
        f"robustness: {len(statuses)} inputs, {accepted} accepted, 5xx: {len(server_errors)}, "
        f"orphans: {len(report.orphans)}, peak +{added / 1024**2:.0f} MB"
    )
    assert server_errors == {}
    assert [name for name, codes in statuses.items() if 429 in codes] == []
    assert (report.orphans, report.missing, report.database) == ([], [], [])
    assert added < 1024**3
    # The corpus does reach both outcomes: some inputs are stored, the hostile ones refused.
    assert statuses["bomb-1bit-2.5Gpx.png"] == [400, 400, 400] and statuses["big-16bit-rgba-36Mpx.png"][0] == 302
    assert statuses["jpeg-named.png"][0] == 302 and statuses["pydicom/CT_small.dcm"][0] == 302


def test_a_stored_polyglot_keeps_nothing_after_its_image(app):
    """The polyglot PNG is accepted as the image it also is, and stored without what follows it."""
    clinician = client_for(app, "dr", role="clinician")
    name = "polyglot.png"
    data = dict(_corpus())[name]
    response = clinician.post(
        "/medical/",
        data={"csrf_token": csrf_token(clinician, "/medical/"), "image": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    served = clinician.get(response.headers["Location"] + "/image").data
    assert b"<script" not in served and b"PK\x03\x04" not in served
