"""The per-trial diagnosis rules on synthetic curves: onset of overfitting, and the verdicts at their thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from fitgap.tracking import diagnosis
from fitgap.tracking.diagnosis import diagnose, overfit_onset
from fitgap.tracking.records import EpochRecord

N = 100


def valley(n=N, bottom=40, noise=0.0, seed=0):
    """Training loss falling all along; validation loss a parabola with its minimum at `bottom`."""
    rng = np.random.default_rng(seed)
    epochs = np.arange(n)
    train = np.exp(-epochs / 30) + 0.05
    val = 0.5 + 0.0004 * (epochs - bottom) ** 2 + rng.normal(0, noise, n)
    return train, val


def classification(n=20, accuracy=0.95, val_accuracy=0.95, loss=None, val_loss=None):
    """Flat curves (nothing still falling) with the given final accuracies."""
    loss = np.full(n, 0.2) if loss is None else loss
    val_loss = np.full(n, 0.25) if val_loss is None else val_loss
    return [{"loss": loss[i], "val_loss": val_loss[i], "gap": val_loss[i] - loss[i], "accuracy": accuracy,
             "val_accuracy": val_accuracy, "accuracy_gap": accuracy - val_accuracy} for i in range(n)]


def regression(n=20, mse=0.1, val_mse=0.1):
    return [{"loss": mse, "val_loss": val_mse, "gap": val_mse - mse, "mse": mse, "val_mse": val_mse}
            for _ in range(n)]


def test_the_onset_is_the_bottom_of_the_validation_valley():
    assert overfit_onset(*valley()) == 40
    assert overfit_onset(*valley(n=400, bottom=123)) == 123


@pytest.mark.parametrize("seed", range(5))
def test_noise_moves_the_onset_by_at_most_a_strip(seed):
    onset = overfit_onset(*valley(noise=0.01, seed=seed))
    assert onset is not None and abs(onset - 40) <= diagnosis.strip_length(N)


@pytest.mark.parametrize("seed", range(5))
def test_a_noisy_plateau_is_not_overfitting(seed):
    train, _ = valley()
    val = 0.5 + np.random.default_rng(seed).normal(0, 0.01, N)
    assert overfit_onset(train, val) is None


def test_validation_rising_with_training_rising_is_not_overfitting():
    _, val = valley()
    assert overfit_onset(val * 0.9, val) is None  # both rise after epoch 40: a diverging training


def test_too_few_epochs_tell_nothing():
    train, val = valley(n=7, bottom=1)
    assert overfit_onset(train, val) is None
    assert overfit_onset(*valley(n=8, bottom=1)) is not None


def test_a_valley_that_ends_far_above_its_minimum_is_overfit_whatever_the_accuracy():
    train, val = valley()
    d = diagnose(classification(N, 0.95, 0.95, train, val), best_epoch=40)
    assert (d.verdict, d.overfit_epoch, d.best_epoch) == ("overfit", 40, 40)
    assert d.gap_at_best == pytest.approx(val[40] - train[40]) and d.gap_at_final == pytest.approx(val[-1] - train[-1])
    assert "rising since epoch 40" in d.reason


def plateau_then_rise(rise):
    """Validation loss flat at 0.5 up to epoch 40, then up linearly to 0.5 + rise at the last epoch."""
    train, _ = valley()
    return train, 0.5 + rise * np.maximum(0, np.arange(N) - 40) / (N - 1 - 40)


@pytest.mark.parametrize("rise, verdict", [(0.048, "good_fit"), (0.052, "overfit")])
def test_overfit_when_the_validation_loss_ends_ten_percent_above_its_minimum(rise, verdict):
    d = diagnose(classification(N, 0.95, 0.95, *plateau_then_rise(rise)))
    assert d.overfit_epoch == 40 and d.verdict == verdict


def test_a_rise_that_comes_back_down_is_not_an_onset():
    train, val = valley()
    val = np.where(np.arange(N) < 70, val, val[70] - 0.02 * (np.arange(N) - 70))  # falls again, below its bottom
    assert overfit_onset(train, val) is None


@pytest.mark.parametrize("gap, verdict", [(0.049, "good_fit"), (0.051, "overfit")])
def test_the_accuracy_gap_threshold(gap, verdict):
    d = diagnose(classification(accuracy=0.96, val_accuracy=0.96 - gap))
    assert (d.verdict, d.fit_measure) == (verdict, "accuracy_gap")
    assert d.fit_gap_at_final == pytest.approx(gap)


@pytest.mark.parametrize("accuracy, val_accuracy, verdict", [(0.64, 0.58, "underfit"), (0.89, 0.6, "overfit"),
                                                             (0.9, 0.79, "overfit"), (0.9, 0.81, "good_fit")])
def test_an_accuracy_gap_is_overfitting_only_when_it_exceeds_the_training_error(accuracy, val_accuracy, verdict):
    assert diagnose(classification(accuracy=accuracy, val_accuracy=val_accuracy)).verdict == verdict


@pytest.mark.parametrize("accuracy, verdict", [(0.899, "underfit"), (0.9, "good_fit")])
def test_the_training_accuracy_threshold(accuracy, verdict):
    assert diagnose(classification(accuracy=accuracy, val_accuracy=accuracy)).verdict == verdict


@pytest.mark.parametrize("val_mse, verdict", [(0.149, "good_fit"), (0.151, "overfit")])
def test_the_relative_mse_threshold_for_regression(val_mse, verdict):
    d = diagnose(regression(mse=0.1, val_mse=val_mse))
    assert (d.verdict, d.fit_measure) == (verdict, "relative_mse_gap")
    assert d.fit_gap_at_final == pytest.approx((val_mse - 0.1) / 0.1)


def test_both_losses_still_falling_at_the_end_is_underfit():
    falling = 1.0 / np.arange(1, 21)  # the last two-epoch strip is ~10 % below the one before
    d = diagnose(classification(accuracy=0.95, val_accuracy=0.94, loss=falling, val_loss=falling * 1.1))
    assert d.verdict == "underfit" and "still falling" in d.reason
    flat_val = np.full(20, 0.3)  # only the training loss falls: not underfit
    assert diagnose(classification(accuracy=0.95, val_accuracy=0.94, loss=falling, val_loss=flat_val)).verdict \
        == "good_fit"


def test_the_gaps_are_read_at_the_best_and_the_final_epoch():
    rows = classification(accuracy=0.95, val_accuracy=0.95)
    rows[3] = {**rows[3], "accuracy": 0.9, "val_accuracy": 0.8, "gap": 0.7}
    d = diagnose([EpochRecord(0, i, m) for i, m in enumerate(rows)], best_epoch=3)
    assert d.fit_gap_at_best == pytest.approx(0.1) and d.fit_gap_at_final == pytest.approx(0.0)
    assert d.gap_at_best == 0.7 and d.gap_at_final == pytest.approx(0.05)


def test_no_epochs_no_verdict_and_the_tags():
    assert diagnose([]).verdict is None and diagnose([]).tags() == {"fitgap.verdict_reason": "no epochs"}
    tags = diagnose(classification(accuracy=0.96, val_accuracy=0.90)).tags()
    assert tags["fitgap.verdict"] == "overfit" and tags["fitgap.fit_measure"] == "accuracy_gap"
    assert tags["fitgap.fit_gap_final"] == "0.06" and "fitgap.overfit_epoch" not in tags
