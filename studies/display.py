"""Coordinator side: what the `fitgap` command prints of a study — the progress of a launch and the summaries.

No command imports TensorFlow, and neither does this.
"""

from __future__ import annotations

import sys

import click


class Progress:
    """A bar of the budget and the latest trial, redrawn in place on a terminal, one line per trial elsewhere."""

    def __init__(self):
        self.tty = sys.stderr.isatty()

    def __call__(self, record, used: int, budget: int) -> None:
        value = f"{record.values[0]:.4g}" if record.values else (record.reason or "")
        filled = round(20 * min(used, budget) / max(budget, 1))
        line = (f"[{'#' * filled}{'.' * (20 - filled)}] {used}/{budget}  trial {record.number} {record.state} "
                f"{value} ({record.duration_s:.1f} s)")
        click.echo(("\r\x1b[K" if self.tty else "") + line, err=True, nl=not self.tty)

    def done(self) -> None:
        if self.tty:
            click.echo(err=True)


def print_summary(summary, stores: dict) -> None:
    click.echo(f"study {summary.study}: {counts_text(summary)} of a budget of {summary.budget}; "
               f"{len(summary.finished)} trials in {summary.elapsed_s:.1f} s")
    click.echo(f"best: {best_text(summary)}")
    where = f" --workspace {stores['workspace']}" if stores.get("workspace") else ""
    click.echo(f"next: fitgap best {summary.study} --top 5{where}   |   fitgap ui {summary.study}{where}")


def counts_text(summary) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(summary.counts.items())) or "no trials"


def best_text(summary) -> str:
    if not summary.best:
        return "none yet"
    trial = summary.best[0]
    values = ", ".join(f"{m}={v:.4g}" for m, v in zip(summary.metrics, trial["values"]))
    more = f" (+{len(summary.best) - 1} more on the Pareto front)" if len(summary.best) > 1 else ""
    return f"trial {trial['number']} {values}{more}"


def short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
