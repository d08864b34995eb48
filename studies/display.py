"""Coordinator side: what the `fitgap` command prints of a study — the progress of a launch and the summaries.

No command imports TensorFlow, and neither does this.
"""

from __future__ import annotations

import click
import rich.progress
from rich.console import Console


class Progress:
    """What a launch shows on stderr while it runs: the objective's best so far, trials finished and failed, elapsed
    time and ETA. On a terminal a live bar (rich); elsewhere (a log, a pipe, CI) one plain line per trial."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.metric, self.maximize = "value", True
        self.best: tuple[float, int] | None = None  # (value, trial)
        self.failed = 0
        self.bar: rich.progress.Progress | None = None  # on a terminal, once the launch has started
        self.task: rich.progress.TaskID | None = None

    def start(self, spec, executors: int, used: int, budget: int) -> None:
        """The study is open and its executors are starting: say so (importing TensorFlow takes seconds)."""
        self.metric, self.maximize = spec.metrics[0], spec.directions[0] == "maximize"
        plural = "s" if executors > 1 else ""
        line = (f"study {spec.name}: {used}/{budget} trials done; starting {executors} executor{plural} "
                f"(importing TensorFlow)…")
        if not self.live:
            click.echo(line, err=True)
            return
        self.bar = rich.progress.Progress(
            rich.progress.SpinnerColumn(), rich.progress.TextColumn("{task.description}"), rich.progress.BarColumn(),
            rich.progress.MofNCompleteColumn(), rich.progress.TextColumn("{task.fields[status]}"),
            rich.progress.TimeElapsedColumn(), rich.progress.TextColumn("ETA"), rich.progress.TimeRemainingColumn(),
            console=self.console, transient=False)
        self.task = self.bar.add_task(spec.name, total=budget, completed=used, status="starting executors…")
        self.bar.start()

    def __call__(self, record, used: int, budget: int) -> None:
        value = record.values[0] if record.values else None
        if value is not None and (self.best is None or
                                  (value > self.best[0] if self.maximize else value < self.best[0])):
            self.best = (value, record.number)
        self.failed += record.state == "FAIL"
        outcome = f"{self.metric}={value:.4g}" if value is not None else (record.reason or "")[:60]
        best = f"best {self.metric}={self.best[0]:.4g} (trial {self.best[1]})" if self.best else "no best yet"
        failed = f", {self.failed} failed" if self.failed else ""
        if self.bar is None:
            click.echo(f"{used}/{budget}  trial {record.number} {record.state} {outcome} ({record.duration_s:.1f} s)"
                       f"  |  {best}{failed}", err=True)
            return
        self.bar.update(self.task, completed=min(used, budget), total=budget,
                        status=f"{best}{failed}  last: trial {record.number} {record.state} {outcome}")

    def done(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


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
