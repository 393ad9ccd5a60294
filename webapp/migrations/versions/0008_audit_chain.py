"""Audit rows are sealed in a chain: each row's HMAC covers the previous row's and its own fields
(``webapp/audit.py``), so ``manage.py audit verify`` names a modified, deleted, inserted or reordered
row. Rows written before this revision keep empty seals; the chain starts after them.

Plain ADD / DROP COLUMN (no batch rebuild on SQLite): rebuilding the table would drop its append-only
triggers.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("audit_event", sa.Column("prev_hash", sa.String(length=64), nullable=True))
    op.add_column("audit_event", sa.Column("row_hash", sa.String(length=64), nullable=True))


def downgrade():
    # Plain DROP COLUMN (SQLite 3.35+ and PostgreSQL), for the same reason as above.
    op.drop_column("audit_event", "row_hash")
    op.drop_column("audit_event", "prev_hash")
