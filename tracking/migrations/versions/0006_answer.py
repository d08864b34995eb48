"""One fit gap, the data a score is judged against, seeds apart, and studies linked to their parents.

Revision ID: 0006
Revises: 0005

Frozen in time, as 0003. The trial's own-loss gap is renamed for what it is: `gap` -> `loss_gap` (epochs),
`best_gap`/`final_gap` -> `best_loss_gap`/`final_loss_gap` (trials), values kept. The fit gap becomes an epoch
metric (`epochs.fit_gap`); `trials.best_fit_gap`/`final_fit_gap` keep their names, and `fit_measure` says which
measure a row's fit gap is (rows written before 0006 say `accuracy_gap` or `relative_mse_gap`, the old measures).
New nullable columns at the end of `trials`: the validation set's size and what the trivial prediction scores on it,
and each repeat's own numbers. `study_links` links a study (a regularization path) to the trial it started from.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_RENAMED = {"trials": {"best_gap": "best_loss_gap", "final_gap": "final_loss_gap"}, "epochs": {"gap": "loss_gap"}}


def _trial_columns() -> list[sa.Column]:
    return [
        sa.Column("val_size", sa.Integer),  # validation rows: the binomial interval of a val accuracy needs it
        sa.Column("val_baseline", sa.Float),  # majority-class val accuracy, or the training mean's val mse
        sa.Column("repeats_json", sa.Text),  # per repeat: its objective and fit gap at the trial's best epoch
    ]


def upgrade() -> None:
    _rename(_RENAMED)
    op.add_column("epochs", sa.Column("fit_gap", sa.Float))
    for column in _trial_columns():
        op.add_column("trials", column)
    op.create_table(
        "study_links",
        sa.Column("study", sa.Text, primary_key=True),
        sa.Column("parent_study", sa.Text, nullable=False),
        sa.Column("parent_trial", sa.Integer),
        sa.Column("kind", sa.Text),  # what the study is of its parent: "path"
        sa.Column("created_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("study_links")
    with op.batch_alter_table("trials") as batch:
        for column in _trial_columns():
            batch.drop_column(column.name)
    with op.batch_alter_table("epochs") as batch:
        batch.drop_column("fit_gap")
    _rename({table: {new: old for old, new in names.items()} for table, names in _RENAMED.items()})


def _rename(tables: dict[str, dict[str, str]]) -> None:
    # SQLite (3.25+) and PostgreSQL rename in place; a batch copy of `trials` would cascade-delete its epochs.
    for table, names in tables.items():
        for old, new in names.items():
            op.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
