"""Coordinator side: the `fitgap` command. Each command parses, calls one library function (`api`), prints.

fitgap's own errors (`fitgap.errors`) become one line on stderr and their exit code: 2 for a usage error (the input
is wrong; nothing was written), 1 for a run that stopped (what was written is consistent). No command imports
TensorFlow (only executor processes do).
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import traceback

import click

from fitgap import sqlite
from fitgap.errors import FitgapError, scrub
from fitgap.studies.display import Progress, best_text, counts_text, print_summary, running_lines, short

EXIT_INTERRUPTED = 130


def _store_options(command):
    options = [
        click.option("--workspace", envvar="FITGAP_WORKSPACE", metavar="DIR",
                     help="Folder of the default stores and artifacts [default: ./fitgap-data]."),
        click.option("--storage", envvar="FITGAP_STORAGE", metavar="URL|PATH",
                     help="Optuna storage: an RDB URL or a journal file (.journal, .log) "
                          "[default: optuna.journal in the workspace]."),
        click.option("--tracking-uri", envvar="FITGAP_TRACKING_URI", metavar="URI",
                     help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite in the workspace]."),
        click.option("--results-url", envvar="FITGAP_RESULTS_URL", metavar="URL",
                     help="Results database URL [default: sqlite in the workspace]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _run_options(command):
    """How a coordinator runs its trials: slots, retries, recycling, timeout, models kept, fusing."""
    options = [
        click.option("--gpus", metavar="all|none|0,2", help="GPUs to use, one executor per slot [default: all]."),
        click.option("--slots-per-gpu", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Executors sharing each GPU (each gets 1/K of its memory)."),
        click.option("--cpu-slots", type=click.IntRange(min=0),
                     help="CPU executors [default: none with GPUs, else one per two cores]."),
        click.option("--retries", type=click.IntRange(min=0), default=1, show_default=True,
                     help="Retries of a trial whose executor or coordinator died."),
        click.option("--max-trials-per-executor", type=click.IntRange(min=1), default=100, show_default=True,
                     help="Replace an executor after this many trainings (bounds memory creep)."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                     help="Stop starting new trials after this long; running ones finish."),
        click.option("--save-models", type=click.Choice(["none", "best", "all"]), default="best", show_default=True,
                     help="Keep trained models (Keras format) in WORKSPACE/models/STUDY: none, the best trial's (the "
                          "Pareto set's), or all; kept ones are also logged to their MLflow runs."),
        click.option("--plots", type=click.Choice(["none", "best", "all"]), default="best", show_default=True,
                     help="Trials whose learning curves and decision boundary are rendered into their MLflow runs: "
                          "none, each new best (each trial that beats all finished before it), or all (~0.2 s of "
                          "CPU per trial)."),
        click.option("--fuse", type=click.IntRange(min=1), metavar="K",
                     help="Trials trained together per batch by the fused executor [default: chosen automatically]."),
        click.option("--deterministic", is_flag=True,
                     help="TensorFlow's op determinism in every executor: on a GPU, what `fitgap rerun` needs to "
                          "reproduce a trial to the bit (costs some speed)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _errors_in_one_line(command):
    """fitgap's errors -> one line and their exit code (`fitgap.errors`); anything else is a bug: its traceback,
    exit 1. Both without passwords."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FitgapError as e:
            click.echo(f"fitgap: error: {scrub(str(e))}", err=True)
            sys.exit(e.exit_code)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise  # click's own: a declined confirmation says "Aborted!", as click does
        except Exception:
            click.echo(scrub(traceback.format_exc()), err=True, nl=False)
            sys.exit(1)

    return wrapper


def _stores(kwargs) -> dict:
    return {k: kwargs.pop(k) for k in ("workspace", "storage", "tracking_uri", "results_url")}


class _OneLineUsage(click.UsageError):
    def show(self, file=None) -> None:
        click.echo(f"fitgap: error: {self.format_message()}", err=True)


class _Fitgap(click.Group):
    """Click's own usage errors (an unknown option, a bad option value, a missing argument) are fitgap's one line
    too, exit 2, instead of the usage, a hint and the error; help, asked for or shown for no arguments, is unchanged.
    Click parses the group's arguments in `make_context` and a command's in the group's `invoke`."""

    def make_context(self, *args, **kwargs):
        with _usage_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        try:
            with _usage_in_one_line():
                return super().invoke(ctx)
        finally:
            sqlite.release()  # the command's SQLite files lose their -wal and -shm companions


