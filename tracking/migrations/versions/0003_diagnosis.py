"""Per-trial diagnosis (verdict, overfitting onset, loss-independent fit gaps) and the executor that trained a trial.

Revision ID: 0003
Revises: 0002

Frozen in time: the names below are spelled out, not imported, so later vocabulary changes cannot alter
what this migration creates. Every column is nullable and added at the end of `trials`: existing rows keep their
values and read NULL in the new columns (a trial written before 0003 has no diagnosis until it is written again).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _trial_columns() -> list[sa.Column]:
    return [
        sa.Column("executor", sa.Text),  # keras, compiled or fused
        sa.Column("verdict", sa.Text),  # underfit, good_fit or overfit (tracking/diagnosis.py)
        sa.Column("verdict_reason", sa.Text),  # the rule that decided, with its numbers
        sa.Column("overfit_epoch", sa.Integer),  # where overfitting set in; NULL: it did not (or too few epochs)
        sa.Column("fit_measure", sa.Text),  # accuracy_gap or relative_mse_gap
        sa.Column("best_fit_gap", sa.Float),  # that measure at the best epoch...
        sa.Column("final_fit_gap", sa.Float),  # ...and at the final one
    ]


def upgrade() -> None:
    for column in _trial_columns():
        op.add_column("trials", column)
    op.create_index("ix_trials_study_verdict", "trials", ["study", "verdict"])


def downgrade() -> None:
    op.drop_index("ix_trials_study_verdict", "trials")
    with op.batch_alter_table("trials") as batch:  # SQLite drops columns by copying the table
        for column in _trial_columns():
            batch.drop_column(column.name)
