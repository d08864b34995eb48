"""Trials per minute on the reference sweep: the hand-written loop against fitgap's keras, compiled and fused executors.

    .venv/bin/python bench/throughput.py [--trials 512] [--compiled-trials N] [--keras-trials 64] [--baseline-trials 4]
                                         [--epochs 100] [--fuse K] [--slots 1]
                                         [--live-executor fused|compiled|keras|none]
                                         [--live-pairs 2]

The reference sweep: the course's 2-D points (dot: 240 training and 60 validation points), the dot spec's search space
(sweeps/specs/dot.yaml), 2-11-1 network, batch 32, validation every epoch. One fixed list of parameter sets, sampled
once from that space with a seeded RandomSampler, is run (each runner its first N of the list) by:

1. the loop a user writes by hand (the baseline): Optuna on SQLite, optuna-integration's `MLflowCallback` (MLflow on
   SQLite), `model.fit` with Keras's `ExponentialDecay`, whose `decay_steps` is the spec's times the steps per epoch so
   that it trains the same schedule (`pip install optuna-integration`);
2.-4. fitgap with `executor: keras`, `compiled` and `fused`, each through `studies.launch` into a fresh workspace, as a
   user runs it: Optuna, MLflow and the results database on SQLite, the parameter sets from the random sampler.

End to end = from the start of the run to its end, storage and tracking included (fitgap's executor start-up too);
steady = from the first finished trial to the last. Training only = the trainer alone, in this process, without
storage (the baseline: its model building and `fit`). The val_loss column: the largest difference in final val_loss
between each fitgap executor and the keras executor (same trial, same seed), over the trials both completed that did
not diverge (final val_loss below 10: a diverging trial follows float rounding, not its parameters), and how many
those were. The baseline's
is not comparable (Keras's val_loss includes the penalty, and fit shuffles and initializes its own way); the mean best
val_accuracy over the baseline's trials (the first of the list, which every runner ran) shows the same work was done.

Live writing: the `--live-executor` runner (fused by default) runs `--live-pairs` more times with live writing off
(`coordinator.LIVE_EVERY_S = inf`) and as many again as shipped, interleaved (off, on, on, off, ...: the first run as
shipped is the table's) so that neither side gets the quieter minutes of a shared machine; the ratio of their total
times shows what live writing costs a sweep whose trials (or fused batches) end sooner than `LIVE_EVERY_S`: they are
written once, at their end, as without it (the live writes counted say so).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import yaml

from fitgap import launch
from fitgap.sweeps.space import derive_seed, make_sampler, suggest, trial_params
from fitgap.sweeps.spec import parse_spec

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "specs" / "dot.yaml"
EXECUTORS = ("keras", "compiled", "fused")
DIVERGED = 10.0  # final val_loss above which a trial is left out of the executors' comparison


def reference_spec(epochs: int, name: str = "bench-throughput", **changes):
    raw = yaml.safe_load(SPEC.read_text())
    return parse_spec({**raw, "name": name, "epochs": epochs, **changes})


def parameter_sets(count: int, epochs: int) -> list[dict]:
    """The fixed list (searched names only, as Optuna's params): what a fitgap study of the reference spec with the
    random sampler asks, in order. The fitgap runs get it from their sampler, as a user's sweep would (enqueueing
    hundreds of trials would make every ask read them all); `through_launch` checks that they ran it."""
    spec = reference_spec(epochs, sampler="random")
    study = optuna.create_study(sampler=make_sampler(spec, derive_seed(spec.seed, "sampler")))
    return [suggest(study.ask(), spec) for _ in range(count)]


# ---- 1. the hand-written loop ----------------------------------------------------------------------------------------


def baseline(sets: list[dict], epochs: int, folder: Path) -> dict:
    import keras
    from optuna_integration.mlflow import MLflowCallback

    from fitgap.data.datasets import load_dataset

    data = load_dataset({"name": "dot", "validation_fraction": 0.2})
    steps = math.ceil(len(data.x_train) / 32)
    training = []

    def objective(trial: optuna.Trial) -> float:
        learning_rate = trial.suggest_float("learning_rate", 1e-3, 0.5, log=True)
        decay_rate = trial.suggest_float("decay_rate", 0.5, 1.0)
        decay_steps = trial.suggest_int("decay_steps", 1, 100, log=True)
        activation = trial.suggest_categorical("activation", ["sigmoid", "tanh", "relu", "leaky_relu"])
        loss = trial.suggest_categorical("loss", ["mse", "binary_crossentropy"])
        kind = trial.suggest_categorical("regularizer", ["none", "l1", "l2"])
        regularizer = None
        if kind != "none":
            weight = trial.suggest_float("regularization_weight", 1e-5, 1e-1, log=True)
            regularizer = keras.regularizers.L1(weight) if kind == "l1" else keras.regularizers.L2(weight)
        started = time.perf_counter()
        keras.backend.clear_session()
        model = keras.Sequential([
            keras.Input((2,)),
            keras.layers.Dense(11, activation=activation, kernel_initializer="he_normal",
                               kernel_regularizer=regularizer),
            keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=regularizer),
        ])
        schedule = keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps * steps, decay_rate)
        model.compile(optimizer=keras.optimizers.SGD(schedule), loss=loss, metrics=["accuracy"])
        history = model.fit(data.x_train, data.y_train, batch_size=32, epochs=epochs,
                            validation_data=(data.x_val, data.y_val), verbose=0)
        training.append(time.perf_counter() - started)
        return max(history.history["val_accuracy"])

    folder.mkdir(parents=True)
    started = time.perf_counter()
    study = optuna.create_study(storage=f"sqlite:///{folder}/optuna.db", study_name="baseline", direction="maximize")
    for params in sets:
        study.enqueue_trial(params)
    with warnings.catch_warnings():  # deprecated in optuna-integration 4.9, still what the hand-written loop uses
        warnings.simplefilter("ignore", FutureWarning)
        callback = MLflowCallback(tracking_uri=f"sqlite:///{folder}/mlflow.db", metric_name="val_accuracy")
    study.optimize(objective, n_trials=len(sets), callbacks=[callback])
    elapsed = time.perf_counter() - started
    assert [t.params for t in study.trials] == sets, "the baseline must run the fixed parameter sets"
    return {"end_to_end": elapsed / len(sets), "training": statistics.fmean(training),
            "accuracy": {t.number: t.value for t in study.trials}}


# ---- 2.-4. fitgap ----------------------------------------------------------------------------------------------------


def through_launch(executor: str, sets: list[dict], epochs: int, fuse: int | None, slots: int, folder: Path,
                   live_every_s: float | None = None) -> dict:
    """One launch; `live_every_s` replaces `coordinator.LIVE_EVERY_S` (None: as shipped)."""
    from fitgap.studies import coordinator
    from fitgap.tracking.writer import TrackingWriter

    spec = reference_spec(epochs, f"bench-{executor}", executor=executor, trials=len(sets), sampler="random")
    finished: list[float] = []
    live_writes = []
    shipped, write_live = coordinator.LIVE_EVERY_S, TrackingWriter.write_live
    coordinator.LIVE_EVERY_S = shipped if live_every_s is None else live_every_s
    TrackingWriter.write_live = lambda writer, live: (live_writes.append(live.number), write_live(writer, live))
    started = time.perf_counter()
    try:
        # One executor for the whole run: recycling one (after --max-trials-per-executor trainings) would add a
        # TensorFlow start-up, and a fused batch counts each member.
        summary = launch(spec, trials=len(sets), cpu_slots=slots, fuse=fuse, workspace=folder, save_models="none",
                         max_trials_per_executor=len(sets) + 1,
                         on_trial=lambda record, used, budget: finished.append(time.perf_counter()))
    finally:
        coordinator.LIVE_EVERY_S, TrackingWriter.write_live = shipped, write_live
    elapsed = time.perf_counter() - started
    records = {r.number: r for r in summary.finished}
    assert sorted(records) == list(range(len(sets))), f"{executor}: trials {sorted(records)}"
    assert all(r.executor == executor for r in records.values()), {r.executor for r in records.values()}
    assert all(r.params == trial_params(spec, sets[n]) for n, r in records.items()), f"{executor}: other params"
    complete = [r for r in records.values() if r.state == "COMPLETE"]
    steady = (finished[-1] - finished[0]) / (len(finished) - 1) if len(finished) > 1 else elapsed
    return {"end_to_end": elapsed / len(sets), "steady": steady,
            "final_val_loss": {r.number: r.epochs[-1].metrics["val_loss"] for r in complete},
            "accuracy": {r.number: r.values[0] for r in complete}, "states": _states(records.values()),
            "live_writes": len(live_writes), "live_every_s": coordinator.LIVE_EVERY_S if live_every_s is None
            else live_every_s}


def _states(records) -> str:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.state] = counts.get(record.state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def training_only(executor: str, sets: list[dict], epochs: int, fuse: int | None) -> float:
    """Seconds per trial of the trainer alone, in this process, on the same trials (same seeds) as the launch."""
    from fitgap.data.datasets import load_dataset
    from fitgap.studies.choice import choose_k
    from fitgap.studies.messages import TrialTask

    spec = reference_spec(epochs)
    data = load_dataset(spec.dataset.model_dump())
    tasks = [TrialTask(spec.name, n, trial_params(spec, sampled), derive_seed(spec.seed, "trial", n), {})
             for n, sampled in enumerate(sets)]
    # As in an executor process (training/process.py freezes what importing left): this process's other objects (the launches'
    # MLflow and SQLAlchemy state) would otherwise be walked by every collection, ~1.7x the fused time per trial.
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    if executor == "fused":
        from fitgap.training import fused

        k = choose_k(tasks[0].params, data, fuse)
        for first in range(0, len(tasks), k):
            fused.train_batch(tasks[first:first + k], data, lambda record: False)
    else:
        from fitgap.training import compiled, reference

        trainer = compiled.train if executor == "compiled" else reference.train
        for task in tasks:
            trainer(task, data, lambda record: False)
    return (time.perf_counter() - started) / len(tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=512, help="trials of the fused run (and the compiled one's)")
    parser.add_argument("--compiled-trials", type=int, default=None, help="trials of the compiled run [--trials]")
    parser.add_argument("--keras-trials", type=int, default=64, help="trials of the keras executor's run")
    parser.add_argument("--baseline-trials", type=int, default=4, help="trials of the hand-written loop (~13 s each)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--fuse", type=int, default=None, help="K of the fused executor [default: fusion.choose_k]")
    parser.add_argument("--slots", type=int, default=1, help="CPU executor slots of the fitgap runs")
    parser.add_argument("--live-executor", default="fused", choices=[*EXECUTORS, "none"],
                        help="the runner run again with live writing off, and as shipped, to compare")
    parser.add_argument("--live-pairs", type=int, default=2, help="(off, as shipped) pairs of runs of it")
    args = parser.parse_args()
    counts = {"baseline": args.baseline_trials, "keras": args.keras_trials,
              "compiled": args.trials if args.compiled_trials is None else args.compiled_trials, "fused": args.trials}
    sets = parameter_sets(max(counts.values()), args.epochs)
    if args.fuse is None:  # what `executor: auto` would choose for this sweep
        from fitgap.data.datasets import load_dataset
        from fitgap.studies.choice import choose_k

        spec = reference_spec(args.epochs)
        args.fuse = choose_k(trial_params(spec, sets[0]), load_dataset(spec.dataset.model_dump()))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fitgap-bench-") as folder:
        results["baseline"] = baseline(sets[:counts["baseline"]], args.epochs, Path(folder) / "baseline")
        for executor in EXECUTORS:
            results[executor] = through_launch(executor, sets[:counts[executor]], args.epochs, args.fuse, args.slots,
                                               Path(folder) / executor)
            if executor == args.live_executor:  # right after it, on the same trials, interleaved
                live = {None: [results[executor]], math.inf: []}
                for pair in range(args.live_pairs):
                    for every in (math.inf, None) if pair % 2 == 0 else (None, math.inf):
                        live[every].append(through_launch(executor, sets[:counts[executor]], args.epochs, args.fuse,
                                                          args.slots, Path(folder) / f"{executor}-live-{pair}-{every}",
                                                          live_every_s=every))
    for executor in EXECUTORS:
        results[executor]["training"] = training_only(executor, sets[:counts[executor]], args.epochs, args.fuse)

    base = results["baseline"]
    first = range(counts["baseline"])  # the trials every runner ran: the accuracy column compares them

    def accuracy(result: dict) -> float:
        return statistics.fmean(result["accuracy"][n] for n in first if n in result["accuracy"])

    print(f"load average at the end (other processes share the 2 cores): {os.getloadavg()[0]:.2f}")
    print(f"reference sweep: dot, dot.yaml's search space, {args.epochs} epochs, batch 32; {args.slots} CPU slot(s), "
          f"fused K={args.fuse}; trials: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    print(f"{'runner':<10}{'trials/min':>11}{'ratio':>8}{'steady/min':>11}{'training/min':>13}{'ratio':>8}"
          f"{'max |d val_loss| (trials)':>27}{'accuracy':>10}  states")
    print(f"{'baseline':<10}{60 / base['end_to_end']:>11.1f}{1:>7.0f}x{'':>11}{60 / base['training']:>13.1f}"
          f"{1:>7.0f}x{'':>27}{accuracy(base):>10.3f}")
    keras_losses = results["keras"]["final_val_loss"]
    for executor in EXECUTORS:
        r = results[executor]
        common = [n for n in keras_losses.keys() & r["final_val_loss"].keys() if keras_losses[n] < DIVERGED]
        diff = max((abs(r["final_val_loss"][n] - keras_losses[n]) for n in common), default=math.nan)
        compared = f"{diff:.2e} ({len(common)})"
        print(f"{executor:<10}{60 / r['end_to_end']:>11.1f}{base['end_to_end'] / r['end_to_end']:>7.0f}x"
              f"{60 / r['steady']:>11.1f}{60 / r['training']:>13.1f}{base['training'] / r['training']:>7.0f}x"
              f"{compared:>27}{accuracy(r):>10.3f}  {r['states']}")
    fused = results["fused"]
    print(f"fused, end to end / training only: {fused['training'] / fused['end_to_end']:.0%}, steady / training "
          f"only: {fused['training'] / fused['steady']:.0%}")
    if args.live_executor != "none":
        def figures(runs: list[dict]) -> tuple[float, float, str, int]:
            total = sum(r["end_to_end"] for r in runs) / len(runs)
            each = ", ".join(f"{60 / r['end_to_end']:.1f}" for r in runs)
            return total, sum(r["steady"] for r in runs) / len(runs), each, sum(r["live_writes"] for r in runs)

        on, on_steady, on_each, on_writes = figures(live[None])
        off, off_steady, off_each, off_writes = figures(live[math.inf])
        print(f"live writing, {args.live_executor} (trials/min end to end of each run): as shipped (LIVE_EVERY_S = "
              f"{live[None][0]['live_every_s']:g} s) {on_each}, {on_writes} live writes; off (inf) {off_each}, "
              f"{off_writes}; on / off {off / on:.2f}x end to end, {off_steady / on_steady:.2f}x steady")


if __name__ == "__main__":
    main()
