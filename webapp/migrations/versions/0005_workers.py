"""Workers report themselves in the database; each analysis records the worker that ran it; listing
indexes end in ``id``; predictions carry their analysis's owner and scenario for the review queue.

Workers on several hosts share nothing but the database, the queue and the object store, so the
database is where ``/healthz`` and the admin overview find which ones are alive. Listings sort by
(created_at, id): with ``id`` in the index, PostgreSQL serves a page and a user's count from the
index alone, where it otherwise read every row of a user with 80,000 records (SQLite indexes carry
the rowid, which is ``id``, already).

Revision ID: 0005
Revises: 0004
"""

import warnings
from contextlib import contextmanager

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
}
_QUEUE_INDEX_COLUMNS = ["user_id", "scenario", "review_state", "confidence", "margin", "analysis_id", "id"]


@contextmanager
def _prediction_rebuild():
    """Changes to ``prediction`` that SQLite can only make by rebuilding the table (alembic's batch
    mode), keeping AUTOINCREMENT as 0004 created it; PostgreSQL gets plain ALTERs. Reflecting `user`
    for the foreign key warns that its lower() index cannot be reflected; that table is not touched."""
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    # The rebuilt table's AUTOINCREMENT counter restarts at its highest surviving id; keep the old
    # one, so a deleted prediction's id is never handed out again (ids appear in audit rows).
    counter = (
        bind.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'prediction'").scalar() if sqlite else None
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection of expression-based index")
        with op.batch_alter_table("prediction", table_kwargs={"sqlite_autoincrement": True}) as batch:
            yield batch
    if counter is not None:
        counter = int(counter)
        op.execute(f"UPDATE sqlite_sequence SET seq = MAX(seq, {counter}) WHERE name = 'prediction'")  # noqa: S608
        op.execute(  # an emptied table has no counter row left to raise
            f"INSERT INTO sqlite_sequence (name, seq) SELECT 'prediction', {counter} "  # noqa: S608
            "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'prediction')"
        )


def _copy_owner_and_scenario_to_predictions() -> None:
    """Each prediction gets its analysis's owner and scenario, so the review queue reads one table."""
    op.add_column("prediction", sa.Column("user_id", sa.Integer(), nullable=True))
    op.add_column("prediction", sa.Column("scenario", sa.String(length=16), nullable=True))
    for column in ("user_id", "scenario"):
        op.execute(
            f"UPDATE prediction SET {column} = "  # noqa: S608 (a fixed column name)
            f"(SELECT analysis.{column} FROM analysis WHERE analysis.id = prediction.analysis_id)"
        )
    with _prediction_rebuild() as batch:
        batch.alter_column("user_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("scenario", existing_type=sa.String(length=16), nullable=False)
        batch.create_foreign_key("fk_prediction_user_id_user", "user", ["user_id"], ["id"], ondelete="CASCADE")
    op.create_index("ix_prediction_queue", "prediction", _QUEUE_INDEX_COLUMNS)


def _rebuild_listing_indexes(version: int) -> None:
    for name, (table, *columns) in _LISTING_INDEXES.items():
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns[version])


def upgrade():
    op.create_table(
        "worker",
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("hostname", sa.String(length=255), nullable=False),
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
    op.create_index("ix_analysis_user_status_created", "analysis", ["user_id", "status", "created_at", "id"])
    _copy_owner_and_scenario_to_predictions()


def downgrade():
    op.drop_index("ix_prediction_queue", table_name="prediction")
    with _prediction_rebuild() as batch:
        batch.drop_constraint("fk_prediction_user_id_user", type_="foreignkey")
        batch.drop_column("scenario")
        batch.drop_column("user_id")
    op.drop_index("ix_analysis_user_status_created", table_name="analysis")
    _rebuild_listing_indexes(0)
    op.drop_column("analysis", "worker")  # SQLite 3.35+ drops a column in place
    op.drop_index("ix_worker_last_seen_at", table_name="worker")
    op.drop_table("worker")