@contextlib.contextmanager
def _usage_in_one_line():
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.UsageError as e:
        raise _OneLineUsage(e.format_message(), e.ctx) from None


@click.group(cls=_Fitgap, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fitgap")
def main():
    """fitgap: hyperparameter sweeps for TensorFlow that show how regularization trades overfitting against
    accuracy. Trials run in Optuna, and land in MLflow and a results database you can query."""


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--trials", type=click.IntRange(min=1), help="Total trial budget of the study (replaces the stored one).")
@click.option("--allow-builder", is_flag=True, help="Let the spec's `model.builder` import and run your module.")
@_run_options
@_store_options
@_errors_in_one_line
def launch(spec, trials, **kwargs):
    """Create or resume the study of SPEC (a YAML sweep spec) and run it to its trial budget."""
    from fitgap.studies.api import launch as run

    stores = _stores(kwargs)
    _run_coordinator(lambda progress: run(spec, trials=trials, on_trial=progress, on_start=progress.start,
                                          on_epoch=progress.epoch, **kwargs, **stores), stores)


@main.command()
@click.argument("study")
@click.option("--data-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where the study's relative data paths resolve on this machine.")
@click.option("--allow-builder", is_flag=True, help="Let the study's `model.builder` import and run your module.")
@_run_options
@_store_options
@_errors_in_one_line
def worker(study, **kwargs):
    """Join STUDY from another machine (shared storage, results database and MLflow server) and run its trials."""
    from fitgap.studies.api import worker as run

    stores = _stores(kwargs)
    _run_coordinator(lambda progress: run(study, on_trial=progress, on_start=progress.start, on_epoch=progress.epoch,
                                          **kwargs, **stores), stores)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--trials", type=click.IntRange(min=1), help="Total trial budget of the study.")
@click.option("--allow-builder", is_flag=True, help="Let the spec's `model.builder` module be found.")
@_store_options
@_errors_in_one_line
def create(spec, trials, allow_builder, **kwargs):
    """Create the study of SPEC without running trials (workers join it with `fitgap worker`)."""
    from fitgap.studies.api import create as make

    summary = make(spec, trials=trials, allow_builder=allow_builder, **_stores(kwargs))
    click.echo(f"study {summary.study}: budget {summary.budget}; join it with `fitgap worker {summary.study}`")


@main.command()
@click.argument("study")
@_store_options
@_errors_in_one_line
def stop(study, **kwargs):
    """Ask every coordinator of STUDY, on any machine, to finish its running trials and exit."""
    from fitgap.studies.api import stop as request

    request(study, **_stores(kwargs))
    click.echo(f"study {study}: stop requested; coordinators finish their running trials, then exit")


@main.command()
@click.argument("study")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_store_options
@_errors_in_one_line
def delete(study, yes, **kwargs):
    """Remove STUDY from the Optuna storage, MLflow and the results database."""
    from fitgap.studies.api import delete as remove
    from fitgap.studies.stores import Stores
    from fitgap.studies.study import load_study

    stores = _stores(kwargs)
    load_study(study, Stores.resolve(**stores))  # an unknown study is an error before any question
    if not yes:
        click.confirm(f"Delete study {study!r} and all its trials, runs and results?", abort=True)
    remove(study, **stores)
    click.echo(f"study {study}: deleted")


def _run_coordinator(run, stores: dict) -> None:
    from fitgap.studies.api import Interrupted, answer

    progress = Progress()
    # SIGTERM (timeout, docker stop, systemd, schedulers) ends a launch as Ctrl-C does: the coordinator catches both
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        summary = run(progress)
    except Interrupted as e:
        progress.done()
        print_summary(e.summary, stores)
        click.echo(f"{e}: running trials were recorded as failed", err=True)
        sys.exit(128 + e.signum)  # 130 for Ctrl-C, 143 for SIGTERM, as shells report them
    except KeyboardInterrupt:  # outside the coordinator's loop: RUNNING trials are failed and retried by the next launch
        progress.done()
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    progress.done()
    print_summary(summary, stores, answer(summary.study, **stores))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--allow-builder", is_flag=True, help="Let the spec's `model.builder` module be found (and its package "
              "imported).")
