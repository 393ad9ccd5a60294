"""Rate limits, counted in Redis when ``PRISM_REDIS_URL`` is set, else in this process's memory.

Each limit is a setting holding a `limits` string ("10 per minute", or several: "10 per minute; 100
per hour"). Views decorate with ``limit(setting, key_func)``, which counts POSTs only (showing a form
is never limited), or call ``check(setting, key)``. Over the limit the request ends in a 429 whose
Retry-After says, in whole seconds, when the oldest counted request leaves the window; errors.py
renders it as a page, or as JSON under /api/.

Where counts live: with Redis, every process and host shares one count (RELIABILITY A3). Redis-py
connects on the first command, not when the client is built, so ``create_app`` does no network I/O.
Without Redis, ``memory://`` counts per process: N workers let a client through up to N times the
limit, which is fine for the one-process default and wrong for a fleet.

Strategy: a moving window, exact over any span of the window's length. A fixed window lets twice the
limit through around a window boundary; both storages implement the moving window atomically (Redis
in one Lua script), so the sliding-window-counter approximation is not needed.

Fails open: when Redis cannot be reached the request is allowed and a warning is logged at most once
a minute; a rate limiter must never turn a Redis outage into a site outage. After a failure Redis is
not asked again for ``OUTAGE_RETRY_SECONDS``, so an unreachable host costs each process one bounded
timeout per interval, not one per request.

Keys: ``<name>/<key>/<amount>/<multiples>/<granularity>``, where name is the setting's suffix in lower
case (login, submit, api); in Redis they are prefixed ``prism:rl:`` so they cannot meet the job
queue's keys in a shared database. A changed limit starts a fresh count. One setting and key make one
count wherever they are checked: a user's web and API submissions spend one PRISM_RATELIMIT_SUBMIT.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, abort, current_app, request
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

if TYPE_CHECKING:
    from .models import User

logger = logging.getLogger(__name__)
EXTENSION_KEY = "prism_ratelimit"
SETTING_PREFIX = "PRISM_RATELIMIT_"
LIMIT_SETTINGS = (
    "PRISM_RATELIMIT_LOGIN",
    "PRISM_RATELIMIT_SUBMIT",
    "PRISM_RATELIMIT_API",
    "PRISM_RATELIMIT_AUDIT_FAILURES",
    "PRISM_RATELIMIT_LOGIN_ACCOUNT",
)
REDIS_KEY_PREFIX = "prism:rl"
# A check on a reachable Redis takes about a millisecond; past this it counts as down.
REDIS_TIMEOUT_SECONDS = 0.5
OUTAGE_RETRY_SECONDS = 5.0
OUTAGE_WARNING_EVERY_SECONDS = 60.0


def _parse_limits(setting: str, value: str) -> list[RateLimitItem]:
    """The setting's limits, namespaced by its name, so equal limits of two settings count apart."""
    name = setting.removeprefix(SETTING_PREFIX).lower()
    return [type(item)(item.amount, item.multiples, namespace=name) for item in parse_many(value)]


def _storage(redis_url: str | None) -> Storage:
    if not redis_url:
        return storage_from_string("memory://")
    return storage_from_string(
        redis_url,
        key_prefix=REDIS_KEY_PREFIX,
        wrap_exceptions=True,  # every Redis failure arrives as limits' StorageError
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )


class RateLimits:
    """The app's parsed limits and their counters (``app.extensions["prism_ratelimit"]``)."""

    def __init__(self, config: Mapping[str, Any]):
        # Parsed even when disabled, so a malformed limit stops the app at start, not at a request.
        self._items = {setting: _parse_limits(setting, config[setting]) for setting in LIMIT_SETTINGS}
        self._limiter = (
            MovingWindowRateLimiter(_storage(config["PRISM_REDIS_URL"])) if config["PRISM_RATELIMIT_ENABLED"] else None
        )
        self._outage_lock = threading.Lock()
        self._skip_until = 0.0
        self._next_warning = 0.0

    def hit(self, setting: str, key: str) -> int | None:
        """Count one request for ``key``: None when allowed, else the whole seconds until one would be.

        A request refused by one limit is not counted by it (nor by the limits after it).
        """
        return self._retry_after(setting, key, count=True)

    def exhausted(self, setting: str, key: str) -> int | None:
        """Like ``hit`` but counts nothing: None while ``key`` has room, else the seconds until it has."""
        return self._retry_after(setting, key, count=False)

    def _retry_after(self, setting: str, key: str, *, count: bool) -> int | None:
        if self._limiter is None or time.monotonic() < self._skip_until:
            return None
        check = self._limiter.hit if count else self._limiter.test
        try:
            for item in self._items[setting]:
                if not check(item, key):
                    reset_at = self._limiter.get_window_stats(item, key).reset_time
                    return max(1, math.ceil(reset_at - time.time()))
        except StorageError as exc:
            self._storage_down(exc)
        return None

    def _storage_down(self, exc: StorageError) -> None:
        now = time.monotonic()
        with self._outage_lock:
            self._skip_until = now + OUTAGE_RETRY_SECONDS
            warn = now >= self._next_warning
            if warn:
                self._next_warning = now + OUTAGE_WARNING_EVERY_SECONDS
        if warn:
            logger.warning("rate limits are off until their storage answers again: %s", exc.storage_error)


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION_KEY] = RateLimits(app.config)


def check(setting: str, key: str) -> None:
    """Count this request against ``setting`` for ``key``; over the limit, abort with 429 and Retry-After."""
    retry_after = current_app.extensions[EXTENSION_KEY].hit(setting, key)
    if retry_after is not None:
        abort(429, retry_after=retry_after)


def limit(setting: str, key_func: Callable[[], str]) -> Callable:
    """Decorate a view so that each POST counts against ``setting`` for ``key_func()``; GETs never count."""

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def limited(*args, **kwargs):
            if request.method == "POST":
                check(setting, key_func())
            return view(*args, **kwargs)

        return limited

    return decorator


def client_ip() -> str:
    """The peer's address. X-Forwarded-For is never read here, since any client can send one; behind a
    proxy, werkzeug's ProxyFix (set for the real number of proxies) puts the client's address here."""
    return f"ip:{request.remote_addr or 'unknown'}"


def client_ip_and_username() -> str:
    """Login attempts count per address *and* account: one address cannot try many passwords on one
    account, and an attacker elsewhere cannot lock the user out, since their count is their own."""
    username = request.form.get("username", "").strip().lower()[:64]  # longer names cannot exist
    return f"{client_ip()}:user:{username}"


def user_key(user: User) -> str:
    return f"user:{user.id}"
