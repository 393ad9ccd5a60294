"""Per-account login throttling that an attacker cannot turn against the account's owner (OWASP's
"device cookie" pattern).

Failed logins count per account, from every address together (``PRISM_RATELIMIT_LOGIN_ACCOUNT``):
guessing spread over many addresses still hits a wall. When the limit is reached, a browser that has
signed in to that account before is still let through. It shows a signed device cookie naming the
accounts that signed in there, so an attack locks out only browsers the owner never used.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Response, current_app, request
from itsdangerous import BadSignature, URLSafeSerializer

COOKIE = "prism_device"
LIFETIME = timedelta(days=180)
MAX_ACCOUNTS = 5  # a shared browser remembers the last few accounts only


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="prism-device")


def known_accounts() -> list[str]:
    """The (lower-case) usernames this browser signed in as, from its device cookie if it is genuine."""
    try:
        found = _serializer().loads(request.cookies.get(COOKIE, ""))
    except BadSignature:
        return []
    return [name for name in found if isinstance(name, str)] if isinstance(found, list) else []


def is_known(username: str) -> bool:
    return username.strip().lower() in known_accounts()


def remember(response: Response, username: str) -> Response:
    """Add ``username`` to this browser's device cookie (most recent first)."""
    name = username.strip().lower()
    accounts = [name, *(known for known in known_accounts() if known != name)][:MAX_ACCOUNTS]
    response.set_cookie(
        COOKIE,
        _serializer().dumps(accounts),
        max_age=int(LIFETIME.total_seconds()),
        httponly=True,
        samesite="Lax",
        secure=current_app.config["SESSION_COOKIE_SECURE"],
    )
    return response
