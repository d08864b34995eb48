"""The reference Keras executor: model, complexity and training, on real (small) TensorFlow runs."""

import math
import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from fitgap.training.complexity import count  # noqa: E402
from fitgap.data.datasets import load_dataset  # noqa: E402
from fitgap.training.model import build_model  # noqa: E402
from fitgap.training.steps import batch_order, epoch_learning_rate  # noqa: E402
from fitgap.training.reference import train  # noqa: E402
from fitgap.studies.messages import TrialTask  # noqa: E402
from fitgap.sweeps.vocabulary import epoch_metrics  # noqa: E402

pytestmark = pytest.mark.tensorflow

L = keras.layers
DATA = load_dataset({"name": "dot", "validation_fraction": 0.2})


def run(seed=0, on_epoch=None, **overrides):
    params = {"hidden": [11], "epochs": 5, "batch_size": 32, "learning_rate": 0.05, **overrides}
    records = []

    def collect(record):
        records.append(record)
        return on_epoch(record) if on_epoch else False

    outcome = train(TrialTask("test", 3, params, seed=seed, dataset={"name": "dot"}), DATA, collect)
    return outcome, records


def initial_model(seed, **params):
    keras.utils.set_random_seed(seed)
    return build_model({"hidden": [11], **params}, 2)


def kernels(model):
    return [layer.kernel.numpy() for layer in model.layers if isinstance(layer, L.Dense)]


# ---- complexity -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu"])
def test_complexity_of_the_2_11_1_mlp_by_hand(activation):
    expected = {"params_total": 2 * 11 + 11 + 11 * 1 + 1, "params_trainable": 45, "params_non_trainable": 0,
                "macs": 2 * 11 + 11 * 1, "unknown_layers": []}
    result = count(build_model({"hidden": [11], "activation": activation}, 2))
    assert {k: v for k, v in result.items() if k != "layers"} == expected
    assert [(row["class"], row["params"], row["macs"]) for row in result["layers"]] == [
        ("Dense", 33, 22), (result["layers"][1]["class"], 0, 0), ("Dense", 12, 11)]


def test_complexity_of_a_small_conv_net_by_hand():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(4, 3),  # -> 6x6x4: 3*3*3*4 + 4 params, 3*3*3*4 * 6*6 MACs
            L.MaxPooling2D(),  # -> 3x3x4, free
            L.Conv2D(6, 1, groups=2),  # -> 3x3x6: kernel 1*1*(4/2)*6 = 12 (+6 biases), 12 * 3*3 MACs
            L.Flatten(),  # 54
            L.Dropout(0.5),
            L.Dense(2),  # 54*2 + 2 params, 108 MACs
        ]
    )
    result = count(model)
    assert result["params_total"] == result["params_trainable"] == 112 + 18 + 110
    assert result["params_non_trainable"] == 0
    assert result["macs"] == 3 * 3 * 3 * 4 * 36 + 12 * 9 + 54 * 2
    assert result["unknown_layers"] == []


def test_complexity_walks_nested_models_and_reports_unknown_layers():
    class Scale(L.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],))

        def call(self, x):
            return x * self.w

    inner = build_model({"hidden": [11]}, 2)
    outer = keras.Sequential([keras.Input((2,)), Scale(), inner, L.Dense(3)])
    result = count(outer)
    assert result["params_total"] == 2 + 45 + 6
    assert result["macs"] == 33 + 3  # Scale's multiplies are not guessed...
    assert result["unknown_layers"] == ["Scale"]  # ...but reported


# ---- model ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "activation, function",
    [
        ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
        ("tanh", np.tanh),
        ("relu", lambda x: np.maximum(x, 0)),
        ("leaky_relu", lambda x: np.where(x > 0, x, 0.2 * x)),
    ],
)
def test_hidden_layers_apply_the_named_activation(activation, function):
    model = build_model({"hidden": [3, 3], "activation": activation}, 2)
    x = np.array([[-2.0, 0.0, 1.5]], dtype=np.float32)
    for layer in model.layers[1:4:2]:  # after each hidden Dense
        np.testing.assert_allclose(np.asarray(layer(x)), function(x), rtol=1e-6)


