"""A flag on each account that an admin's password reset sets: the owner signs in with the
temporary password and must choose a new one before anything else. Existing accounts get false.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("user", sa.Column("must_change_password", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    op.drop_column("user", "must_change_password")
