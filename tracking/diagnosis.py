"""Tracking side: a trial's diagnosis from its epoch records alone — the fit gap, the epoch where overfitting sets in,
and a verdict a user can act on. Never imports studies, training or TensorFlow.

`diagnose` is a pure function of a trial's curves and its data's baseline (no storage). The tracking process
computes it once per trial and gives the same one to MLflow (tags, metrics) and the results database (columns).

Everything is judged at the **best epoch**, the epoch the trial's score comes from and whose weights the trial keeps
(`training.core.EpochRule`). The fit gap is the epoch metric `fit_gap` (`sweeps.vocabulary.fit_gap`: ``val_bce -
bce``, ``val_ce - ce`` or ``(val_mse - mse) / (val_mse + mse)``), loss-independent, so a verdict means the same
whatever the loss. The baseline is what the trivial prediction scores on the validation set (`data_facts`): the
training set's majority class (an accuracy) or its mean (an mse).

Overfitting onset: Prechelt's "UP" criterion ("Early stopping — but when?", 1998) on strip means, made robust to
epoch-to-epoch noise. The epochs are cut into strips of ``k = max(2, n // 20)`` epochs and each loss is averaged per
strip. Overfitting sets in after strip ``j`` when the mean validation loss rises in each of the next
``UP_STRIPS = 3`` strips, by at least ``ONSET_RISE = 1 %`` of strip ``j``'s mean and by more than ``NOISE_SIGMAS =
3`` standard deviations of the difference of two strip means (the noise is estimated from the validation loss's
second differences: sigma = 1.4826 MAD / sqrt(6)), while the mean training loss falls over the same strips, and it
lasts (no later strip comes back down to strip ``j``'s). The onset epoch is the last epoch at the lowest validation
loss within strips ``j`` and ``j + 1``. Curves shorter than 8 epochs are too short to tell.

Verdicts (:data:`RULES`, the README's table), the first that holds, at the best epoch ``b`` of ``n``:

=================  ================================================================================================
did_not_learn      no better than the baseline: val accuracy at most ``LEARNED = 0.02`` above the majority class's,
                   or a validation R² = 1 - val_mse / baseline mse of at most 0.02
unstable           the training objective (loss + reg_loss: what the optimizer minimizes; a strong penalty may
                   raise the data loss alone) does not settle: its last strip's mean is ``UNSTABLE_RISE = 25 %`` or
                   more above its lowest strip's (it diverged), or its epoch-to-epoch noise is over
                   ``UNSTABLE_NOISE = 10 %`` of its median (steps too large)
overfit            overfitting set in at epoch ``e <= b`` and the validation loss at ``b`` is ``OVERFIT_RISE = 10 %``
                   above its minimum so far; or the validation measure at ``b`` is more than twice the training
                   one (the fit gap exceeds the training error) and, for classification, the gap is over
                   ``OVERFIT_GAP = 0.05`` nats
still_improving    the best epoch is in the last strip and both losses still fall there (the last strip's mean
                   ``STILL_FALLING = 2 %`` or more below the one before): train longer
underfit           training accuracy below ``UNDERFIT_ACCURACY = 0.9`` at ``b``, or a training R² below 0.9
good_fit           none of the above
=================  ================================================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from fitgap.sweeps.vocabulary import FIT_GAP_MEASURES

UP_STRIPS = 3
ONSET_RISE = 0.01
NOISE_SIGMAS = 3.0
LEARNED = 0.02
UNSTABLE_RISE = 0.25
UNSTABLE_NOISE = 0.10
OVERFIT_RISE = 0.10
OVERFIT_GAP = 0.05
STILL_FALLING = 0.02
UNDERFIT_ACCURACY = 0.9
VERDICTS = ("did_not_learn", "unstable", "overfit", "still_improving", "underfit", "good_fit")


@dataclass(frozen=True)
class Diagnosis:
    best_epoch: int | None
    fit_measure: str | None  # how the fit gap is measured (`FIT_GAP_MEASURES`); None without epochs
    best_fit_gap: float | None
    final_fit_gap: float | None
    overfit_epoch: int | None  # None: no onset found (or too few epochs to tell)
    verdict: str | None  # one of VERDICTS; None without epochs
    reason: str = ""  # which rule decided, with its numbers

    def numbers(self) -> dict[str, float]:
        """The diagnosis's numbers as MLflow metrics, named as the results database's columns: those the epochs do
        not give already (`best_fit_gap` and `final_fit_gap` are `best_<m>` and `final_<m>` of the epoch metric)."""
        return {} if self.overfit_epoch is None else {"overfit_epoch": self.overfit_epoch}

    def attributes(self) -> dict[str, object]:
        """What the Optuna trial carries of it, for optuna-dashboard (which shows user attributes): one attribute,
        `fitgap.diagnosis` = {verdict, best_epoch, best_fit_gap}, since each attribute is a storage commit (~3 ms a
        trial on SQLite, `bench/overhead.py`). Plain JSON values: Optuna stores them as JSON."""
        kept = {"verdict": self.verdict} if self.verdict else {}
        if self.best_epoch is not None:
            kept["best_epoch"] = int(self.best_epoch)
        if self.best_fit_gap is not None and math.isfinite(self.best_fit_gap):
            kept["best_fit_gap"] = float(self.best_fit_gap)
        return {"fitgap.diagnosis": kept} if kept else {}

    def tags(self) -> dict[str, str]:
        """The diagnosis as MLflow tags (`fitgap.*`); absent values are left out. Its numbers are metrics."""
        values = {"verdict": self.verdict, "verdict_reason": self.reason or None, "overfit_epoch": self.overfit_epoch,
                  "fit_measure": self.fit_measure}
        return {f"fitgap.{k}": str(v) for k, v in values.items() if v is not None}


NOTHING = Diagnosis(None, None, None, None, None, None, "no epochs")


def data_facts(task: str, y_train: np.ndarray, y_val: np.ndarray) -> tuple[int, float]:
    """(validation rows, baseline): what predicting the training set's majority class (classification: an accuracy)
    or its mean (regression: an mse) scores on the validation set."""
    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    if task == "regression":
        return len(y_val), float(np.mean(np.square(y_val - y_train.mean(axis=0))))
    labels, counts = np.unique(y_train.reshape(len(y_train), -1)[:, 0], return_counts=True)
    return len(y_val), float(np.mean(y_val.reshape(len(y_val), -1)[:, 0] == labels[np.argmax(counts)]))


def diagnose_trial(record) -> Diagnosis:
    """`diagnose` of a `TrialRecord`."""
    return diagnose(record.epochs, record.best_epoch, record.val_baseline)


def diagnose(epochs: Iterable[Mapping[str, float]], best_epoch: int | None = None,
             baseline: float | None = None) -> Diagnosis:
    """The diagnosis of one trial from its per-epoch metrics (in epoch order; dicts or anything with `.metrics`).

    `best_epoch`: the epoch index the score comes from (`TrialRecord.best_epoch`); None: the last epoch.
    `baseline`: the trivial prediction's validation score (`data_facts`); None: `did_not_learn` is not judged."""
    rows = [dict(getattr(e, "metrics", e)) for e in epochs]
    if not rows:
        return NOTHING
    b = best_epoch if best_epoch is not None and 0 <= best_epoch < len(rows) else len(rows) - 1
    task = task_of(rows[b])
    loss, val_loss = _series(rows, "loss"), _series(rows, "val_loss")
    onset = overfit_onset(loss, val_loss)
    verdict, reason = _verdict(rows, b, task, baseline, onset, loss, val_loss)
    return Diagnosis(
        best_epoch=best_epoch,
        fit_measure=FIT_GAP_MEASURES.get(task),
        best_fit_gap=_finite(rows[b].get("fit_gap")),
        final_fit_gap=_finite(rows[-1].get("fit_gap")),
        overfit_epoch=onset,
        verdict=verdict,
        reason=reason,
    )


