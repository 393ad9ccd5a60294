"""The S3-compatible backend (against moto's server), backend choice by PRISM_STORAGE_URL, streamed image reads."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest

from tests.conftest import client_for, csrf_token, make_app, png_bytes, record_id, submit
from webapp.extensions import db
from webapp.models import Analysis
from webapp.storage import EXTENSION_KEY, ObjectMissing, StorageUnavailable
from webapp.storage.local import LocalStorage
from webapp.storage.s3 import S3Storage
from webapp.uploads import image_key

KEY = "ab/" + "ab" * 32 + ".png"


@pytest.fixture
def prefix():
    """A fresh prefix per test, so tests sharing the module's server never see each other's objects."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(s3, prefix):
    return S3Storage(s3.bucket, prefix, s3.client())


def count_calls(client, operation: str) -> list[str]:
    """A list that grows by one for every ``operation`` request ``client`` sends."""
    calls: list[str] = []
    client.meta.events.register(f"before-call.s3.{operation}", lambda **kwargs: calls.append(operation))
    return calls


def bucket_keys(server, prefix: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=server.bucket, Prefix=f"{prefix}/")
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.fixture
def s3_app(s3, prefix, tmp_path):
    app = make_app(tmp_path, **s3.settings(prefix))
    yield app
    with app.app_context():
        db.engine.dispose()


def test_round_trip_under_the_prefix(s3, store, prefix):
    """put, exists, get, open and delete work on one object, stored in the bucket as <prefix>/<key>."""
    data = png_bytes()
    store.put(KEY, data)
    assert bucket_keys(s3, prefix) == [f"{prefix}/{KEY}"]
    assert store.exists(KEY)
    assert store.get(KEY) == data
    with store.open(KEY) as stream:
        assert stream.read(8) == data[:8]
        assert stream.read() == data[8:]
    store.delete(KEY)
    assert not store.exists(KEY)
    assert bucket_keys(s3, prefix) == []


def test_keys_lists_the_objects_under_the_prefix_only(s3, store, prefix):
    """The integrity check's listing: this prefix's objects, named by key, with when they were written."""
    from datetime import UTC, datetime, timedelta

    store.put("ab/one.png", b"1")
    store.put("cd/two.png", b"2")
    S3Storage(s3.bucket, f"{prefix}-other", s3.client()).put("ab/elsewhere.png", b"3")
    found = dict(store.keys())
    assert sorted(found) == ["ab/one.png", "cd/two.png"]
    now = datetime.now(UTC).replace(tzinfo=None)
    assert all(abs(now - written) < timedelta(minutes=5) for written in found.values())


def test_put_is_idempotent_without_uploading_again(store):
    """A second put of a stored key sends no PutObject and does not even read its data."""
    store.put(KEY, png_bytes())
    puts = count_calls(store.client, "PutObject")

    class Unreadable(io.RawIOBase):
        def read(self, size=-1):
            raise AssertionError("put read the data of an object that was already stored")

    store.put(KEY, Unreadable())
    store.put(KEY, png_bytes())
    assert puts == []
    assert store.get(KEY) == png_bytes()


def test_missing_object(store):
    """get and open of a missing key raise ObjectMissing; exists is False; delete is a no-op."""
    with pytest.raises(ObjectMissing):
        store.get(KEY)
    with pytest.raises(ObjectMissing):
        store.open(KEY)
    assert not store.exists(KEY)
    store.delete(KEY)


def test_large_object_streams_through_a_multipart_upload(store):
    """12 MiB from a file object go up as one multipart upload and come back byte for byte, in pieces."""
    data = os.urandom(12 * 1024 * 1024)
    multipart = count_calls(store.client, "CreateMultipartUpload")
    parts = count_calls(store.client, "UploadPart")
    store.put(KEY, io.BytesIO(data))
    assert multipart == ["CreateMultipartUpload"] and len(parts) == 2
    with store.open(KEY) as stream:
        first = stream.read(1024 * 1024)
        assert first == data[: 1024 * 1024]
        assert first + stream.read() == data


@pytest.mark.parametrize("key", ["../outside.png", "/etc/passwd", "ab/../../x", "ab//x.png", "ab\\x.png", ""])
def test_keys_that_could_escape_the_prefix_are_refused(store, key):
    """No key can name an object outside the prefix; the check happens before any request."""
    for call in (store.get, store.open, store.exists, store.delete):
        with pytest.raises(ValueError):
            call(key)
    with pytest.raises(ValueError):
        store.put(key, b"x")


def test_check_heads_the_bucket(s3, store):
    """check passes for the bucket and raises StorageUnavailable for one that does not exist."""
    store.check()
    with pytest.raises(StorageUnavailable, match="no-such-bucket"):
        S3Storage("no-such-bucket", "", store.client).check()


