"""The course's forms as hyperparameters: sgdm's momentum form, Adagrad's initial accumulator, layers without a bias,
and training without reshuffling.

Revision ID: 0005
Revises: 0004

Frozen in time, as 0003. Every column is nullable and added at the end of `trials`: rows written before 0005 read
NULL there, and were trained as the defaults say (Keras's momentum, an accumulator from 0.1, biases, reshuffled rows).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _trial_columns() -> list[sa.Column]:
    return [
        sa.Column("momentum_form", sa.Text),  # sgdm only: keras | course
        sa.Column("initial_accumulator", sa.Float),  # adagrad only
        sa.Column("use_bias", sa.Boolean),
        sa.Column("shuffle", sa.Boolean),
    ]


def upgrade() -> None:
    for column in _trial_columns():
        op.add_column("trials", column)


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:  # SQLite drops columns by copying the table
        for column in _trial_columns():
            batch.drop_column(column.name)
