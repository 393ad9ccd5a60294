"""Append-only audit trail of security-relevant actions.

``record`` only adds the row to the session: the view that performs the action commits it together
with the action itself, so an action and its audit row land or fail as one.

Tamper evidence. Triggers refuse UPDATE and DELETE, but whoever can drop them, or can INSERT, could
rewrite history unnoticed. So every row is sealed as it is flushed: ``row_hash`` is an HMAC-SHA256,
keyed from the app's SECRET_KEY (which the database does not hold), over the previous row's seal
and this row's fields. ``verify_chain`` (``manage.py audit verify``) walks the rows in id order
and names the first that was modified, inserted (forged, back-dated or not), deleted or reordered.
Deleting the newest rows leaves a shorter valid chain: verify prints the head, for an operator to
keep elsewhere. Writers take the chain's head one at a time: SQLite's BEGIN IMMEDIATE already
serialises them, and on PostgreSQL a transaction-scoped advisory lock does.

Anonymous failures (bad logins, bad API tokens, CSRF failures) are written at most
``PRISM_RATELIMIT_AUDIT_FAILURES`` times per client address and action; the next row written
carries how many this process left out (``details.suppressed``), so a flood cannot fill the table.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_request_context, request
from flask_login import current_user
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from .extensions import db
from .models import AuditEvent, User, utcnow

REGISTER = "auth.register"
LOGIN = "auth.login"
LOGIN_FAILED = "auth.login_failed"
LOGOUT = "auth.logout"
PASSWORD_CHANGED = "auth.password_change"  # noqa: S105 (an action name, not a secret)
TWO_STEP_CHANGED = "auth.two_step_change"
ANALYSIS_CREATED = "analysis.create"
ANALYSIS_VIEWED_BY_OTHER = "analysis.view_other"
ANALYSIS_DELETED = "analysis.delete"
ANALYSIS_RETRIED = "analysis.retry"
REVIEW_RECORDED = "review.record"
HISTORY_EXPORTED = "history.export"
HISTORY_LISTED_BY_ADMIN = "history.list_other"  # a page of "All history" showing other users' records
ROLE_CHANGED = "admin.role_change"
ACCESS_CHANGED = "admin.access_change"
PASSWORD_RESET = "admin.password_reset"  # noqa: S105 (an action name, not a secret)
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
    TWO_STEP_CHANGED,
    ANALYSIS_CREATED,
    ANALYSIS_VIEWED_BY_OTHER,
    ANALYSIS_DELETED,
    ANALYSIS_RETRIED,
    REVIEW_RECORDED,
    HISTORY_EXPORTED,
    HISTORY_LISTED_BY_ADMIN,
    ROLE_CHANGED,
    ACCESS_CHANGED,
    PASSWORD_RESET,
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
    row = AuditEvent(
        actor_id=actor.id if actor is not None else None,
        actor_name=actor.username if actor is not None else None,
        action=action,
        target_type=type(target).__name__ if target is not None else None,
        target_id=str(target.id) if target is not None else None,
        ip_address=request.remote_addr if has_request_context() else None,
        details=details or None,
    )
    db.session.add(row)
    return row


_suppressed: Counter[tuple[str, str]] = Counter()
_suppressed_lock = threading.Lock()


def record_failure(action: str, details: dict[str, Any]) -> AuditEvent | None:
    """``record`` for a failure anyone can cause without an account. A signed-in user's is always
    written (it names them); an anonymous one within the per-address limit only, else None: it is
    counted, and the next row written says how many were left out."""
    from .ratelimit import EXTENSION_KEY, client_ip

    if has_request_context() and current_user.is_authenticated:
        return record(action, details=details)
    key = (action, client_ip())
    if current_app.extensions[EXTENSION_KEY].hit("PRISM_RATELIMIT_AUDIT_FAILURES", f"audit:{action}:{key[1]}"):
        with _suppressed_lock:
            _suppressed[key] += 1
        return None
    with _suppressed_lock:
        left_out = _suppressed.pop(key, 0)
    return record(action, details={**details, **({"suppressed": left_out} if left_out else {})})


# --- Append-only triggers ---------------------------------------------------------------------------

APPEND_ONLY_TRIGGERS = ("audit_event_no_update", "audit_event_no_delete")  # migration 0001 creates them


def missing_triggers() -> list[str]:
    """The append-only triggers the database lacks (someone dropped them)."""
    if db.engine.dialect.name == "postgresql":
        found = db.session.scalars(
            text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_event'::regclass AND NOT tgisinternal")
        )
    else:
        found = db.session.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
    present = set(found)
    db.session.rollback()
    return [name for name in APPEND_ONLY_TRIGGERS if name not in present]


def restore_triggers() -> list[str]:
    """Re-create the append-only triggers that are missing (as migration 0001 made them); returns
    their names. ``manage.py init-db`` runs it after every upgrade."""
    missing = missing_triggers()
    body = "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END"
    if missing and db.engine.dialect.name == "postgresql":
        db.session.execute(
            text(
                "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'audit_event is append-only'; END $$"
            )
        )
        body = "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
    for name in missing:
        operation = name.rsplit("_", 1)[-1].upper()
        db.session.execute(text(f"CREATE TRIGGER {name} BEFORE {operation} ON audit_event {body}"))
    db.session.commit()
    return missing


# --- The chain -------------------------------------------------------------------------------------

GENESIS = "0" * 64  # the previous seal of the first sealed row
_POSTGRES_CHAIN_LOCK = 0x50524953  # pg_advisory_xact_lock key ("PRIS")


def _chain_key() -> bytes:
    return hmac.new(current_app.config["SECRET_KEY"].encode(), b"prism audit chain v1", hashlib.sha256).digest()


def seal(row: AuditEvent, previous: str, key: bytes) -> str:
    """The HMAC of ``row`` chained to ``previous``: every field but the id (ids are checked by order)."""
    fields = [
        previous,
        row.created_at.isoformat(timespec="microseconds"),
        row.actor_id,
        row.actor_name,
        row.action,
        row.target_type,
        row.target_id,
        row.ip_address,
        row.details,
    ]
    message = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _chain_head(session: Session) -> str:
    with session.no_autoflush:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_CHAIN_LOCK})
        head = session.scalar(
            select(AuditEvent.row_hash).where(AuditEvent.row_hash.is_not(None)).order_by(AuditEvent.id.desc()).limit(1)
        )
    return head or GENESIS


@event.listens_for(Session, "before_flush")
def _seal_new_rows(session: Session, _flush_context: Any, _instances: Any) -> None:
    new_rows = [row for row in session.new if isinstance(row, AuditEvent) and row.row_hash is None]
    if not new_rows:
        return
    new_rows.sort(key=lambda row: db.inspect(row).insert_order)  # the order their ids will have
    previous, key = _chain_head(session), _chain_key()
    for row in new_rows:
        row.created_at = row.created_at or utcnow()
        row.prev_hash, row.row_hash = previous, seal(row, previous, key)
        previous = row.row_hash


@dataclass(frozen=True)
class ChainReport:
    rows: int  # rows read
    unsealed_before_chain: int  # rows written before migration 0008
    head_id: int | None
    head_hash: str | None
    problem: str | None  # the first bad row, in words; None when the chain holds

    @property
    def ok(self) -> bool:
        return self.problem is None


def _rows_in_order(batch: int = 1000) -> Iterator[AuditEvent]:
    last_id = 0
    while rows := db.session.scalars(
        select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)
    ).all():
        yield from rows
        last_id = rows[-1].id
        db.session.expunge_all()


def verify_chain() -> ChainReport:
    """Walk every audit row in id order and check the chain; stops at the first bad row."""
    key, previous = _chain_key(), None
    count = unsealed = 0
    head_id = None

    def report(problem: str | None) -> ChainReport:
        return ChainReport(count, unsealed, head_id, previous, problem)

    for row in _rows_in_order():
        count += 1
        if row.row_hash is None:
            if previous is not None:
                return report(f"row #{row.id}: not sealed, after the chain began (inserted around the app)")
            unsealed += 1
            continue
        expected_previous = previous or GENESIS
        if row.prev_hash != expected_previous:
            return report(
                f"row #{row.id}: does not follow row #{head_id} (a row before it was deleted, or rows reordered)"
                if head_id is not None
                else f"row #{row.id}: the chain does not start here (its first rows were deleted)"
            )
        if not hmac.compare_digest(row.row_hash, seal(row, expected_previous, key)):
            return report(f"row #{row.id}: its fields do not match its seal (modified, or forged)")
        previous, head_id = row.row_hash, row.id
    return report(None)
