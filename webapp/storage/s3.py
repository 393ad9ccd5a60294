"""Objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW ...), under an optional key prefix.

Every web and worker process builds one client when the app is created and shares it between
threads: boto3 clients are thread-safe, sessions are not, and building a client does no network
I/O, so ``create_app`` stays free of side effects. Objects are written with ``upload_fileobj``,
which switches to a multipart upload above 8 MiB and never needs the whole object in memory; S3
makes an object visible only once its upload completes, so readers never see part of one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .base import ObjectMissing, StorageUnavailable, as_stream, validate_key

# HEAD answers a missing object with a bare 404; GET with NoSuchKey.
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def make_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> Any:
    """An S3 client; each setting left None falls back to boto3's own chain (AWS_* variables, ~/.aws, roles).

    An explicit endpoint (MinIO, moto, Ceph) gets path-style addressing, which needs no wildcard DNS
    for ``bucket.host``. Short connect timeouts keep a health check from hanging on a dead endpoint.
    """
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        signature_version="s3v4",
        connect_timeout=5,
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )


def _is_missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in _MISSING_CODES


class S3Storage:
    def __init__(self, bucket: str, prefix: str, client: Any):
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = validate_key(prefix) if prefix else ""
        self.client = client

    def __repr__(self) -> str:
        return f"S3Storage('s3://{self.bucket}/{self.prefix}')"

    def _name(self, key: str) -> str:
        """The object's name in the bucket: the prefix, if any, then the validated key."""
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        if self.exists(key):
            return
        self.client.upload_fileobj(as_stream(data), self.bucket, self._name(key))

    def get(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open(self, key: str) -> BinaryIO:
        """The response body of a GET (botocore's ``StreamingBody``), read from the network as it goes."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectMissing(key) from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    def keys(self) -> Iterator[tuple[str, datetime]]:
        start = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", ()):
                yield item["Key"][len(start) :], item["LastModified"].astimezone(UTC).replace(tzinfo=None)

    def delete(self, key: str) -> None:
        # S3 answers a DELETE of a missing key with success, so deleting is idempotent as it is.
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def check(self) -> None:
        """HEAD on the bucket: proves the endpoint answers, the bucket exists and the credentials work."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"s3://{self.bucket}: {exc}") from exc
