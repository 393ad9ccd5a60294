"""Workers report themselves in the database; each analysis records the worker that ran it; listing
indexes end in ``id``.

Workers on several hosts share nothing but the database, the queue and the object store, so the
database is where ``/healthz`` and the admin overview find which ones are alive. Listings sort by
(created_at, id): with ``id`` in the index, PostgreSQL serves a page and a user's count from the
index alone, where it otherwise read every row of a user with 80,000 records (SQLite indexes carry
the rowid, which is ``id``, already).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


_LISTING_INDEXES = {  # name: (table, columns before, columns after)
    "ix_analysis_user_created": ("analysis", ["user_id", "created_at"], ["user_id", "created_at", "id"]),
    "ix_analysis_user_scenario_created": (
        "analysis",
        ["user_id", "scenario", "created_at"],
        ["user_id", "scenario", "created_at", "id"],
    ),
    "ix_analysis_created": ("analysis", ["created_at"], ["created_at", "id"]),
    # The review queue sorts prediction ids from this index alone.
    "ix_prediction_analysis_filters": (
        "prediction",
        ["analysis_id", "review_state", "confidence", "margin"],
        ["analysis_id", "review_state", "confidence", "margin", "id"],
    ),
}


def _rebuild_listing_indexes(version: int) -> None:
    for name, (table, *columns) in _LISTING_INDEXES.items():
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns[version])


def upgrade():
    op.create_table(
        "worker",
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.Column("jobs_done", sa.Integer(), nullable=False),
        sa.Column("jobs_failed", sa.Integer(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
    )
    op.create_index("ix_worker_last_seen_at", "worker", ["last_seen_at"])
    # Plain ALTERs, no batch rebuild: a rebuild would have to repeat 0004's care for AUTOINCREMENT.
    op.add_column("analysis", sa.Column("worker", sa.String(length=128), nullable=True))
    _rebuild_listing_indexes(1)


def downgrade():
    _rebuild_listing_indexes(0)
    op.drop_column("analysis", "worker")  # SQLite 3.35+ drops a column in place
    op.drop_index("ix_worker_last_seen_at", table_name="worker")
    op.drop_table("worker")
