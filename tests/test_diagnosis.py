"""The per-trial diagnosis on constructed curves: the onset of overfitting, and each rule of the verdict table
(`tracking/diagnosis.py`) on both sides of its threshold, judged at the best epoch."""

from __future__ import annotations

import numpy as np
import pytest

from fitgap.tracking import diagnosis
from fitgap.tracking.diagnosis import data_facts, diagnose, overfit_onset
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
    """Binary epochs, trained on bce: flat curves (nothing still falling) unless given, with these accuracies."""
    loss = np.full(n, 0.2) if loss is None else np.asarray(loss)
    val_loss = np.full(n, 0.25) if val_loss is None else np.asarray(val_loss)
    accuracy, val_accuracy = np.broadcast_to(accuracy, n), np.broadcast_to(val_accuracy, n)
    return [{"loss": loss[i], "val_loss": val_loss[i], "bce": loss[i], "val_bce": val_loss[i],
             "fit_gap": val_loss[i] - loss[i], "loss_gap": val_loss[i] - loss[i], "accuracy": accuracy[i],
             "val_accuracy": val_accuracy[i]} for i in range(n)]


def regression(n=20, mse=0.1, val_mse=0.1):
    return [{"loss": mse, "val_loss": val_mse, "mse": mse, "val_mse": val_mse,
             "fit_gap": (val_mse - mse) / (val_mse + mse)} for _ in range(n)]


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


def test_a_rise_that_comes_back_down_is_not_an_onset():
    train, val = valley()
    val = np.where(np.arange(N) < 70, val, val[70] - 0.02 * (np.arange(N) - 70))  # falls again, below its bottom
    assert overfit_onset(train, val) is None


def test_did_not_learn_is_no_better_than_the_majority_class():
    rows = classification(accuracy=0.66, val_accuracy=0.65)
    d = diagnose(rows, baseline=0.64)
    assert d.verdict == "did_not_learn" and "majority class alone scores 0.64" in d.reason
    assert diagnose(classification(accuracy=0.7, val_accuracy=0.67), baseline=0.64).verdict != "did_not_learn"
    assert diagnose(rows).verdict == "underfit"  # without a baseline the rule is not judged


@pytest.mark.parametrize("val_mse, verdict", [(0.99, "did_not_learn"), (0.97, "overfit")])
def test_did_not_learn_in_regression_is_a_validation_r2_near_zero(val_mse, verdict):
    assert diagnose(regression(mse=0.05, val_mse=val_mse), baseline=1.0).verdict == verdict


def test_a_training_loss_that_climbs_back_is_unstable():
    loss = np.concatenate([np.linspace(1.0, 0.2, 50), np.linspace(0.2, 0.6, 50)])
    d = diagnose(classification(N, loss=loss, val_loss=loss + 0.05))
    assert d.verdict == "unstable" and "diverged" in d.reason
    calm = np.concatenate([np.linspace(1.0, 0.2, 50), np.linspace(0.2, 0.24, 50)])  # 20 % above: not yet
    assert diagnose(classification(N, loss=calm, val_loss=calm + 0.05)).verdict != "unstable"


def test_a_data_loss_that_a_strong_penalty_raises_is_not_instability():
    loss = np.concatenate([np.linspace(1.0, 0.2, 50), np.linspace(0.2, 0.4, 50)])  # the data loss alone climbs back
    rows = classification(N, loss=loss, val_loss=loss + 0.05)
    penalty = np.concatenate([np.linspace(0.5, 0.3, 50), np.linspace(0.3, 0.1, 50)])  # while the penalty falls more
    rows = [{**row, "reg_loss": p} for row, p in zip(rows, penalty)]
    assert diagnose(rows).verdict != "unstable"


@pytest.mark.parametrize("amplitude, verdict", [(0.08, "unstable"), (0.01, "good_fit")])
def test_a_training_loss_that_jumps_from_epoch_to_epoch_is_unstable(amplitude, verdict):
    loss = 0.3 + amplitude * np.random.default_rng(0).normal(size=N)
    assert diagnose(classification(N, loss=loss, val_loss=loss + 0.05)).verdict == verdict


def test_overfit_from_the_onset_when_the_best_epoch_is_past_it():
    train, val = valley()
    d = diagnose(classification(N, 0.95, 0.95, train, val), best_epoch=90)
    assert (d.verdict, d.overfit_epoch) == ("overfit", 40)
    assert d.reason.startswith("overfit from epoch 40")
    assert d.best_fit_gap == pytest.approx(val[90] - train[90]) and d.final_fit_gap == pytest.approx(val[-1] - train[-1])


def test_an_onset_after_the_best_epoch_does_not_make_the_kept_model_overfit():
    train, val = valley()
    d = diagnose(classification(N, 0.95, 0.95, train, val), best_epoch=40)
    assert d.overfit_epoch == 40 and d.verdict == "good_fit"  # the model kept is the bottom of the valley's


def plateau_then_rise(rise):
    """Validation loss flat at 0.5 up to epoch 40, then up linearly to 0.5 + rise at the last epoch."""
    train, _ = valley()
    return train + 0.3, 0.5 + rise * np.maximum(0, np.arange(N) - 40) / (N - 1 - 40)


