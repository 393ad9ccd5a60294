"""Optional two-step sign-in: each user's TOTP secret (RFC 6238, authenticator apps) and the last time
step accepted, so that a code is never accepted twice.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("user", sa.Column("totp_secret", sa.String(length=32), nullable=True))
    op.add_column("user", sa.Column("totp_last_step", sa.Integer(), nullable=True))


def downgrade():
    op.drop_column("user", "totp_last_step")
    op.drop_column("user", "totp_secret")
