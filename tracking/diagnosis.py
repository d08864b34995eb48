"""Tracking side: a trial's diagnosis from its epoch records alone — gaps, the epoch where overfitting sets in, and a
verdict. Never imports studies, training or TensorFlow.

`diagnose` is a pure function of a trial's curves (no storage). The tracking process computes it once per trial and
gives the same one to MLflow (tags) and the results database (columns), so the two always agree.

Gaps. ``gap`` is the trial's own ``val_loss - loss`` (comparable only between trials with the same loss). The *fit
gap* is loss-independent, so that the verdict means the same whatever the loss:
- classification (epochs measure ``accuracy``): ``accuracy - val_accuracy``, in accuracy points (0.05 = 5 points);
- regression (epochs measure ``mse``): ``(val_mse - mse) / mse``, the validation error relative to the training error.

Overfitting onset: Prechelt's "UP" criterion ("Early stopping — but when?", 1998) on strip means, made robust to
epoch-to-epoch noise. The epochs are cut into strips of ``k = max(2, n // 20)`` epochs and each loss is averaged per
strip. Overfitting sets in after strip ``j`` when
- the mean validation loss rises in each of the next ``UP_STRIPS = 3`` strips,
- by at least ``ONSET_RISE = 1 %`` of strip ``j``'s mean, and by more than ``NOISE_SIGMAS = 3`` standard deviations
  of the difference of two strip means (the epoch-to-epoch noise is estimated from the validation loss's second
  differences, which a smooth trend barely touches: sigma = 1.4826 MAD / sqrt(6)),
- while the mean training loss falls over the same strips,
- and it lasts: no later strip's mean comes back down to strip ``j``'s.
The onset epoch is the last epoch at the lowest validation loss within strips ``j`` and ``j + 1`` (the bottom of
the valley, or the end of a plateau); the first such ``j`` counts. Curves shorter than ``(UP_STRIPS + 1) * 2 = 8``
epochs are too short to tell (no onset).

Verdict, on the final epoch (the model training ended with), first rule that holds:
1. ``overfit``: the fit gap exceeds ``OVERFIT_ACCURACY_GAP = 0.05`` and the training error ``1 - accuracy`` (most
   of the validation error is the gap: a model that fits the training set badly is underfit, whatever its gap) for
   classification, or ``OVERFIT_RELATIVE_MSE_GAP = 0.5`` for regression (validation MSE 50 % above training MSE); or
   overfitting set in and the final validation loss is more than ``OVERFIT_RISE = 10 %`` above its minimum (the
   trial ended well past its best epoch);
2. ``underfit``: training accuracy below ``UNDERFIT_ACCURACY = 0.9`` (classification); or both losses still falling
   at the end — the last strip's mean ``STILL_FALLING = 2 %`` or more below the previous strip's, for the training and
   the validation loss (training stopped before the model fit the data). A regression model stuck on a high plateau
   is not caught: without the targets' variance there is no scale to call its error high;
3. ``good_fit`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

UP_STRIPS = 3
ONSET_RISE = 0.01
NOISE_SIGMAS = 3.0
OVERFIT_ACCURACY_GAP = 0.05
OVERFIT_RELATIVE_MSE_GAP = 0.5
OVERFIT_RISE = 0.10
UNDERFIT_ACCURACY = 0.9
STILL_FALLING = 0.02
VERDICTS = ("underfit", "good_fit", "overfit")


@dataclass(frozen=True)
class Diagnosis:
    best_epoch: int | None
    gap_at_best: float | None  # val_loss - loss, the trial's own loss
    gap_at_final: float | None
    fit_measure: str | None  # "accuracy_gap" or "relative_mse_gap" (see the module docstring)
    fit_gap_at_best: float | None
    fit_gap_at_final: float | None
    overfit_epoch: int | None  # None: no onset found (or too few epochs to tell)
    verdict: str | None  # one of VERDICTS; None without epochs
    reason: str = ""  # which rule decided, with its numbers

    def numbers(self) -> dict[str, float]:
        """The diagnosis's numbers as MLflow metrics, named as the results database's columns."""
        values = {"best_fit_gap": self.fit_gap_at_best, "final_fit_gap": self.fit_gap_at_final,
                  "overfit_epoch": self.overfit_epoch}
        return {k: v for k, v in values.items() if v is not None and math.isfinite(v)}

    def attributes(self) -> dict[str, object]:
        """What the Optuna trial carries of it, for optuna-dashboard (which shows user attributes): one attribute,
        `fitgap.diagnosis` = {verdict, best_epoch, best_fit_gap}, since each attribute is a storage commit (~3 ms a
        trial on SQLite, `bench/overhead.py`). Plain JSON values: Optuna stores them as JSON."""
        kept = {"verdict": self.verdict} if self.verdict else {}
        if self.best_epoch is not None:
            kept["best_epoch"] = int(self.best_epoch)
        if self.fit_gap_at_best is not None and math.isfinite(self.fit_gap_at_best):
            kept["best_fit_gap"] = float(self.fit_gap_at_best)
        return {"fitgap.diagnosis": kept} if kept else {}

    def tags(self) -> dict[str, str]:
        """The diagnosis as MLflow tags (`fitgap.*`); absent values are left out."""
        values = {"verdict": self.verdict, "verdict_reason": self.reason or None, "overfit_epoch": self.overfit_epoch,
                  "gap_best": self.gap_at_best, "gap_final": self.gap_at_final, "fit_measure": self.fit_measure,
                  "fit_gap_best": self.fit_gap_at_best, "fit_gap_final": self.fit_gap_at_final}
        return {f"fitgap.{k}": (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in values.items()
                if v is not None}


NOTHING = Diagnosis(None, None, None, None, None, None, None, None, "no epochs")


def diagnose(epochs: Iterable[Mapping[str, float]], best_epoch: int | None = None) -> Diagnosis:
    """The diagnosis of one trial from its per-epoch metrics (in epoch order; dicts or anything with `.metrics`).

    `best_epoch` is the epoch index chosen by the objective (`TrialRecord.best_epoch`); None: the last epoch.
    """
    rows = [dict(getattr(e, "metrics", e)) for e in epochs]
    if not rows:
        return NOTHING
    best = rows[best_epoch] if best_epoch is not None and 0 <= best_epoch < len(rows) else rows[-1]
    final = rows[-1]
    measure = fit_measure(final)
    loss, val_loss = _series(rows, "loss"), _series(rows, "val_loss")
    onset = overfit_onset(loss, val_loss)
    verdict, reason = _verdict(final, measure, onset, val_loss, loss)
    return Diagnosis(
        best_epoch=best_epoch,
        gap_at_best=_finite(best.get("gap")),
        gap_at_final=_finite(final.get("gap")),
        fit_measure=measure,
        fit_gap_at_best=fit_gap(best, measure),
        fit_gap_at_final=fit_gap(final, measure),
        overfit_epoch=onset,
        verdict=verdict,
        reason=reason,
    )


def fit_measure(metrics: Mapping[str, float]) -> str | None:
    if _finite(metrics.get("accuracy")) is not None:
        return "accuracy_gap"
    if _finite(metrics.get("mse")) is not None:
        return "relative_mse_gap"
    return None


def fit_gap(metrics: Mapping[str, float], measure: str | None) -> float | None:
    """The loss-independent gap of one epoch (see the module docstring); None when it cannot be measured."""
    if measure == "accuracy_gap":
        train, val = _finite(metrics.get("accuracy")), _finite(metrics.get("val_accuracy"))
        return None if train is None or val is None else train - val
    if measure == "relative_mse_gap":
        train, val = _finite(metrics.get("mse")), _finite(metrics.get("val_mse"))
        if train is None or val is None:
            return None
        return (val - train) / train if train > 0 else (0.0 if val == 0 else math.inf)
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


def _verdict(final: Mapping[str, float], measure: str | None, onset: int | None, val_loss: np.ndarray,
             loss: np.ndarray) -> tuple[str | None, str]:
    gap = fit_gap(final, measure)
    accuracy = _finite(final.get("accuracy"))
    limit = OVERFIT_ACCURACY_GAP if measure == "accuracy_gap" else OVERFIT_RELATIVE_MSE_GAP
    if measure == "accuracy_gap" and accuracy is not None:
        limit = max(limit, 1 - accuracy)  # the gap must also exceed the training error
    if gap is not None and gap > limit:
        return "overfit", f"final {measure} {gap:.4g} > {limit:.4g}"
    if onset is not None and np.isfinite(val_loss).any():
        lowest, last = float(np.nanmin(val_loss)), float(val_loss[-1])
        if math.isfinite(last) and last > lowest * (1 + OVERFIT_RISE):
            return "overfit", (f"validation loss rising since epoch {onset}: final {last:.4g} is "
                               f"{last / lowest - 1:.0%} above its minimum {lowest:.4g}")
    if measure == "accuracy_gap" and accuracy is not None and accuracy < UNDERFIT_ACCURACY:
        return "underfit", f"final training accuracy {accuracy:.4g} < {UNDERFIT_ACCURACY:g}"
    falling = _still_falling(loss), _still_falling(val_loss)
    if all(f is not None and f >= STILL_FALLING for f in falling):
        return "underfit", (f"both losses still falling at the end (last strip {falling[0]:.1%} and "
                            f"{falling[1]:.1%} below the one before)")
    if measure is None or gap is None:
        return None, "no accuracy or mse to judge the fit by"
    return "good_fit", f"final {measure} {gap:.4g} <= {limit:.4g}, not still falling"


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