@pytest.mark.parametrize("rise, verdict", [(0.048, "good_fit"), (0.052, "overfit")])
def test_overfit_when_the_validation_loss_at_the_best_epoch_is_ten_percent_above_its_minimum(rise, verdict):
    d = diagnose(classification(N, 0.95, 0.95, *plateau_then_rise(rise)))
    assert d.overfit_epoch == 40 and d.verdict == verdict


@pytest.mark.parametrize("val_bce, verdict", [(0.39, "good_fit"), (0.41, "overfit")])
def test_overfit_when_the_validation_measure_is_over_twice_the_training_one(val_bce, verdict):
    d = diagnose(classification(loss=np.full(20, 0.2), val_loss=np.full(20, val_bce)))
    assert (d.verdict, d.fit_measure) == (verdict, "val_bce - bce")
    assert d.best_fit_gap == pytest.approx(val_bce - 0.2)


def test_a_tiny_classification_gap_is_not_overfitting_even_if_relatively_large():
    d = diagnose(classification(loss=np.full(20, 0.01), val_loss=np.full(20, 0.05)))
    assert d.verdict == "good_fit"  # 5x, but 0.04 nats < OVERFIT_GAP


@pytest.mark.parametrize("val_mse, verdict", [(0.19, "good_fit"), (0.21, "overfit")])
def test_the_regression_gap_is_scale_free_and_bounded(val_mse, verdict):
    d = diagnose(regression(mse=0.1, val_mse=val_mse))
    assert d.verdict == verdict and d.best_fit_gap == pytest.approx((val_mse - 0.1) / (val_mse + 0.1))
    assert diagnose(regression(mse=1e-9, val_mse=1e-9)).verdict == "good_fit"  # a linear fit of noise-free data


def test_both_losses_still_falling_at_the_best_epoch_is_still_improving():
    falling = 1.0 / np.arange(1, 21)  # the last two-epoch strip is ~10 % below the one before
    d = diagnose(classification(accuracy=0.98, val_accuracy=0.97, loss=falling, val_loss=falling * 1.1))
    assert d.verdict == "still_improving" and "train longer" in d.reason
    flat_val = np.full(20, 0.08)  # only the training loss falls: not still improving
    assert diagnose(classification(accuracy=0.98, val_accuracy=0.97, loss=falling, val_loss=flat_val)).verdict \
        == "good_fit"
    early = diagnose(classification(accuracy=0.98, val_accuracy=0.97, loss=falling, val_loss=falling * 1.1),
                     best_epoch=5)
    assert early.verdict == "good_fit"  # the score comes from epoch 5: what came after does not judge it


@pytest.mark.parametrize("accuracy, verdict", [(0.899, "underfit"), (0.9, "good_fit")])
def test_the_training_accuracy_threshold(accuracy, verdict):
    assert diagnose(classification(accuracy=accuracy, val_accuracy=accuracy), baseline=0.5).verdict == verdict


def test_regression_underfit_is_a_training_r2_below_ninety_percent():
    assert diagnose(regression(mse=0.2, val_mse=0.2), baseline=1.0).verdict == "underfit"
    assert diagnose(regression(mse=0.05, val_mse=0.05), baseline=1.0).verdict == "good_fit"


def test_the_verdict_is_read_at_the_best_epoch():
    rows = classification(accuracy=0.95, val_accuracy=0.95)
    rows[3] = {**rows[3], "accuracy": 0.8, "val_accuracy": 0.8}
    assert diagnose(rows).verdict == "good_fit"
    d = diagnose([EpochRecord(0, i, m) for i, m in enumerate(rows)], best_epoch=3)
    assert d.verdict == "underfit" and "best epoch 3" in d.reason


def test_data_facts_are_the_trivial_predictions_validation_scores():
    y_train, y_val = np.array([[1.0], [1.0], [0.0]]), np.array([[1.0], [0.0], [0.0], [0.0]])
    assert data_facts("binary", y_train, y_val) == (4, 0.25)
    assert data_facts("multiclass", np.array([2, 2, 1]), np.array([2, 0])) == (2, 0.5)
    assert data_facts("regression", np.array([[1.0], [3.0]]), np.array([[2.0], [4.0]])) == (2, 2.0)


def test_every_verdict_is_documented():
    assert set(diagnosis.VERDICTS) == {"did_not_learn", "unstable", "overfit", "still_improving", "underfit",
                                       "good_fit"}
    for verdict in diagnosis.VERDICTS:
        assert verdict in diagnosis.__doc__


def test_no_epochs_no_verdict_and_the_tags():
    assert diagnose([]).verdict is None and diagnose([]).tags() == {"fitgap.verdict_reason": "no epochs"}
    d = diagnose(classification(loss=np.full(20, 0.2), val_loss=np.full(20, 0.5)))
    tags = d.tags()
    assert tags["fitgap.verdict"] == "overfit" and tags["fitgap.fit_measure"] == "val_bce - bce"
    assert "fitgap.overfit_epoch" not in tags
    assert (d.best_fit_gap, d.final_fit_gap) == (pytest.approx(0.3), pytest.approx(0.3)) and d.numbers() == {}
    train, val = valley()
    assert diagnose(classification(N, 0.95, 0.95, train, val)).numbers() == {"overfit_epoch": 40}
