"""Live curves and a trial's own time: when each epoch ended, a trial's wait for a slot apart from its duration, and
why its executor ran.

Revision ID: 0004
Revises: 0003

Frozen in time, as 0003. Every column is nullable and added at the end of its table: rows written before 0004 read
NULL there. From 0004 on, `trials` also holds RUNNING rows (a trial's epochs so far, written while it trains), and
`duration_s` counts from the trial's dispatch to a slot (before, from Optuna's ask: its wait included).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _trial_columns() -> list[sa.Column]:
    return [
        sa.Column("wait_s", sa.Float),  # from Optuna's ask to the dispatch of its first training
        sa.Column("executor_reason", sa.Text),  # why that executor (and XLA mode) ran
    ]


def upgrade() -> None:
    for column in _trial_columns():
        op.add_column("trials", column)
    op.add_column("epochs", sa.Column("ended_at", sa.Float))  # unix seconds


def downgrade() -> None:
    with op.batch_alter_table("epochs") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("ended_at")
    with op.batch_alter_table("trials") as batch:
        for column in _trial_columns():
            batch.drop_column(column.name)