def task_of(metrics: Mapping[str, float]) -> str | None:
    """The task an epoch's metrics belong to, from the loss-independent metric it measures."""
    for name, task in (("bce", "binary"), ("ce", "multiclass"), ("mse", "regression")):
        if _finite(metrics.get(name)) is not None:
            return task
    return None


def _verdict(rows: list[dict], b: int, task: str | None, baseline: float | None, onset: int | None,
             loss: np.ndarray, val_loss: np.ndarray) -> tuple[str | None, str]:
    """The first rule of the module docstring's table that holds, with its numbers."""
    at = rows[b]
    if task is None:
        return None, "no bce, ce or mse to judge the fit by"
    classify = task != "regression"
    own = "bce" if task == "binary" else "ce" if task == "multiclass" else "mse"
    train, val = _finite(at.get(own)), _finite(at.get(f"val_{own}"))
    where = f"at its best epoch {b}"
    if baseline is not None:
        if classify and _finite(at.get("val_accuracy")) is not None:
            accuracy = at["val_accuracy"]
            if accuracy <= baseline + LEARNED:
                return "did_not_learn", (f"val_accuracy {accuracy:.4g} {where}; the majority class alone scores "
                                         f"{baseline:.4g}")
        elif not classify and val is not None and baseline > 0 and 1 - val / baseline <= LEARNED:
            return "did_not_learn", (f"val_mse {val:.4g} {where}; predicting the training mean scores "
                                     f"{baseline:.4g} (validation R² {1 - val / baseline:.2f})")
    unstable = _unstable(loss + np.nan_to_num(_series(rows, "reg_loss")))  # what the optimizer minimizes
    if unstable:
        return "unstable", unstable
    if onset is not None and onset <= b and np.isfinite(val_loss[: b + 1]).any():
        lowest, now = float(np.nanmin(val_loss[: b + 1])), float(val_loss[b])
        if math.isfinite(now) and now > lowest * (1 + OVERFIT_RISE):
            return "overfit", (f"overfit from epoch {onset}: the validation loss rose from {lowest:.4g} to {now:.4g} "
                               f"(+{now / lowest - 1:.0%}) by the best epoch {b} while the training loss fell")
    if train is not None and val is not None and val > 2 * train and (not classify or val - train > OVERFIT_GAP):
        return "overfit", f"val_{own} {val:.4g} is more than twice {own} {train:.4g} {where}"
    falling = _still_falling(loss), _still_falling(val_loss)
    if b >= len(rows) - strip_length(len(rows)) and all(f is not None and f >= STILL_FALLING for f in falling):
        return "still_improving", (f"both losses still falling at the end (last strip {falling[0]:.1%} and "
                                   f"{falling[1]:.1%} below the one before): train longer")
    if classify and _finite(at.get("accuracy")) is not None and at["accuracy"] < UNDERFIT_ACCURACY:
        return "underfit", f"training accuracy {at['accuracy']:.4g} {where} < {UNDERFIT_ACCURACY:g}"
    if not classify and baseline and train is not None and 1 - train / baseline < UNDERFIT_ACCURACY:
        return "underfit", f"training R² {1 - train / baseline:.2f} {where} < {UNDERFIT_ACCURACY:g}"
    gap = _finite(at.get("fit_gap"))
    return "good_fit", f"fit gap {gap:.3g} {where}, learned, settled" if gap is not None else "good_fit"