def test_app_keeps_uploads_in_the_bucket(s3, s3_app, prefix, tmp_path):
    """Through the app on S3: the upload lands at <prefix>/<key>, only its owner gets it back, delete removes it."""
    owner = client_for(s3_app, "olga")
    data = png_bytes(color=(9, 99, 199))
    analysis_id = record_id(submit(owner, text=None, image=data, filename="scan.png"))
    with s3_app.app_context():
        analysis = db.session.get(Analysis, analysis_id)
        key = image_key(analysis.image_sha256, analysis.image_format)
        assert analysis.status == "done"  # the job read the image back from the bucket
    assert bucket_keys(s3, prefix) == [f"{prefix}/{key}"]
    uploads = Path(s3_app.config["UPLOAD_FOLDER"])
    assert not uploads.exists() or not any(uploads.rglob("*"))

    served = owner.get(f"/history/{analysis_id}/image")
    assert served.status_code == 200
    assert served.data == data
    assert served.mimetype == "image/png"
    assert served.headers["Cache-Control"] == "private, no-store"
    assert client_for(s3_app, "mallory").get(f"/history/{analysis_id}/image").status_code == 404

    token = csrf_token(owner, f"/history/{analysis_id}")
    assert owner.post(f"/history/{analysis_id}/delete", data={"csrf_token": token}).status_code == 302
    assert bucket_keys(s3, prefix) == []


def test_image_gone_from_the_bucket_is_404(s3, s3_app, prefix):
    """A record whose object was removed behind the app's back answers 404, not an error."""
    owner = client_for(s3_app, "olga")
    analysis_id = record_id(submit(owner, text=None, image=png_bytes()))
    assert owner.get(f"/history/{analysis_id}/image").status_code == 200
    stored = bucket_keys(s3, prefix)
    assert len(stored) == 1
    s3.client().delete_object(Bucket=s3.bucket, Key=stored[0])
    assert owner.get(f"/history/{analysis_id}/image").status_code == 404


@pytest.mark.parametrize("url", ["ftp://x", "file://relative/dir", "file:relative", "s3:///no-bucket", "uploads"])
def test_unusable_storage_url_stops_the_app(tmp_path, url):
    """A PRISM_STORAGE_URL that names no supported backend is refused when the app is built."""
    with pytest.raises(RuntimeError, match="PRISM_STORAGE_URL"):
        make_app(tmp_path, PRISM_STORAGE_URL=url)


def test_file_url_selects_that_directory(tmp_path):
    """file:///abs/dir keeps objects in that directory instead of UPLOAD_FOLDER."""
    elsewhere = tmp_path / "elsewhere dir"
    app = make_app(tmp_path, PRISM_STORAGE_URL=elsewhere.as_uri())
    storage = app.extensions[EXTENSION_KEY]
    assert isinstance(storage, LocalStorage) and storage.root == elsewhere.resolve()
    record_id(submit(client_for(app, "fred"), text=None, image=png_bytes()))
    assert len([p for p in elsewhere.rglob("*") if p.is_file()]) == 1
    assert not Path(app.config["UPLOAD_FOLDER"]).exists()


def test_unset_url_keeps_upload_folder(app):
    """Without PRISM_STORAGE_URL objects stay under UPLOAD_FOLDER, as before."""
    storage = app.extensions[EXTENSION_KEY]
    assert isinstance(storage, LocalStorage) and storage.root == Path(app.config["UPLOAD_FOLDER"]).resolve()


def test_local_image_route_streams_and_closes_the_file(app, alice, monkeypatch):
    """The image route passes the open file through (never get()), and the file is closed after the response."""
    data = png_bytes(size=(300, 200))
    analysis_id = record_id(submit(alice, text=None, image=data))
    storage = app.extensions[EXTENSION_KEY]
    opened = []

    def no_whole_reads(key):
        raise AssertionError("the image route read the whole object")

    def recording_open(key):
        opened.append(LocalStorage.open(storage, key))
        return opened[-1]

    monkeypatch.setattr(storage, "get", no_whole_reads)
    monkeypatch.setattr(storage, "open", recording_open)
    response = alice.get(f"/history/{analysis_id}/image", buffered=False)
    assert response.status_code == 200 and response.is_streamed
    assert not opened[0].closed
    assert b"".join(response.iter_encoded()) == data
    response.close()
    assert opened[0].closed


def test_local_put_takes_a_file_object(tmp_path):
    """LocalStorage.put copies from a file object as it does from bytes, and open reads it back."""
    store = LocalStorage(tmp_path / "root")
    data = os.urandom(3 * 1024 * 1024 + 7)
    store.put(KEY, io.BytesIO(data))
    with store.open(KEY) as stream:
        assert stream.read() == data
    with pytest.raises(ObjectMissing):
        store.open("cd/" + "cd" * 32 + ".png")


def test_local_check(tmp_path):
    """check creates a missing root and passes; a root that cannot be a directory is StorageUnavailable."""
    LocalStorage(tmp_path / "new" / "root").check()
    assert (tmp_path / "new" / "root").is_dir()
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        LocalStorage(tmp_path / "a-file").check()
