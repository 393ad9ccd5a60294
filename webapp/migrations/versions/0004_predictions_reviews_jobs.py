"""Predictions and reviews as rows, job state on analyses, batches; ids never reused.

The ``caption_*`` / ``sentiment_*`` columns of ``analysis`` move into ``prediction`` rows (one per
kind) and are dropped. Existing analyses become ``done`` jobs. On SQLite, ``analysis`` is rebuilt
with AUTOINCREMENT so a deleted record's id is never handed out again; PostgreSQL sequences already
behave that way, so there the table is altered in place. Nothing here is SQLite-only SQL.

Revision ID: 0004
Revises: 0003
"""

import warnings

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OLD_COLUMNS = (
    "caption",
    "caption_model",
    "caption_revision",
    "caption_precision",
    "caption_ms",
    "sentiment_label",
    "sentiment_score",
    "sentiment_scores",
    "sentiment_raw_scores",
    "sentiment_model",
    "sentiment_revision",
    "sentiment_precision",
    "sentiment_ms",
)
_CHUNK = 1000
_OLD_TYPES = {"sentiment_scores": sa.JSON(), "sentiment_raw_scores": sa.JSON()}


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _autoincrement() -> dict:
    return {"sqlite_autoincrement": True}


def upgrade():
    op.create_table(
        "batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("scenario", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        **_autoincrement(),
    )
    op.create_index("ix_batch_user_created", "batch", ["user_id", "created_at"])
    op.create_table(
        "prediction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("model_id", sa.String(length=255), nullable=False),
        sa.Column("revision", sa.String(length=64), nullable=True),
        sa.Column("precision", sa.String(length=8), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("output", sa.JSON(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("margin", sa.Double(), nullable=True),
        sa.Column("review_state", sa.String(length=16), nullable=False),
        sa.Column("final_label", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["analysis_id"], ["analysis.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("analysis_id", "kind", name="uq_prediction_analysis_kind"),
        **_autoincrement(),
    )
    op.create_index("ix_prediction_kind_final", "prediction", ["kind", "final_label", "analysis_id"])
    op.create_index("ix_prediction_review_state", "prediction", ["review_state", "analysis_id"])
    op.create_index(
        "ix_prediction_analysis_filters", "prediction", ["analysis_id", "review_state", "confidence", "margin"]
    )
    op.create_table(
        "review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("reviewer_name", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["prediction_id"], ["prediction.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reviewer_id"], ["user.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        **_autoincrement(),
    )
    op.create_index("ix_review_prediction_id", "review", ["prediction_id"])

    _move_outputs_to_predictions()

    # Job columns first (plain ADD COLUMN on every database), filled in for the existing rows, which
    # are finished jobs whose tasks are the predictions they have.
    op.add_column("analysis", sa.Column("status", sa.String(length=16), nullable=False, server_default="done"))
    op.add_column("analysis", sa.Column("tasks", sa.JSON(), nullable=True))
    op.add_column("analysis", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    for name in ("queued_at", "started_at", "finished_at", "lease_expires_at"):
        op.add_column("analysis", sa.Column(name, sa.DateTime(), nullable=True))
    op.add_column("analysis", sa.Column("error", sa.Text(), nullable=True))
    op.add_column("analysis", sa.Column("error_info", sa.JSON(), nullable=True))
    op.add_column("analysis", sa.Column("batch_id", sa.Integer(), nullable=True))
    op.add_column("analysis", sa.Column("search_text", sa.Text(), nullable=False, server_default=""))
    _fill_tasks()

    # Then one rebuild (SQLite; env.py turns foreign keys off around it) or ALTER (others): old
    # columns out, constraints in. Reflecting `user` for the foreign key warns that its lower()
    # index cannot be reflected; that index is not touched (the table is not rebuilt).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection of expression-based index")
        _rebuild_analysis()
    if _is_sqlite():
        _skip_ids_used_before()


def _skip_ids_used_before() -> None:
    """Start the new AUTOINCREMENT sequence above every id v1 ever gave out, not just the surviving ones.

    v1's table reused the highest id after a delete; the audit log names every analysis it created,
    so a record deleted before this upgrade cannot have its id handed to a new one either.
    """
    op.execute(
        "UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT MAX(CAST(target_id AS INTEGER)) "
        "FROM audit_event WHERE target_type = 'Analysis'), 0)) WHERE name = 'analysis'"
    )


def _rebuild_analysis() -> None:
    with op.batch_alter_table(
        "analysis",
        recreate="always" if _is_sqlite() else "auto",
        table_kwargs=_autoincrement() if _is_sqlite() else {},
    ) as batch_op:
        batch_op.alter_column(
            "status", server_default=None, existing_type=sa.String(length=16), existing_nullable=False
        )
        batch_op.alter_column("attempts", server_default=None, existing_type=sa.Integer(), existing_nullable=False)
        batch_op.alter_column("tasks", nullable=False, existing_type=sa.JSON())
        batch_op.alter_column("search_text", server_default=None, existing_type=sa.Text(), existing_nullable=False)
        batch_op.create_foreign_key("fk_analysis_batch_id_batch", "batch", ["batch_id"], ["id"], ondelete="SET NULL")
        batch_op.create_index("ix_analysis_batch_id", ["batch_id"])
        batch_op.create_index("ix_analysis_status_lease", ["status", "lease_expires_at"])
        batch_op.drop_index("ix_analysis_sentiment_label")
        for column in _OLD_COLUMNS:
            batch_op.drop_column(column)


def _fill_tasks() -> None:
    """Each existing row's tasks (the predictions it has) and search text (text, file name, caption)."""
    bind = op.get_bind()
    analysis = sa.table(
        "analysis",
        *(sa.column(name) for name in ("id", "text", "image_filename", "caption", "sentiment_label", "search_text")),
        sa.column("tasks", sa.JSON()),
    )
    rows = bind.execute(
        sa.select(
            analysis.c.id, analysis.c.text, analysis.c.image_filename, analysis.c.caption, analysis.c.sentiment_label
        )
    ).all()
    for analysis_id, text, filename, caption, sentiment in rows:
        tasks = [kind for kind, value in (("caption", caption), ("sentiment", sentiment)) if value is not None]
        search_text = "\n".join(term for term in (text, filename, caption) if term)
        bind.execute(analysis.update().where(analysis.c.id == analysis_id).values(tasks=tasks, search_text=search_text))


def _move_outputs_to_predictions() -> None:
    """Copy each analysis's caption and sentiment into prediction rows, in chunks."""
    bind = op.get_bind()
    old = sa.table(
        "analysis",
        sa.column("id", sa.Integer),
        sa.column("created_at", sa.DateTime),
        *(sa.column(name, _OLD_TYPES.get(name)) for name in _OLD_COLUMNS),
    )
    prediction = sa.table(
        "prediction",
        sa.column("output", sa.JSON()),
        *(
            sa.column(name)
            for name in (
                "analysis_id",
                "kind",
                "created_at",
                "model_id",
                "revision",
                "precision",
                "latency_ms",
                "confidence",
                "margin",
                "review_state",
                "final_label",
            )
        ),
    )
    last_id = 0
    while True:
        rows = bind.execute(sa.select(old).where(old.c.id > last_id).order_by(old.c.id).limit(_CHUNK)).mappings().all()
        if not rows:
            return
        values = []
        for row in rows:
            if row["caption"] is not None:
                values.append(
                    {
                        "analysis_id": row["id"],
                        "kind": "caption",
                        "created_at": row["created_at"],
                        "model_id": row["caption_model"] or "unknown",
                        "revision": row["caption_revision"],
                        "precision": row["caption_precision"],
                        "latency_ms": row["caption_ms"],
                        "output": {"text": row["caption"]},
                        "confidence": None,
                        "margin": None,
                        "review_state": "unreviewed",
                        "final_label": None,
                    }
                )
            if row["sentiment_label"] is not None:
                scores = row["sentiment_scores"] or {}
                ranked = sorted(scores.values(), reverse=True)
                values.append(
                    {
                        "analysis_id": row["id"],
                        "kind": "sentiment",
                        "created_at": row["created_at"],
                        "model_id": row["sentiment_model"] or "unknown",
                        "revision": row["sentiment_revision"],
                        "precision": row["sentiment_precision"],
                        "latency_ms": row["sentiment_ms"],
                        "output": {
                            "label": row["sentiment_label"],
                            "scores": scores,
                            "raw_scores": row["sentiment_raw_scores"] or {},
                        },
                        "confidence": row["sentiment_score"],
                        "margin": round(ranked[0] - ranked[1], 4) if len(ranked) > 1 else None,
                        "review_state": "unreviewed",
                        "final_label": row["sentiment_label"],
                    }
                )
        if values:
            bind.execute(prediction.insert(), values)
        last_id = rows[-1]["id"]


def downgrade():
    """Back to one row per analysis: the AI outputs return to their columns; reviews, batches and job
    state are dropped (0003 had nowhere to keep them)."""
    with warnings.catch_warnings():  # the same unreflectable lower() index as in upgrade
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection of expression-based index")
        _downgrade()


def _downgrade() -> None:
    with op.batch_alter_table("analysis", recreate="always" if _is_sqlite() else "auto") as batch_op:
        batch_op.add_column(sa.Column("caption", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("caption_model", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("caption_revision", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("caption_precision", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("caption_ms", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("sentiment_label", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("sentiment_score", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("sentiment_scores", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("sentiment_raw_scores", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("sentiment_model", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("sentiment_revision", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("sentiment_precision", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("sentiment_ms", sa.Double(), nullable=True))
        batch_op.create_index("ix_analysis_sentiment_label", ["sentiment_label"])
    bind = op.get_bind()
    analysis = sa.table("analysis", sa.column("id"), *(sa.column(name, _OLD_TYPES.get(name)) for name in _OLD_COLUMNS))
    prediction = sa.table(
        "prediction",
        sa.column("output", sa.JSON()),
        *(
            sa.column(name)
            for name in ("analysis_id", "kind", "model_id", "revision", "precision", "latency_ms", "confidence")
        ),
    )
    for row in bind.execute(sa.select(prediction)).mappings():
        prefix = row["kind"]
        if prefix == "caption":
            values = {"caption": row["output"]["text"]}
        elif prefix == "sentiment":
            values = {
                "sentiment_label": row["output"]["label"],
                "sentiment_score": row["confidence"],
                "sentiment_scores": row["output"].get("scores"),
                "sentiment_raw_scores": row["output"].get("raw_scores"),
            }
        else:
            continue
        values.update(
            {
                f"{prefix}_model": row["model_id"],
                f"{prefix}_revision": row["revision"],
                f"{prefix}_precision": row["precision"],
                f"{prefix}_ms": row["latency_ms"],
            }
        )
        bind.execute(analysis.update().where(analysis.c.id == row["analysis_id"]).values(**values))
    with op.batch_alter_table("analysis", recreate="always" if _is_sqlite() else "auto") as batch_op:
        batch_op.drop_index("ix_analysis_status_lease")
        batch_op.drop_index("ix_analysis_batch_id")
        batch_op.drop_constraint("fk_analysis_batch_id_batch", type_="foreignkey")
        for column in (
            "batch_id",
            "status",
            "tasks",
            "error",
            "error_info",
            "search_text",
            "attempts",
            "queued_at",
            "started_at",
            "finished_at",
            "lease_expires_at",
        ):
            batch_op.drop_column(column)
    op.drop_index("ix_review_prediction_id", table_name="review")
    op.drop_table("review")
    op.drop_index("ix_prediction_analysis_filters", table_name="prediction")
    op.drop_index("ix_prediction_review_state", table_name="prediction")
    op.drop_index("ix_prediction_kind_final", table_name="prediction")
    op.drop_table("prediction")
    op.drop_index("ix_batch_user_created", table_name="batch")
    op.drop_table("batch")