def _unstable(loss: np.ndarray) -> str | None:
    """Why the training loss has not settled, or None."""
    finite = loss[np.isfinite(loss)]
    k = strip_length(len(finite))
    if len(finite) < 2 * k:
        return None
    means = _strip_means(finite, k)
    lowest, last = float(means.min()), float(means[-1])
    if lowest > 0 and last >= lowest * (1 + UNSTABLE_RISE):
        return (f"the training objective diverged: its last strip's mean {last:.4g} is {last / lowest - 1:.0%} above "
                f"its lowest {lowest:.4g}")
    level = float(np.median(np.abs(finite)))
    noise = _noise(finite)
    if level > 0 and noise > UNSTABLE_NOISE * level:
        return (f"the training objective jumps from epoch to epoch: noise {noise:.3g} is {noise / level:.0%} of its "
                f"median {level:.3g}")
    return None


def strip_length(n_epochs: int) -> int:
    return max(2, n_epochs // 20)


def overfit_onset(loss: np.ndarray, val_loss: np.ndarray) -> int | None:
    """The epoch where overfitting sets in (module docstring: UP on strip means, beyond noise, lasting), or None."""
    k = strip_length(len(val_loss))
    n_strips = len(val_loss) // k
    if n_strips < UP_STRIPS + 1:
        return None
    train_means, val_means = _strip_means(loss, k), _strip_means(val_loss, k)
    noise = NOISE_SIGMAS * math.sqrt(2) * _noise(val_loss) / math.sqrt(k)  # sd of a difference of strip means
    for j in range(n_strips - UP_STRIPS):
        window = val_means[j : j + UP_STRIPS + 1]
        trains = train_means[[j, j + UP_STRIPS]]
        if not (np.isfinite(window).all() and np.isfinite(trains).all()):
            continue
        rise = window[-1] - window[0]
        if (np.all(np.diff(window) > 0) and rise >= ONSET_RISE * abs(window[0]) and rise > noise
                and trains[1] < trains[0] and np.all(val_means[j + 1 :] > window[0])):
            span = val_loss[j * k : (j + 2) * k]
            return int(j * k + len(span) - 1 - np.nanargmin(span[::-1]))  # the last epoch at the minimum
    return None


def _noise(series: np.ndarray) -> float:
    """The epoch-to-epoch standard deviation of `series`, from its second differences (robust: MAD)."""
    second = np.diff(series[np.isfinite(series)], n=2)
    if len(second) == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(second - np.median(second))) / math.sqrt(6))


def _still_falling(series: np.ndarray) -> float | None:
    """How much lower (relative) the last strip's mean is than the previous strip's, or None when unknown."""
    k = strip_length(len(series))
    if len(series) < 2 * k:
        return None
    last, before = np.mean(series[-k:]), np.mean(series[-2 * k : -k])
    if not (np.isfinite(last) and np.isfinite(before)) or before == 0:
        return None
    return float((before - last) / abs(before))


def _strip_means(series: np.ndarray, k: int) -> np.ndarray:
    n = len(series) // k
    return series[: n * k].reshape(n, k).mean(axis=1)


def _series(rows: list[dict], name: str) -> np.ndarray:
    return np.array([_nan(r.get(name)) for r in rows], dtype=float)


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _nan(value) -> float:
    return math.nan if value is None else float(value)
