"""Coordinator side: what the `fitgap` command prints of a study — the progress of a launch and the summaries.

No command imports TensorFlow, and neither does this.
"""

from __future__ import annotations

import math
import time

import click
import rich.progress
from rich.console import Console


class Progress:
    """What a launch shows on stderr while it runs: the objective's best so far, trials finished and failed, elapsed
    time and ETA. On a terminal a live bar (rich), which also says what is training ("64 running, epoch 37/100", from
    each epoch record the coordinator receives: `epoch`) and counts each member of a fused batch as it is written;
    elsewhere (a log, a pipe, CI) one plain line per finished trial."""

    SHOW_EVERY_S = 0.25  # epoch records come by the thousand from a fused batch: the bar changes a few times a second

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.metric, self.maximize = "value", True
        self.best: tuple[float, int] | None = None  # (value, trial)
        self.failed = 0
        self.last = ""  # the last trial written
        self.training: dict[int, tuple[int, int]] = {}  # trial -> (epochs done, of epochs), until it is written
        self.shown_at = -math.inf
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

    def epoch(self, number: int, epoch: int, epochs: int) -> None:
        """The coordinator received trial `number`'s epoch `epoch` (from 0) of `epochs`."""
        if self.bar is None:
            return
        self.training[number] = (epoch + 1, epochs)
        if time.monotonic() - self.shown_at >= self.SHOW_EVERY_S:
            self._show()

    def __call__(self, record, used: int, budget: int) -> None:
        value = record.values[0] if record.values else None
        if value is not None and (self.best is None or
                                  (value > self.best[0] if self.maximize else value < self.best[0])):
            self.best = (value, record.number)
        self.failed += record.state == "FAIL"
        outcome = f"{self.metric}={value:.4g}" if value is not None else (record.reason or "")[:60]
        if self.bar is None:
            click.echo(f"{used}/{budget}  trial {record.number} {record.state} {outcome} ({record.duration_s:.1f} s)"
                       f"  |  {self._best()}", err=True)
            return
        self.training.pop(record.number, None)
        self.last = f"  last: trial {record.number} {record.state} {outcome}"
        self.bar.update(self.task, completed=min(used, budget), total=budget)
        self._show()

    def _best(self) -> str:
        best = f"best {self.metric}={self.best[0]:.4g} (trial {self.best[1]})" if self.best else "no best yet"
        return best + (f", {self.failed} failed" if self.failed else "")

    def _show(self) -> None:
        """The bar's status: what is training (the least advanced of it), the best so far, the last trial."""
        running = ""
        if self.training:
            done, epochs = min(self.training.values(), key=lambda t: t[0] / max(t[1], 1))
            running = f"{len(self.training)} running, epoch {done}/{epochs}  |  "
        self.bar.update(self.task, status=f"{running}{self._best()}{self.last}")
        self.shown_at = time.monotonic()

    def done(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def print_summary(summary, stores: dict, answer: list[str] = ()) -> None:
    """The end of a launch: counts, the best trial, the study's answer (`api.answer`) and the next commands."""
    click.echo(f"study {summary.study}: {counts_text(summary)} of a budget of {summary.budget}; "
               f"{len(summary.finished)} trials in {summary.elapsed_s:.1f} s")
    click.echo(f"best: {best_text(summary)}")
    for line in answer:
        click.echo(f"answer: {line}")
    where = f" --workspace {stores['workspace']}" if stores.get("workspace") else ""
    path = "" if summary.parent else f"fitgap path {summary.study}{where}   |   "  # not a path of a path
    click.echo(f"next: fitgap report {summary.study}{where}   |   {path}fitgap ui {summary.study}{where}")


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


def running_lines(summary) -> list[str]:
    """`fitgap status`'s lines on the running trials: epochs written of the trial's, the objective and the gap at
    the latest, time since its training started."""
    if not summary.running:
        return []
    metric = summary.metrics[0] if summary.metrics else "value"
    lines = [f"running: {len(summary.running)}"]
    for trial in summary.running:
        if trial.epoch is None:
            lines.append(f"  trial {trial.number}  epoch -/{trial.epochs}  no epoch written yet  "
                         f"(asked {elapsed(trial.running_s)} ago)")
            continue
        value = "-" if trial.value is None else f"{trial.value:.4g}"
        gap = "-" if trial.gap is None else f"{trial.gap:.4g}"
        lines.append(f"  trial {trial.number}  epoch {trial.epoch}/{trial.epochs}  {metric}={value}  gap={gap}  "
                     f"for {elapsed(trial.running_s)}")
    return lines


def elapsed(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
