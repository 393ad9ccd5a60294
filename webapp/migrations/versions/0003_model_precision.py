"""Record the number format (fp32, bf16, int8 ...) each model ran in, next to its id and revision.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("analysis") as batch:
        batch.add_column(sa.Column("caption_precision", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("sentiment_precision", sa.String(length=8), nullable=True))


def downgrade():
    with op.batch_alter_table("analysis") as batch:
        batch.drop_column("sentiment_precision")
        batch.drop_column("caption_precision")
