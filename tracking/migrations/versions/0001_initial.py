"""The initial results schema: trials, trial_params, epochs.

Revision ID: 0001
Revises:

Frozen in time: the names below are spelled out, not imported, so later vocabulary changes cannot alter
what this migration creates.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

METRICS = ("loss", "val_loss", "bce", "val_bce", "accuracy", "val_accuracy", "gap", "accuracy_gap", "reg_loss", "lr")


def upgrade() -> None:
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study", sa.Text, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("value", sa.Float),
        sa.Column("values_json", sa.Text),
        sa.Column("learning_rate", sa.Float),
        sa.Column("decay_rate", sa.Float),
        sa.Column("decay_steps", sa.Integer),
        sa.Column("staircase", sa.Boolean),
        sa.Column("activation", sa.Text),
        sa.Column("leaky_alpha", sa.Float),
        sa.Column("loss", sa.Text),
        sa.Column("regularizer", sa.Text),
        sa.Column("regularization_weight", sa.Float),
        sa.Column("optimizer", sa.Text),
        sa.Column("epochs", sa.Integer),
        sa.Column("batch_size", sa.Integer),
        sa.Column("hidden", sa.Text),
        sa.Column("params_total", sa.BigInteger),
        sa.Column("params_trainable", sa.BigInteger),
        sa.Column("macs", sa.BigInteger),
        sa.Column("best_epoch", sa.Integer),
        *(sa.Column(f"best_{m}", sa.Float) for m in METRICS),
        *(sa.Column(f"final_{m}", sa.Float) for m in METRICS),
        sa.Column("seed", sa.Integer),
        sa.Column("device", sa.Text),
        sa.Column("slot", sa.Integer),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("duration_s", sa.Float),
        sa.Column("mlflow_run_id", sa.Text),
        sa.UniqueConstraint("study", "number", name="uq_trials_study_number"),
    )
    op.create_index("ix_trials_study_state", "trials", ["study", "state"])
    op.create_index("ix_trials_study_value", "trials", ["study", "value"])
    op.create_index("ix_trials_study_regularizer", "trials", ["study", "regularizer"])

    op.create_table(
        "trial_params",
        sa.Column(
            "trial_id", sa.Integer, sa.ForeignKey("trials.id", ondelete="CASCADE", name="fk_trial_params_trial_id")
        ),
        sa.Column("name", sa.Text),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("value_num", sa.Float),
        sa.PrimaryKeyConstraint("trial_id", "name", name="pk_trial_params"),
    )
    op.create_index("ix_trial_params_name_value_num", "trial_params", ["name", "value_num"])

    op.create_table(
        "epochs",
        sa.Column(
            "trial_id", sa.Integer, sa.ForeignKey("trials.id", ondelete="CASCADE", name="fk_epochs_trial_id")
        ),
        sa.Column("epoch", sa.Integer),
        *(sa.Column(m, sa.Float) for m in METRICS),
        sa.PrimaryKeyConstraint("trial_id", "epoch", name="pk_epochs"),
    )


def downgrade() -> None:
    op.drop_table("epochs")
    op.drop_table("trial_params")
    op.drop_table("trials")
