"""Append-only audit trail of security-relevant actions.

``record`` only adds the row to the session: the view that performs the action commits it together
with the action itself, so an action and its audit row land or fail as one.
"""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from flask_login import current_user

from .extensions import db
from .models import AuditEvent, User

REGISTER = "auth.register"
LOGIN = "auth.login"
LOGIN_FAILED = "auth.login_failed"
LOGOUT = "auth.logout"
PASSWORD_CHANGED = "auth.password_change"  # noqa: S105 (an action name, not a secret)
ANALYSIS_CREATED = "analysis.create"
ANALYSIS_VIEWED_BY_OTHER = "analysis.view_other"
ANALYSIS_DELETED = "analysis.delete"
ANALYSIS_RETRIED = "analysis.retry"
REVIEW_RECORDED = "review.record"
HISTORY_EXPORTED = "history.export"
ROLE_CHANGED = "admin.role_change"
TOKEN_CREATED = "token.create"  # noqa: S105 (an action name, not a secret)
TOKEN_REVOKED = "token.revoke"  # noqa: S105
API_AUTH_FAILED = "api.auth_failed"
UPLOAD_REJECTED = "upload.rejected"
CSRF_FAILED = "security.csrf_failed"
CONVERSATION_CLOSED = "conversation.close"
CONVERSATION_REOPENED = "conversation.reopen"
CATEGORY_CHANGED = "admin.category_change"
ANNOTATION_ADDED = "annotation.add"
ANNOTATION_REMOVED = "annotation.remove"
CASE_SIGNED_OFF = "case.sign_off"
EDUCATION_VIEWED_BY_OTHER = "education.view_other"

ACTIONS = (
    REGISTER,
    LOGIN,
    LOGIN_FAILED,
    LOGOUT,
    PASSWORD_CHANGED,
    ANALYSIS_CREATED,
    ANALYSIS_VIEWED_BY_OTHER,
    ANALYSIS_DELETED,
    ANALYSIS_RETRIED,
    REVIEW_RECORDED,
    HISTORY_EXPORTED,
    ROLE_CHANGED,
    TOKEN_CREATED,
    TOKEN_REVOKED,
    API_AUTH_FAILED,
    UPLOAD_REJECTED,
    CSRF_FAILED,
    CONVERSATION_CLOSED,
    CONVERSATION_REOPENED,
    CATEGORY_CHANGED,
    ANNOTATION_ADDED,
    ANNOTATION_REMOVED,
    CASE_SIGNED_OFF,
    EDUCATION_VIEWED_BY_OTHER,
)


def record(
    action: str,
    *,
    actor: User | None = None,
    target: Any = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Stage an audit row; ``actor`` defaults to the logged-in user, ``target`` is any ORM object."""
    if actor is None and has_request_context() and current_user.is_authenticated:
        actor = current_user._get_current_object()
    event = AuditEvent(
        actor_id=actor.id if actor is not None else None,
        actor_name=actor.username if actor is not None else None,
        action=action,
        target_type=type(target).__name__ if target is not None else None,
        target_id=str(target.id) if target is not None else None,
        ip_address=request.remote_addr if has_request_context() else None,
        details=details or None,
    )
    db.session.add(event)
    return event
