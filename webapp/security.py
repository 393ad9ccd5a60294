"""Small security helpers shared by blueprints."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request, session


def is_safe_redirect(target: str | None) -> bool:
    """Accept only same-site relative paths as a post-login ``next``.

    Unlike microblog's ``netloc`` test this rejects ``https:evil.com``, ``//evil.com``, ``/\\evil.com``
    and anything with a scheme, since browsers read each of those as another site (cf. CTFd is_safe_url).
    """
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return False
    if any(ord(ch) < 32 for ch in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    )
)


def add_security_headers(response):
    """Headers for every response, errors and downloads included (no inline script or style is used)."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    # Signed-in pages (read from the session, no DB hit) and every API answer, which carries private
    # data under a bearer token and no cookie, must not be kept by a browser or a proxy.
    if session.get("_user_id") or request.path.startswith("/api/"):
        headers.setdefault("Cache-Control", "private, no-store")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response
