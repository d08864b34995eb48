"""Coordinator side: which executor trains a trial, which trials share a fused batch, and how many at once — decided
here, once, before any executor exists (no TensorFlow).

- ``choose_executor(params, requested="auto", fuse) -> (executor, why)``: the fastest executor that can train this
  trial as the reference would ("fused" | "compiled" | "keras"), never a faster one than `requested` ("auto" = fused
  allowed, for batches of two or more); `why` is for the trial's record. The chain is fused -> compiled -> keras;
  `fuse_blocker` and `compile_blocker` say why a trial falls back. Whether the executor's graph runs under XLA is
  measured by the executor (`fitgap.training.xla`).
- ``fuse_group_key(params) -> tuple | None``: trials whose keys are equal (and not None) can be one `Batch`, trained
  by `fitgap.training.fused`; None = this trial cannot fuse. What must be equal: the model kind (mlp), the number of
  hidden layers, the optimizer, `batch_size`, `epochs` and `standardize`. Everything else may differ inside a batch:
  learning rate, decay rate/steps/unit/staircase, activation (and leaky_alpha), loss (and cost/profit), regularizer
  and its weight and l1_ratio, optimizer hyperparameters (momentum_form, initial_accumulator too), initializer,
  use_bias, shuffle, early stopping, hidden widths (narrower layers are zero-padded to the batch's widest and
  masked), and each training's seed (its own initial weights and batch order).
- ``take_batch(waiting, fuse)``: the next batch of the coordinator's waiting trainings — one, or up to `fuse` of one
  fuse group, a trial's repeats included (each training has its own number: `trials.training_number`).
- ``choose_k(params, data, fuse=None) -> int``: how many trials to ask Optuna for at once and send as one batch:
  `fuse` (`--fuse K`) when given, else as many as fit `FUSE_MEMORY_MB` for a model the size of `params` (pass the
  largest the spec can sample), at most `MAX_K`. 1 when the trial cannot fuse. Only the data's shapes are read. A
  model-based sampler's rounds may hold fewer (`batching.in_flight_limit`).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

from fitgap.errors import UsageError
from fitgap.sweeps.vocabulary import HYPERPARAMETERS

# At K = 64 a dot trial trains in ~60 ms on 2 CPU cores (bench/throughput.py), less than recording it costs: a larger
# batch would gain nothing there and keep more trials RUNNING (and pruned members frozen) at once.
MAX_K = 64
FUSE_MEMORY_MB = float(os.environ.get("FITGAP_FUSE_MEMORY_MB", "512"))  # a fused batch's working set
EXECUTORS = ("fused", "compiled", "keras")  # fastest first
XLA_MODES = ("auto", "on", "off")  # FITGAP_XLA: measure per graph (`fitgap.training.xla`), always, never


def xla_mode() -> str:
    """FITGAP_XLA, checked: the launch checks it before any executor reads it."""
    mode = os.environ.get("FITGAP_XLA", "auto")
    if mode not in XLA_MODES:
        raise UsageError(f"FITGAP_XLA must be one of {list(XLA_MODES)}, but got {mode!r}")
    return mode


def _get(params: Mapping[str, Any], name: str) -> Any:
    return params[name] if name in params else HYPERPARAMETERS[name].default


def compile_blocker(params: Mapping[str, Any]) -> str | None:
    """Why the compiled executor cannot train this trial as the reference does, or None when it can."""
    kind = params.get("model_kind", "mlp")
    if kind not in ("mlp", "cnn"):
        return f"model kind {kind!r}: a user's model may hold state the compiled loop cannot see"
    augment = params.get("augment") or {}
    if kind == "cnn" and (augment.get("flip", "none") != "none" or int(augment.get("crop", 0))):
        return "augmentation runs in Keras's input pipeline"
    return None


def fuse_blocker(params: Mapping[str, Any]) -> str | None:
    """Why this trial cannot be a member of a fused batch, or None when it can."""
    blocker = compile_blocker(params)
    if blocker:
        return blocker
    if params.get("model_kind", "mlp") != "mlp":
        return f"model kind {params.get('model_kind')!r}: only mlp trials fuse"
    if float(_get(params, "dropout")) > 0:
        return "dropout: its masks come from Keras's per-layer seed generators"
    return None


def can_compile(params: Mapping[str, Any]) -> bool:
    return compile_blocker(params) is None


def can_fuse(params: Mapping[str, Any]) -> bool:
    return fuse_blocker(params) is None


def choose_executor(params: Mapping[str, Any], requested: str = "auto", fuse: int = MAX_K) -> tuple[str, str]:
    """The executor that trains this trial, and why: the first of fused, compiled, keras that `requested` allows and
    that can train it. `auto` fuses only batches of two or more (`fuse`): a batch of one trains as compiled does,
    a little slower."""
    if requested not in ("auto", *EXECUTORS):
        raise ValueError(f"`executor` must be one of ['auto', 'fused', 'compiled', 'keras'], but got {requested!r}")
    if requested == "keras":
        return "keras", "executor: keras"
    blocker = fuse_blocker(params)
    if requested == "fused" and blocker is None:
        return "fused", "executor: fused"
    if requested == "auto" and blocker is None:
        if fuse >= 2:
            return "fused", f"auto: fused, up to {fuse} per batch"
        blocker = "one trial per batch fits in FITGAP_FUSE_MEMORY_MB"
    compiled = compile_blocker(params)
    if compiled is None:
        return "compiled", f"{requested}: compiled, not fused ({blocker})" if requested != "compiled" else \
            "executor: compiled"
    return "keras", f"{requested}: keras, not compiled ({compiled})"


def fuse_group_key(params: Mapping[str, Any]) -> tuple | None:
    """What must be equal for two trials to share a fused batch; None when this trial cannot fuse."""
    if not can_fuse(params):
        return None
    return ("mlp", len(params.get("hidden", HYPERPARAMETERS["hidden"].default)), _get(params, "optimizer"),
            int(_get(params, "batch_size")), int(_get(params, "epochs")), bool(_get(params, "standardize")))


def take_batch(waiting: list[tuple[Any, int]], fuse: int) -> list[tuple[Any, int]]:
    """Take the first waiting (trial, repeat) and, if it fuses, up to `fuse` - 1 others of its group off `waiting`;
    a trial is anything with `params` and `executor`."""
    first = waiting[0]
    key = fuse_group_key(first[0].params) if first[0].executor == "fused" else None
    batch = [first]
    for unit in waiting[1:]:
        if key is None or len(batch) >= fuse:
            break
        if unit[0].executor == "fused" and fuse_group_key(unit[0].params) == key:
            batch.append(unit)
    for unit in batch:
        waiting.remove(unit)
    return batch


def _units(data: Any) -> int:
    if data.task == "binary":
        return 1
    if data.task == "multiclass":
        return int(data.n_classes)
    return int(data.y_train.shape[1])


def trial_bytes(params: Mapping[str, Any], data: Any) -> int:
    """A fused member's share of a batch's memory, float32: weights with gradients and up to two optimizer slots, and
    the activations of measuring the whole train and validation sets (the largest tensors of a small network)."""
    features = math.prod(data.x_train.shape[1:])
    widths = [features, *params.get("hidden", HYPERPARAMETERS["hidden"].default), _units(data)]
    weights = sum(a * b + b for a, b in zip(widths, widths[1:]))
    rows = len(data.x_train) + len(data.x_val)
    activations = rows * sum(widths[1:]) * 3  # pre-activation, activation, and the selected copy
    return 4 * (weights * 4 + activations + rows * features)


def choose_k(params: Mapping[str, Any], data: Any, fuse: int | None = None) -> int:
    """How many trials one fused batch holds (see the module docstring)."""
    if fuse is not None:
        if fuse < 1:
            raise ValueError(f"`--fuse` must be >= 1, but got {fuse}")
        return fuse
    if not can_fuse(params):
        return 1
    return max(1, min(MAX_K, int(FUSE_MEMORY_MB * 2**20 // trial_bytes(params, data))))
