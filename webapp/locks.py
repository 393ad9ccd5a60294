"""Locks that hold across processes and hosts when Redis is configured.

``exclusive(name, ttl)`` is a non-blocking "only one of us does this now" (the stalled-job sweep,
run by every worker every minute, needs only one at a time). With ``PRISM_REDIS_URL`` it is a
Redis lock (``SET NX PX``, released only by its owner, expiring after ``ttl`` seconds so a worker
killed while holding it blocks nobody for long). Without Redis, every consumer is on one host
sharing the embedded SQLite queue; the lock is then per process, and the work it guards must be
(and is) harmless when two processes do it at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app

logger = logging.getLogger(__name__)
EXTENSION_KEY = "prism_redis"
_LOCAL_LOCKS: dict[str, threading.Lock] = {}
_LOCAL_LOCKS_GUARD = threading.Lock()


class RedisConnection:
    """One client (and connection pool) per app, created on first use: building the app connects nowhere."""

    def __init__(self, url: str | None):
        self.url = url
        self._client = None
        self._guard = threading.Lock()

    def client(self):
        if self.url is None:
            return None
        with self._guard:
            if self._client is None:
                import redis

                self._client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
            return self._client


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION_KEY] = RedisConnection(app.config["PRISM_REDIS_URL"])


def redis_client():
    """The app's Redis client, or None when ``PRISM_REDIS_URL`` is not set."""
    return current_app.extensions[EXTENSION_KEY].client()


@contextmanager
def exclusive(name: str, ttl: float) -> Iterator[bool]:
    """Yields True when this caller holds the lock ``name`` (for at most ``ttl`` seconds), else False.

    Never blocks. A Redis that cannot be reached yields False: skipping one round of guarded work is
    safe, doing it while another holder may be at it is what the lock exists to prevent.
    """
    client = redis_client()
    if client is None:
        with _LOCAL_LOCKS_GUARD:
            lock = _LOCAL_LOCKS.setdefault(name, threading.Lock())
        acquired = lock.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
        return
    from redis.exceptions import LockError, RedisError

    lock = client.lock(f"prism:lock:{name}", timeout=ttl, blocking=False)
    try:
        acquired = lock.acquire()
    except RedisError as exc:
        logger.warning("lock %s: Redis unreachable (%s); skipping", name, exc)
        acquired = False
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except (LockError, RedisError):  # expired meanwhile, or Redis went away: it expires by itself
                logger.info("lock %s was no longer ours to release", name)