@_errors_in_one_line
def validate(spec, allow_builder):
    """Check SPEC and its data without creating anything."""
    from fitgap.studies.api import validate as check

    parsed, data = check(spec, allow_builder)
    test = f" and {len(data.x_test)} test" if data.x_test is not None else ""
    click.echo(f"{spec}: ok — study {parsed.name!r}, {len(parsed.search)} searched dimensions, "
               f"{len(data.x_train)} training, {len(data.x_val)} validation{test} samples")


@main.command(name="studies")
@_store_options
@_errors_in_one_line
def list_studies(**kwargs):
    """List the studies in the stores."""
    from fitgap.studies.api import studies

    found = studies(**_stores(kwargs))
    if not found:
        click.echo("no studies")
    for summary in found:
        click.echo(f"{summary.study}\t{counts_text(summary)}\tbest {best_text(summary)}")


@main.command()
@click.argument("study")
@_store_options
@_errors_in_one_line
def status(study, **kwargs):
    """Show a study's budget, trial counts, best trial and running trials."""
    from fitgap.studies.api import status as get

    summary = get(study, **_stores(kwargs))
    click.echo(f"study {summary.study}: {counts_text(summary)} of a budget of {summary.budget}")
    click.echo(f"best: {best_text(summary)}")
    for note in summary.best[0].get("notes", []) if summary.best else []:
        click.echo(f"  note: {note}")
    for line in running_lines(summary):
        click.echo(line)


@main.command()
@click.argument("study")
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True, help="How many trials.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_store_options
@_errors_in_one_line
def best(study, top, as_json, **kwargs):
    """Show the best trials of a study (the Pareto set of a multi-objective one)."""
    from fitgap.studies.api import best as get

    trials = get(study, top, **_stores(kwargs))
    if as_json:
        click.echo(json.dumps(trials, indent=2))
        return
    if not trials:
        click.echo("no complete trial yet")
    for trial in trials:
        values = ", ".join(f"{v:.4g}" for v in trial["values"])
        params = ", ".join(f"{k}={short(v)}" for k, v in trial["params"].items())
        verdict = f"  [{trial['verdict']}]" if trial.get("verdict") else ""
        click.echo(f"trial {trial['number']}: {values}{verdict}  {params}")
        for note in trial.get("notes", []):
            click.echo(f"  note: {note}")


@main.command()
@click.argument("study", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. The MLflow UI has no authentication: beyond this machine, put an "
                   "authenticating proxy in front.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="Port to listen on.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Server workers.")
@_store_options
@_errors_in_one_line
def ui(study, host, port, workers, **kwargs):
    """Open the MLflow UI on the workspace's tracking store and print the runs page of each study."""
    from fitgap.studies.stores import Stores
    from fitgap.studies.ui import serve

    serve(Stores.resolve(**_stores(kwargs)), study, host, port, workers, lambda line, err: click.echo(line, err=err))


@main.command()
@click.argument("study", required=False)
@click.option("--where", metavar="EXPR",
              help="Filter, e.g. \"regularizer = 'l2' and best_gap < 0.02\": = != < <= > >=, in (...), is [not] null, "
                   "and/or/not, parentheses; strings in single quotes.")
@click.option("--order-by", metavar="COL", help="Sort key: COL, -COL or 'COL desc' (comma-separated for several).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows.")
@click.option("--columns", metavar="A,B,C", help="Columns to show [default: a readable set for table, all for csv/json].")
@click.option("--sql", metavar="SELECT", help="One reading SQL statement over the results database instead of a STUDY.")
@click.option("--sql-timeout", type=click.FloatRange(min=0, min_open=True, max=86400), default=30, show_default=True,
              metavar="SECONDS", help="Stop a --sql statement that runs longer (without --limit, it may also return "
              "at most 100,000 rows).")
@click.option("--format", "format_", default="table", show_default=True, metavar="table|csv|json",
              help="Output format.")
@_store_options
@_errors_in_one_line
def query(study, where, order_by, limit, columns, sql, sql_timeout, format_, **kwargs):
    """Print a study's trials from the results database (filtered, sorted), or the rows of a read-only --sql."""
    from fitgap.studies.stores import Stores
    from fitgap.tracking.query import query_text

    names = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    text = query_text(Stores.resolve(**_stores(kwargs)).results_url, study, sql=sql, where=where,
                      order_by=order_by, limit=limit, columns=names, format=format_, sql_timeout=sql_timeout)
    click.echo(text, nl=False)


@main.command()
@click.argument("study")
@click.option("--format", "format_", required=True, metavar="csv|parquet", help="File format.")
@click.option("--out", type=click.Path(dir_okay=False), help="Output file [default: ./STUDY.FORMAT].")
@_store_options
@_errors_in_one_line
def export(study, format_, out, **kwargs):
    """Write every trial of STUDY in the results database to a CSV or Parquet file."""
    import re

    from fitgap.studies.stores import Stores
    from fitgap.tracking.query import export as write

    out = out or f"{re.sub(r'[^A-Za-z0-9_.-]', '_', study)}.{format_}"
    rows = write(Stores.resolve(**_stores(kwargs)).results_url, study, out, format_)
    click.echo(f"wrote {rows} trials of {study} to {out}")


@main.command()
@click.argument("study")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the report and its plots "
              "[default: WORKSPACE/reports/STUDY].")