def test_leaky_relu_slope_defaults_to_0_2_and_follows_leaky_alpha():
    def slopes(params):
        model = build_model({"hidden": [4, 4], "activation": "leaky_relu", **params}, 2)
        return [layer.negative_slope for layer in model.layers if isinstance(layer, L.LeakyReLU)]

    assert slopes({}) == pytest.approx([0.2, 0.2])
    assert slopes({"leaky_alpha": 0.05}) == pytest.approx([0.05, 0.05])


def test_weights_start_centred_with_he_std_and_zero_biases():
    model = initial_model(0, hidden=[4000])
    first = model.layers[0]
    assert abs(first.kernel.numpy().mean()) < 0.03
    assert first.kernel.numpy().std() == pytest.approx(math.sqrt(2 / 2), rel=0.05)
    assert not first.bias.numpy().any()


@pytest.mark.parametrize("kind, penalty", [("l2", np.square), ("l1", np.abs)])
def test_penalty_covers_every_kernel_and_no_bias(kind, penalty):
    model = build_model({"hidden": [11, 5], "regularizer": kind, "regularization_weight": 0.01}, 2)
    for layer in model.layers[::2]:  # Dense, activation, Dense, activation, Dense
        layer.bias.assign(np.full(layer.bias.shape, 3.0))  # a regularized bias would now show
    by_hand = 0.01 * sum(penalty(k).sum() for k in kernels(model))  # 3 kernels, output layer included
    assert float(sum(model.losses)) == pytest.approx(by_hand, rel=1e-5)


# ---- training ---------------------------------------------------------------------------------------------------------


def test_short_training_reports_every_epoch_with_the_agreed_metrics():
    schedule = {"learning_rate": 0.1, "decay_rate": 0.5, "decay_steps": 2}
    outcome, records = run(**schedule, regularizer="l2", regularization_weight=0.001)

    assert (outcome.number, outcome.state, outcome.reason) == (3, "COMPLETE", None)
    assert dict(outcome.complexity) == {"params_total": 45, "params_trainable": 45, "params_non_trainable": 0,
                                        "macs": 33}
    assert outcome.test_metrics == {}  # dot has no test set
    assert outcome.artifacts["complexity.csv"].decode().splitlines()[0] == (
        "layer,class,output_shape,params,params_trainable,params_non_trainable,macs")
    assert [(r.trial, r.epoch) for r in records] == [(3, e) for e in range(5)]
    for r in records:
        m = r.metrics
        assert set(m) == set(epoch_metrics("binary"))
        assert all(type(v) is float and math.isfinite(v) for v in m.values())
        assert m["lr"] == pytest.approx(epoch_learning_rate(schedule, r.epoch, 1))
        assert m["loss_gap"] == pytest.approx(m["val_loss"] - m["loss"])
        assert m["fit_gap"] == pytest.approx(m["val_bce"] - m["bce"])
        assert m["accuracy_gap"] == pytest.approx(m["accuracy"] - m["val_accuracy"])
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["val_accuracy"] <= 1 and m["reg_loss"] > 0
    assert [r.metrics["lr"] for r in records] == pytest.approx([0.1, 0.1 * 0.5**0.5, 0.05, 0.1 * 0.5**1.5, 0.025])
    assert records[-1].metrics["loss"] < records[0].metrics["loss"]  # it learns


