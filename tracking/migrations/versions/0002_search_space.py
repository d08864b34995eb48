"""The full search space: columns for the new hyperparameters, per-task metrics, test metrics and repeats.

Revision ID: 0002
Revises: 0001

Frozen in time: the names below are spelled out, not imported, so later vocabulary changes cannot alter
what this migration creates. Every column is nullable and added at the end of its table: existing rows keep their
values and read NULL in the new columns.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW_METRICS = ("ce", "val_ce", "mse", "val_mse", "mae", "val_mae")
TEST_METRICS = ("test_loss", "test_bce", "test_ce", "test_mse", "test_mae", "test_accuracy")
NEW_PARAMS = {
    "decay_unit": sa.Text,
    "cost": sa.Float,
    "profit": sa.Float,
    "l1_ratio": sa.Float,
    "dropout": sa.Float,
    "momentum": sa.Float,
    "rho": sa.Float,
    "beta_1": sa.Float,
    "beta_2": sa.Float,
    "initializer": sa.Text,
    "standardize": sa.Boolean,
    "early_stopping": sa.Integer,
    "depth": sa.Integer,
    "width": sa.Integer,
    "model_kind": sa.Text,
}


def _trial_columns() -> list[sa.Column]:
    return [
        *(sa.Column(name, type_) for name, type_ in NEW_PARAMS.items()),
        sa.Column("params_non_trainable", sa.BigInteger),
        *(sa.Column(f"best_{m}", sa.Float) for m in NEW_METRICS),
        *(sa.Column(f"final_{m}", sa.Float) for m in NEW_METRICS),
        *(sa.Column(m, sa.Float) for m in TEST_METRICS),
        sa.Column("repeats", sa.Integer),
        sa.Column("value_std", sa.Float),
    ]


def upgrade() -> None:
    for column in _trial_columns():
        op.add_column("trials", column)
    for metric in NEW_METRICS:
        op.add_column("epochs", sa.Column(metric, sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("epochs") as batch:  # SQLite drops columns by copying the table
        for metric in NEW_METRICS:
            batch.drop_column(metric)
    with op.batch_alter_table("trials") as batch:
        for column in _trial_columns():
            batch.drop_column(column.name)