@click.option("--format", "format_", type=click.Choice(["md", "html"]), default="md", show_default=True,
              help="md (plots as PNG files beside it) or html (plots embedded).")
@_store_options
@_errors_in_one_line
def report(study, out, format_, **kwargs):
    """Write STUDY's overfitting-vs-regularization report (tables, trends, importances, plots) and log it to the
    study's MLflow run."""
    from fitgap.studies.api import report as write

    from fitgap.studies.api import answer

    stores = _stores(kwargs)
    path = write(study, out, format_, **stores)
    for line in answer(study, **stores):
        click.echo(f"answer: {line}")
    click.echo(f"report of {study}: {path}")


@main.command()
@click.argument("study")
@click.argument("number", type=click.IntRange(min=0))
@click.option("--data-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where the study's relative data paths resolve on this machine.")
@click.option("--gpus", metavar="all|none|0,2", help="Device to train on [default: a GPU if there is one].")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1e-5, show_default=True,
              help="Largest difference (relative to each metric's scale) still counted as a match.")
@click.option("--allow-builder", is_flag=True, help="Let the study's `model.builder` import and run its module.")
@_store_options
@_errors_in_one_line
def rerun(study, number, data_dir, gpus, tolerance, allow_builder, **kwargs):
    """Train trial NUMBER of STUDY again from its stored params and seed, and compare its curves with the stored
    ones (exit 1 when they differ)."""
    from fitgap.studies.api import rerun as again

    result = again(study, number, data_dir=data_dir, gpus=gpus, tolerance=tolerance, allow_builder=allow_builder,
                   **_stores(kwargs))
    click.echo(result.comparison())
    if not result.matches:
        sys.exit(1)


@main.command(name="path")
@click.argument("study")
@click.option("--trial", type=click.IntRange(min=0), metavar="N",
              help="The trial whose settings the path keeps [default: the best; required for several objectives].")
@click.option("--regularizers", metavar="A,B", help="Regularizers traced beside the unregularized baseline: l1, l2, "
              "l1_l2 (at the default l1_ratio) [default: l1,l2].")
@click.option("--weights", metavar="LOW:HIGH:COUNT", help="COUNT weights evenly spaced on a log scale from LOW to "
              "HIGH [default: 1e-5:1e-1:9].")
@click.option("--repeats", type=click.IntRange(min=1), help="Trainings (seeds) per point [default: 5].")
@click.option("--name", metavar="NEW", help="The new study's name [default: STUDY-path-N].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where the study's relative data paths resolve on this machine.")
@click.option("--allow-builder", is_flag=True, help="Let the study's `model.builder` import and run its module.")
@_run_options
@_store_options
@_errors_in_one_line
def path_command(study, trial, regularizers, weights, repeats, name, **kwargs):
    """Trace how regularization trades overfitting against accuracy from one trial of STUDY: a new study, linked to
    it, with every other setting fixed at the trial's, trains the unregularized baseline and each regularizer at
    each weight, several seeds each; then writes its report."""
    from fitgap.studies.api import path as trace

    stores = _stores(kwargs)
    given = {k: v for k, v in dict(trial=trial, regularizers=regularizers, weights=weights, repeats=repeats,
                                   new_name=name).items() if v is not None}  # the others: the API's defaults
    done = []

    def run(progress):
        summary, report_file = trace(study, on_trial=progress, on_start=progress.start, on_epoch=progress.epoch,
                                     **given, **kwargs, **stores)
        done.append((summary.study, report_file))
        return summary

    _run_coordinator(run, stores)
    click.echo(f"report of {done[0][0]}: {done[0][1]}")


if __name__ == "__main__":
    main()