def test_same_seed_same_records_other_seed_other_records():
    first, second, other = run(seed=1)[1], run(seed=1)[1], run(seed=2)[1]
    assert [r.metrics for r in first] == [r.metrics for r in second]
    assert [r.metrics for r in first] != [r.metrics for r in other]


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse"])
def test_measures_match_a_hand_computation_without_the_penalty(loss):
    # A negligible learning rate leaves the weights where the seed put them, so numpy can recompute every metric.
    params = {"loss": loss, "regularizer": "l2", "regularization_weight": 0.1}
    _, records = run(seed=4, epochs=1, learning_rate=1e-12, **params)
    measured = records[0].metrics
    model = initial_model(4, **params)

    penalty = 0.1 * sum(np.square(k).sum() for k in kernels(model))
    assert measured["reg_loss"] == pytest.approx(penalty, rel=1e-5)
    for prefix, x, y in [("", DATA.x_train, DATA.y_train), ("val_", DATA.x_val, DATA.y_val)]:
        out = model.predict(x, verbose=0).astype(np.float64)
        if loss == "mse":
            data_loss, p = np.mean((out - y) ** 2), out
        else:
            data_loss, p = np.mean(np.logaddexp(0, out) - y * out), 1 / (1 + np.exp(-out))
        clipped = np.clip(p, 1e-7, 1 - 1e-7)
        assert measured[prefix + "loss"] == pytest.approx(data_loss, rel=1e-5)  # no penalty in it
        assert measured[prefix + "bce"] == pytest.approx(
            -np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)), rel=1e-5
        )
        assert measured[prefix + "accuracy"] == pytest.approx(np.mean((p > 0.5) == (y > 0.5)), abs=1e-6)
    assert measured["loss"] + measured["reg_loss"] > measured["loss"] * 1.01  # the penalty was large enough to show


def test_training_follows_fitgaps_batch_order_and_learning_rates():
    params = {"learning_rate": 0.2, "decay_rate": 0.5, "decay_steps": 1, "regularizer": "l2", "regularization_weight": 0.01}
    _, records = run(seed=5, epochs=3, **params)

    def by_hand(order_of):
        model = initial_model(5, **params)
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        for epoch in range(3):
            lr = epoch_learning_rate(params, epoch, 1)
            order = order_of(epoch)
            for start in range(0, len(order), 32):  # 7 batches of 32, then one of 16
                rows = order[start : start + 32]
                with tf.GradientTape() as tape:
                    total = loss(DATA.y_train[rows], model(DATA.x_train[rows], training=True)) + sum(model.losses)
                grads = tape.gradient(total, model.trainable_variables)
                for variable, grad in zip(model.trainable_variables, grads):
                    variable.assign_sub(lr * grad)
        return float(loss(DATA.y_train, model(DATA.x_train)))

    measured = records[-1].metrics["loss"]
    assert measured == pytest.approx(by_hand(lambda epoch: batch_order(5, epoch, 240)), rel=1e-4)
    assert measured != pytest.approx(by_hand(lambda epoch: np.arange(240)), rel=1e-3)  # the order matters


def test_true_from_on_epoch_stops_the_trial_as_pruned():
    outcome, records = run(on_epoch=lambda record: record.epoch == 2)
    assert (outcome.state, outcome.reason) == ("PRUNED", "stopped at epoch 2")
    assert [r.epoch for r in records] == [0, 1, 2]


def test_a_diverging_trial_fails_on_its_non_finite_loss():
    outcome, records = run(loss="mse", learning_rate=1e6, epochs=30)
    assert outcome.state == "FAIL"
    match = re.fullmatch(r"non-finite loss \((nan|inf)\) at epoch (\d+)", outcome.reason)
    assert match, outcome.reason
    assert len(records) == int(match.group(2)) < 30  # the non-finite epoch is not reported
    assert all(math.isfinite(v) for r in records for v in r.metrics.values())


def test_an_exception_in_on_epoch_fails_the_trial_with_its_traceback():
    def explode(record):
        raise RuntimeError("tracking is down\nsecond line")

    outcome, records = run(on_epoch=explode)
    assert (outcome.state, outcome.reason) == ("FAIL", "RuntimeError: tracking is down")
    assert "Traceback" in outcome.traceback and "explode" in outcome.traceback
    assert len(records) == 1


def test_bad_params_fail_the_trial_with_a_one_line_reason():
    outcome, _ = run(regularizer="l3")
    assert outcome.state == "FAIL"
    assert outcome.reason == "ValueError: `regularizer` must be one of ['l1', 'l1_l2', 'l2', 'none'], but got 'l3'"
    assert "build_model" in outcome.traceback
