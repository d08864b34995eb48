"""Seconds per trial on real model sizes: a hand-written Keras `model.fit` against fitgap's `executor: keras` and
`executor: auto`.

    .venv/bin/python bench/real_sizes.py [--trials 3] [--dot-trials 64] [--only mlp-128,cnn,...]

Workloads (synthetic data of real datasets' shapes, since nothing may be downloaded; class templates plus noise, so
that there is something to learn):
- mlp-128 and mlp-512x2: MNIST's shape (60,000 28x28 uint8 images, 10 classes; 48,000 training rows after the 20%
  validation split), flattened, 784-[128]-10 and 784-[512, 512]-10, Adam 1e-3, batch 128, 2 epochs.
- cnn: the cat-vs-non-cat set's shape (209 64x64x3 images, binary; 167 training), conv 8 - conv 16 (3x3, same, max
  pool) - dense 32, Adam 1e-3 with L2 1e-3, batch 32, 10 epochs.
- dot: the reference sweep (sweeps/specs/dot.yaml's search space, 100 epochs), random sampler.

Runners: plain = the loop a user writes (build, compile, `fit` with validation data, per trial); fitgap keras and
auto = `fitgap.launch` into a fresh workspace, as a user runs it. Per trial = the trial's own time: plain's build
and fit; fitgap's `duration_s` (from its training's dispatch to its outcome, the wait for a slot apart; a fused
batch's time once for all its members), summed over every trial, the first (tracing, XLA's measurement) included,
over the trials. Wall per trial = the whole run (fitgap: executor start-up, storage and tracking included) over its
trials. What ran: the last trial's executor and why (each slot's first trial measures XLA). `auto xla=on` (dot only) is auto with every graph under
XLA, as fitgap did before it measured: the speed-up it had.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from fitgap import launch
from fitgap.sweeps.spec import parse_spec

DOT_SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "specs" / "dot.yaml"
MLP = {"epochs": 2, "batch_size": 128, "params": {"optimizer": "adam", "learning_rate": 1e-3}}
WORKLOADS = {
    "mlp-128": {"data": "mnist", "model": {"kind": "mlp", "hidden": [128]}, **MLP},
    "mlp-512x2": {"data": "mnist", "model": {"kind": "mlp", "hidden": [512, 512]}, **MLP},
    "cnn": {"data": "images", "model": {"kind": "cnn", "hidden": [32], "conv": [
        {"filters": 8, "kernel": 3, "padding": "same", "pool": "max"},
        {"filters": 16, "kernel": 3, "padding": "same", "pool": "max"}]},
            "epochs": 10, "batch_size": 32,
            "params": {"optimizer": "adam", "learning_rate": 1e-3, "regularizer": "l2",
                       "regularization_weight": 1e-3}},
    "dot": {},
}


def make_data(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    paths = {}
    for name, count, shape, classes in (("mnist", 60_000, (28, 28), 10), ("images", 209, (64, 64, 3), 2)):
        templates = rng.integers(0, 256, (classes, *shape))
        y = rng.integers(0, classes, count)
        x = np.clip(templates[y] * 0.5 + rng.normal(0, 60, (count, *shape)), 0, 255).astype(np.uint8)
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], x_train=x, y_train=y)
    return paths


def spec_of(name: str, executor: str, trials: int, paths: dict[str, Path]):
    if name == "dot":
        raw = yaml.safe_load(DOT_SPEC.read_text())
        return parse_spec({**raw, "name": f"bench-dot-{executor}", "executor": executor, "trials": trials,
                           "sampler": "random"})
    w = WORKLOADS[name]
    task, flatten = ("multiclass", True) if w["data"] == "mnist" else ("binary", False)
    dataset = {"name": "npz", "path": str(paths[w["data"]]), "task": task, "scale": 255, "flatten": flatten,
               "validation_fraction": 0.2}
    return parse_spec({"name": f"bench-{name}-{executor}", "dataset": dataset, "model": w["model"],
                       "epochs": w["epochs"], "batch_size": w["batch_size"], "params": w["params"],
                       "objective": [{"metric": "val_accuracy"}], "trials": trials, "seed": 0, "executor": executor})


def plain(name: str, trials: int, paths: dict[str, Path]) -> dict:
    """The hand-written loop: per trial, a fresh Keras model, compiled and fit with validation data."""
    import keras

    if name == "dot":
        from fitgap.data.datasets import load_dataset

        data = load_dataset({"name": "dot", "validation_fraction": 0.2})
        x, y, xv, yv = data.x_train, data.y_train, data.x_val, data.y_val
        w = {"epochs": 100, "batch_size": 32}
    else:
        w = WORKLOADS[name]
        archive = np.load(paths[w["data"]])
        x_all = archive["x_train"].astype("float32") / 255
        if w["data"] == "mnist":
            x_all = x_all.reshape(len(x_all), -1)
        y_all = archive["y_train"]
        cut = int(len(x_all) * 0.8)
        x, y, xv, yv = x_all[:cut], y_all[:cut], x_all[cut:], y_all[cut:]

    def model() -> keras.Model:
        if name == "dot":
            layers = [keras.layers.Dense(11, activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
            return keras.Sequential([keras.Input(x.shape[1:]), *layers]), "binary_crossentropy", "sgd"
        regularizer = keras.regularizers.L2(w["params"]["regularization_weight"]) if name == "cnn" else None
        layers = []
        for conv in w["model"].get("conv", []):
            layers += [keras.layers.Conv2D(conv["filters"], conv["kernel"], padding="same", activation="relu",
                                           kernel_regularizer=regularizer), keras.layers.MaxPooling2D()]
        layers += [keras.layers.Flatten()] if name == "cnn" else []
        layers += [keras.layers.Dense(u, activation="relu", kernel_regularizer=regularizer)
                   for u in w["model"]["hidden"]]
        head = keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=regularizer) if name == "cnn" else \
            keras.layers.Dense(10, activation="softmax")
        loss = "binary_crossentropy" if name == "cnn" else "sparse_categorical_crossentropy"
        return keras.Sequential([keras.Input(x.shape[1:]), *layers, head]), loss, keras.optimizers.Adam(1e-3)

    times = []
    began = time.perf_counter()
    for _ in range(trials):
        started = time.perf_counter()
        keras.backend.clear_session()
        network, loss, optimizer = model()
        network.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
        network.fit(x, y, batch_size=w["batch_size"], epochs=w["epochs"], validation_data=(xv, yv), verbose=0)
        times.append(time.perf_counter() - started)
    return {"trial": statistics.fmean(times), "wall": (time.perf_counter() - began) / trials, "how": "model.fit"}


def fitgap(name: str, executor: str, trials: int, paths: dict[str, Path], folder: Path) -> dict:
    spec = spec_of(name, executor, trials, paths)
    began = time.perf_counter()
    summary = launch(spec, trials=trials, workspace=folder / f"{name}-{executor}-{os.environ.get('FITGAP_XLA')}",
                     save_models="none", max_trials_per_executor=trials + 1)
    wall = (time.perf_counter() - began) / trials
    records = summary.finished
    assert len(records) == trials and all(r.state == "COMPLETE" for r in records), [r.reason for r in records]
    last = max(records, key=lambda r: r.number)
    return {"trial": busy_seconds(records) / trials, "wall": wall, "how": last.executor_reason or last.executor}


def busy_seconds(records) -> float:
    """Seconds the slots spent training: per slot, the union of its trials' [started_at, finished_at] (a fused
    batch's members overlap: its time counts once)."""
    total = 0.0
    for slot in {r.slot for r in records}:
        end = -1.0
        for r in sorted((r for r in records if r.slot == slot), key=lambda r: r.started_at):
            total += max(0.0, r.finished_at - max(r.started_at, end))
            end = max(end, r.finished_at)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials per runner on the real sizes")
    parser.add_argument("--dot-trials", type=int, default=64, help="trials per runner on the dot sweep")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fitgap-bench-") as tmp:
        folder = Path(tmp)
        paths = make_data(folder)
        for name in args.only.split(","):
            trials = args.dot_trials if name == "dot" else args.trials
            results = {"plain": plain(name, min(trials, 8), paths)}
            for executor in ("keras", "auto"):
                results[executor] = fitgap(name, executor, trials, paths, folder)
            if name == "dot":
                os.environ["FITGAP_XLA"] = "on"
                results["auto xla=on"] = fitgap(name, "auto", trials, paths, folder)
                del os.environ["FITGAP_XLA"]
            rows += [(name, runner, r, results["plain"]) for runner, r in results.items()]
    print(f"load average at the end (other processes share the cores): {os.getloadavg()[0]:.2f}")
    print(f"{'workload':<11}{'runner':<13}{'s/trial':>9}{'ratio':>7}{'wall s/trial':>14}{'ratio':>7}  what ran")
    for name, runner, r, base in rows:
        print(f"{name:<11}{runner:<13}{r['trial']:>9.3f}{r['trial'] / base['trial']:>7.2f}{r['wall']:>14.3f}"
              f"{r['wall'] / base['wall']:>7.2f}  {r['how']}")


if __name__ == "__main__":
    main()
