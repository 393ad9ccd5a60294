"""Usernames are unique regardless of case ("Alice" and "alice" are one account).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("uq_user_username_lower", "user", [sa.text("lower(username)")], unique=True)


def downgrade():
    op.drop_index("uq_user_username_lower", table_name="user")
