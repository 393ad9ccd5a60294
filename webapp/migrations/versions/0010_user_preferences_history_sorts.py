"""Per-user display preferences (time zone, interface language), and indexes for the history
listings' new orders: everyone's records by scenario or by status (each user's own are already
served by the ``ix_analysis_user_*`` indexes).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("user", sa.Column("time_zone", sa.String(length=64), nullable=True))
    op.add_column("user", sa.Column("language", sa.String(length=8), nullable=True))
    op.create_index("ix_analysis_scenario_created", "analysis", ["scenario", "created_at", "id"])
    op.create_index("ix_analysis_status_created", "analysis", ["status", "created_at", "id"])


def downgrade():
    op.drop_index("ix_analysis_status_created", table_name="analysis")
    op.drop_index("ix_analysis_scenario_created", table_name="analysis")
    op.drop_column("user", "language")
    op.drop_column("user", "time_zone")
