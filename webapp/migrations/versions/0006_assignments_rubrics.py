"""Teaching: rubrics with ordered criteria, assignments graded with one rubric, and their submissions
(one homework photo each, stored as an analysis). Grades need no table: they are reviews of
``grade`` predictions.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "rubric",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_rubric_user_created", "rubric", ["user_id", "created_at"])
    op.create_table(
        "rubric_criterion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rubric_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("max_points", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["rubric_id"], ["rubric.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_rubric_criterion_rubric_id", "rubric_criterion", ["rubric_id"])
    op.create_table(
        "assignment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("reference_text", sa.Text(), nullable=True),
        sa.Column("rubric_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rubric_id"], ["rubric.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_assignment_user_created", "assignment", ["user_id", "created_at"])
    op.create_index("ix_assignment_rubric_id", "assignment", ["rubric_id"])
    op.create_table(
        "submission",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("student_name", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["assignment_id"], ["assignment.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["analysis_id"], ["analysis.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("analysis_id", name="uq_submission_analysis"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_submission_assignment_id", "submission", ["assignment_id"])


def downgrade():
    # Grades are reviews of "grade" predictions; without their submissions they would be orphans.
    # Reviews go first: foreign keys are off while migrating, so nothing cascades.
    op.execute("DELETE FROM review WHERE prediction_id IN (SELECT id FROM prediction WHERE kind = 'grade')")
    op.execute("DELETE FROM prediction WHERE kind = 'grade'")
    op.drop_index("ix_submission_assignment_id", table_name="submission")
    op.drop_table("submission")
    op.drop_index("ix_assignment_rubric_id", table_name="assignment")
    op.drop_index("ix_assignment_user_created", table_name="assignment")
    op.drop_table("assignment")
    op.drop_index("ix_rubric_criterion_rubric_id", table_name="rubric_criterion")
    op.drop_table("rubric_criterion")
    op.drop_index("ix_rubric_user_created", table_name="rubric")
    op.drop_table("rubric")
