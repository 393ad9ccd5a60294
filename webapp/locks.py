"""Coordination across processes and hosts through Redis, when it is configured.

``claim_interval`` lets one of N workers do periodic work (the stalled-job sweep) once per interval:
a ``SET NX PX`` that expires instead of being released, so a worker killed after claiming blocks
nobody for longer than the interval.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, current_app

logger = logging.getLogger(__name__)
EXTENSION_KEY = "prism_redis"


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


def claim_interval(name: str, seconds: float) -> bool:
    """True for the one caller, among every process and host sharing Redis, that claims ``name`` for the
    next ``seconds``; the claim is never released, it expires, so the guarded work runs once per
    interval however many workers try. Without Redis every caller gets True: consumers then share one
    host and its SQLite queue, and the guarded work (the stalled-job sweep) is harmless when repeated.
    An unreachable Redis answers False: skipping a round is safe, the next one retries.
    """
    client = redis_client()
    if client is None:
        return True
    from redis.exceptions import RedisError

    try:
        return bool(client.set(f"prism:lock:{name}", "1", nx=True, px=max(1, int(seconds * 1000))))
    except RedisError as exc:
        logger.warning("claim %s: Redis unreachable (%s); skipping this round", name, exc)
        return False
