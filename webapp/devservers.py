"""Throwaway local servers for the test suite and ``manage.py bench``: PostgreSQL, Redis, an S3 stand-in.

Each is started from binaries already on the machine (Debian's ``postgresql`` and ``redis-server``
packages; moto's standalone server from ``moto[server]``), listens only on 127.0.0.1 or a socket
directory, keeps its data in a temporary directory and is gone when the context exits. Each raises
``ServerUnavailable`` with the reason when it cannot start, so tests can skip with that reason.
Nothing here is used by the app itself.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class ServerUnavailable(RuntimeError):
    """The server's binary is missing or it did not start; the message says which."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServerUnavailable(f"nothing listened on port {port} within {timeout:.0f} s")


def stop_processes(processes: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """SIGTERM every process still running, then wait for each; one that ignores it is killed."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _postgres_binary(name: str) -> str | None:
    """``initdb``/``pg_ctl`` on the PATH, else in Debian's versioned directory (not on the PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway cluster; ``url(database)`` gives a SQLAlchemy URL for psycopg 3."""

    socket_dir: str
    port: int
    user: str = "prism"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@/{database}?host={self.socket_dir}&port={self.port}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """CREATE DATABASE (optionally from a template, which copies a migrated schema in milliseconds)."""
        import psycopg

        with psycopg.connect(host=self.socket_dir, port=self.port, user=self.user, dbname="postgres") as conn:
            conn.autocommit = True
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb + pg_ctl into a temp directory, Unix socket only, trust auth for the ``prism`` role.

    ``initdb`` refuses to run as root; as root the cluster is run by the ``postgres`` system user.
    fsync is off: a test cluster has nothing to lose, and it makes CREATE DATABASE fast.
    """
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    if not (initdb and pg_ctl):
        raise ServerUnavailable("no PostgreSQL server binaries (initdb, pg_ctl); apt-get install postgresql")
    data = tempfile.mkdtemp(prefix="prism-pg-")
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(data, ignore_errors=True)
            raise ServerUnavailable("running as root and there is no 'postgres' user to run the server as") from None
        os.chown(data, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    try:
        made = subprocess.run(  # noqa: S603 (local test server)
            [*run_as, initdb, "-D", data, "-A", "trust", "-U", "prism", "-E", "UTF8", "--locale=C.UTF-8"],
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {made.stderr.strip()[-300:]}")
        port = free_port()
        options = f"-p {port} -k {data} -c listen_addresses='' -c fsync=off -c max_connections=200"
        started = subprocess.run(  # noqa: S603
            [*run_as, pg_ctl, "-D", data, "-w", "-o", options, "-l", f"{data}/log", "start"],
            capture_output=True,
            text=True,
        )
        if started.returncode != 0:
            raise ServerUnavailable(f"pg_ctl start failed: {started.stderr.strip()[-300:]}")
        try:
            yield PostgresServer(socket_dir=data, port=port)
        finally:
            subprocess.run([*run_as, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)  # noqa: S603
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[str]:
    """``redis-server`` without persistence on a free port; yields its URL."""
    binary = shutil.which("redis-server")
    if not binary:
        raise ServerUnavailable("no redis-server binary; apt-get install redis-server")
    directory = tempfile.mkdtemp(prefix="prism-redis-")
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 (local test server)
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_processes([server], timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class S3Server:
    """An S3-compatible endpoint with one bucket and the settings Prism needs to use it."""

    endpoint_url: str
    bucket: str
    access_key: str = "prism-test"
    secret_key: str = "prism-test-secret"  # noqa: S105 (moto accepts any)
    region: str = "us-east-1"

    def client(self):
        """A boto3 S3 client for this server, built the way the app builds its own."""
        from .storage.s3 import make_client

        return make_client(
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
        )

    def settings(self, prefix: str = "uploads") -> dict[str, str]:
        """The ``PRISM_*`` settings that point Prism at this server."""
        return {
            "PRISM_STORAGE_URL": f"s3://{self.bucket}/{prefix}",
            "PRISM_S3_ENDPOINT_URL": self.endpoint_url,
            "PRISM_S3_REGION": self.region,
            "PRISM_S3_ACCESS_KEY_ID": self.access_key,
            "PRISM_S3_SECRET_ACCESS_KEY": self.secret_key,
        }


@contextmanager
def s3_server(bucket: str = "prism-test") -> Iterator[S3Server]:
    """moto's standalone server (``moto[server]``) in a subprocess, with ``bucket`` created."""
    try:
        import boto3  # noqa: F401 (the client; only checks it is installed here)
        import moto.server  # noqa: F401 (only checks that the server extra is installed)
    except ImportError as exc:
        raise ServerUnavailable(f"moto[server] or boto3 is not installed ({exc})") from None
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 (local test server)
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # the port opens a moment before the app answers
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()  # noqa: S310 (local)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ServerUnavailable("moto server did not answer") from None
                time.sleep(0.1)
        s3 = S3Server(endpoint_url=endpoint, bucket=bucket)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        stop_processes([server], timeout=10)
