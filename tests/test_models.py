"""Every dimension of the search space, every loss, optimizer and model kind, each on a real tiny TensorFlow run and
checked for a property that would fail if fitgap ignored it."""

import math
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import fitgap.training.core as core  # noqa: E402
import fitgap.training.reference as trainer  # noqa: E402
from fitgap.training.cnn import augmenter  # noqa: E402
from fitgap.training.complexity import count  # noqa: E402
from fitgap.data.datasets import load_dataset  # noqa: E402
from fitgap.training.steps import learning_rates  # noqa: E402
from fitgap.training.heads import HEADS  # noqa: E402
from fitgap.training.model import build_model  # noqa: E402
from fitgap.training.steps import batch_order  # noqa: E402
from fitgap.studies.messages import TrialTask  # noqa: E402
from fitgap.sweeps.space import suggest, trial_params  # noqa: E402
from fitgap.sweeps.spec import parse_spec  # noqa: E402
from fitgap.sweeps.vocabulary import INITIALIZERS, LOSSES_BY_TASK, TASK_METRICS, epoch_metrics  # noqa: E402

from tiny import blobs, dataset, images, sales  # noqa: E402

pytestmark = pytest.mark.tensorflow

L = keras.layers
DOT = load_dataset({"name": "dot", "validation_fraction": 0.2})
TESTS = str(Path(__file__).parent)


def run(data=DOT, seed=0, objective=(), **overrides):
    """Train one trial; returns (outcome, records, the trained model)."""
    params = {"hidden": [11], "epochs": 5, "batch_size": 32, "learning_rate": 0.05, **overrides}
    records, models = [], []

    def keep(*args, **kwargs):
        models.append(build_model(*args, **kwargs))
        return models[-1]

    original, core.build_model = core.build_model, keep
    try:
        task = TrialTask("test", 0, params, seed=seed, dataset={}, data_dir=TESTS, objective=objective)
        outcome = trainer.train(task, data, lambda record: records.append(record) or False)
    finally:
        core.build_model = original
    assert outcome.state == "COMPLETE", (outcome.reason, outcome.traceback)
    return outcome, records, models[-1] if models else None


def curve(records, metric="loss"):
    return [r.metrics[metric] for r in records]


def kernels(model):
    return [w.numpy() for w in model.trainable_weights if len(w.shape) > 1]


# ---- activations and initializers -------------------------------------------------------------------------------------

erf = np.vectorize(math.erf)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


@pytest.mark.parametrize(
    "activation, function",
    [
        ("elu", lambda x: np.where(x > 0, x, np.exp(x) - 1)),
        ("selu", lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1))),
        ("gelu", lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))),
        ("swish", lambda x: x / (1 + np.exp(-x))),
        ("softplus", lambda x: np.log1p(np.exp(x))),
        ("linear", lambda x: x),
    ],
)
def test_the_modern_activations_follow_their_formula(activation, function):
    model = build_model({"hidden": [3, 3], "activation": activation}, 2)
    x = np.array([[-2.0, -0.5, 0.0, 0.7, 1.5]], dtype=np.float32)
    for layer in model.layers[1:4:2]:  # after each hidden Dense
        np.testing.assert_allclose(np.asarray(layer(x)), function(x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    first, _, _ = run(activation=activation, epochs=2)
    assert first.state == "COMPLETE"


EXPECTED_STD = {  # of a 400 -> 300 kernel
    "he_normal": math.sqrt(2 / 400), "he_uniform": math.sqrt(2 / 400),
    "glorot_normal": math.sqrt(2 / 700), "glorot_uniform": math.sqrt(2 / 700),
    "lecun_normal": math.sqrt(1 / 400), "lecun_uniform": math.sqrt(1 / 400),
    "random_normal": 0.05, "truncated_normal": 0.05 * 0.87962566,  # cut at 2 std
}


@pytest.mark.parametrize("initializer", INITIALIZERS)
def test_initializer_sets_the_kernel_spread_and_biases_start_at_zero(initializer):
    model = build_model({"hidden": [300], "initializer": initializer}, 400)
    kernel, bias = model.layers[0].kernel.numpy(), model.layers[0].bias.numpy()
    assert kernel.std() == pytest.approx(EXPECTED_STD[initializer], rel=0.03)
    assert abs(kernel.mean()) < 0.1 * kernel.std() and not bias.any()


def test_the_initializer_and_the_leaky_slope_change_training():
    assert curve(run(initializer="glorot_uniform")[1]) != curve(run(initializer="he_normal")[1])
    steep, flat = (run(activation="leaky_relu", leaky_alpha=alpha, epochs=3)[1] for alpha in (0.3, 0.01))
    assert curve(steep) != pytest.approx(curve(flat), rel=1e-4)


# ---- regularization ---------------------------------------------------------------------------------------------------


def test_l1_l2_penalty_by_hand_and_its_ratio_ends_at_l1_and_l2():
    params = {"hidden": [11, 5], "regularizer": "l1_l2", "regularization_weight": 0.01, "l1_ratio": 0.3}
    model = build_model(params, 2)
    by_hand = sum(0.01 * (0.3 * np.abs(k).sum() + 0.7 * np.square(k).sum()) for k in kernels(model))
    assert float(sum(model.losses)) == pytest.approx(by_hand, rel=1e-5)

    weight = {"regularization_weight": 0.02, "epochs": 3}
    for ratio, alone in ((1.0, "l1"), (0.0, "l2")):
        mixed = run(regularizer="l1_l2", l1_ratio=ratio, **weight)[1]
        assert curve(mixed, "reg_loss") == pytest.approx(curve(run(regularizer=alone, **weight)[1], "reg_loss"))


def test_l1_leaves_more_near_zero_kernel_weights_and_l2_a_smaller_norm():
    common = {"epochs": 40, "learning_rate": 0.1, "hidden": [16]}
    plain = kernels(run(**common)[2])
    l1 = kernels(run(regularizer="l1", regularization_weight=0.01, **common)[2])
    l2 = kernels(run(regularizer="l2", regularization_weight=0.01, **common)[2])

    def near_zero(ks):
        return sum(int((np.abs(k) < 0.02).sum()) for k in ks)

    assert near_zero(l1) > near_zero(plain) + 5
    assert sum(np.square(k).sum() for k in l2) < 0.8 * sum(np.square(k).sum() for k in plain)


def test_dropout_changes_training_but_not_inference():
    plain, with_dropout = run(epochs=3)[1], run(epochs=3, dropout=0.5)
    _, records, model = with_dropout
    assert curve(records) != curve(plain)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "ReLU", "Dropout", "Dense"]
    x = DOT.x_val
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))  # inference: no dropout
    assert not np.array_equal(model(x, training=True), model(x, training=True))  # training: a new mask each call
    assert curve(records) == curve(run(epochs=3, dropout=0.5)[1])  # the same seed, the same masks


# ---- optimizers and the schedule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "optimizer, own, values",
    [("sgdm", "momentum", (0.5, 0.9)), ("adagrad", None, ()), ("rmsprop", "rho", (0.5, 0.9)),
     ("adam", "beta_1", (0.5, 0.9)), ("adam", "beta_2", (0.9, 0.999))],
)
def test_each_optimizer_differs_from_sgd_and_uses_its_own_parameter(optimizer, own, values):
    sgd = curve(run(epochs=3)[1])
    assert curve(run(optimizer=optimizer, epochs=3)[1]) != pytest.approx(sgd, rel=1e-4)
    if own:
        first, second = (curve(run(optimizer=optimizer, epochs=3, **{own: v})[1]) for v in values)
        assert first != pytest.approx(second, rel=1e-4)


def test_the_courses_momentum_at_lr_is_keras_momentum_at_a_tenth_of_it():
    """m = 0.9 m + 0.1 g; w -= lr m is v = 0.9 v - (0.1 lr) g; w += v with v = -lr m: the same training."""
    course = curve(run(optimizer="sgdm", momentum_form="course", learning_rate=0.1, epochs=3)[1])
    assert course == pytest.approx(curve(run(optimizer="sgdm", learning_rate=0.01, epochs=3)[1]), rel=1e-4)
    assert course != pytest.approx(curve(run(optimizer="sgdm", learning_rate=0.1, epochs=3)[1]), rel=1e-2)


@pytest.mark.parametrize("start", [0.0, 0.1])
def test_adagrads_first_step_starts_from_its_initial_accumulator(start):
    """One full-batch step: w -= lr g / sqrt(start + g**2 + 1e-7); from the course's 0, about lr * sign(g)."""
    params = {"hidden": [3], "optimizer": "adagrad", "initial_accumulator": start, "learning_rate": 0.01}
    keras.utils.set_random_seed(0)
    model = build_model(params, 2)
    with tf.GradientTape() as tape:
        value = keras.losses.BinaryCrossentropy(from_logits=True)(DOT.y_train, model(DOT.x_train, training=True))
    before = [v.numpy() for v in model.trainable_variables]
    grads = [g.numpy() for g in tape.gradient(value, model.trainable_variables)]
    trained = run(seed=0, epochs=1, batch_size=len(DOT.x_train), **params)[2]
    steps = [v.numpy() - old for v, old in zip(trained.trainable_variables, before)]
    for step, g in zip(steps, grads):
        np.testing.assert_allclose(step, -0.01 * g / np.sqrt(start + g**2 + 1e-7), rtol=1e-3, atol=1e-7)
    assert (max(np.abs(s).max() for s in steps) == pytest.approx(0.01, rel=1e-3)) == (start == 0)


def test_without_shuffle_every_epoch_visits_the_rows_in_their_stored_order():
    for epoch in range(3):
        np.testing.assert_array_equal(batch_order(5, epoch, 240, shuffle=False), np.arange(240))
    params = {"learning_rate": 0.2, "shuffle": False}
    _, records, _ = run(seed=5, epochs=2, **params)
    assert curve(records) != pytest.approx(curve(run(seed=5, epochs=2, learning_rate=0.2)[1]), rel=1e-4)

    keras.utils.set_random_seed(5)
    model = build_model({"hidden": [11], **params}, 2)
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    for epoch in range(2):
        for start in range(0, 240, 32):
            rows = slice(start, start + 32)
            with tf.GradientTape() as tape:
                value = loss(DOT.y_train[rows], model(DOT.x_train[rows], training=True))
            for variable, grad in zip(model.trainable_variables, tape.gradient(value, model.trainable_variables)):
                variable.assign_sub(0.2 * grad)
    assert records[-1].metrics["loss"] == pytest.approx(float(loss(DOT.y_train, model(DOT.x_train))), rel=1e-4)


def test_decay_unit_step_follows_the_step_formula_batch_by_batch():
    params = {"learning_rate": 0.2, "decay_rate": 0.5, "decay_steps": 4, "decay_unit": "step"}
    _, records, _ = run(seed=5, epochs=2, **params)
    steps = 8  # ceil(240 / 32)
    assert curve(records, "lr") == pytest.approx([0.2 * 0.5 ** (e * steps / 4) for e in range(2)])

    keras.utils.set_random_seed(5)
    model = build_model({"hidden": [11], **params}, 2)
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    step = 0
    for epoch in range(2):
        order = batch_order(5, epoch, 240)
        for start in range(0, 240, 32):
            rows = order[start : start + 32]
            with tf.GradientTape() as tape:
                value = loss(DOT.y_train[rows], model(DOT.x_train[rows], training=True))
            grads = tape.gradient(value, model.trainable_variables)
            lr = 0.2 * 0.5 ** (step / 4)  # Keras's ExponentialDecay: the exponent counts optimizer steps
            for variable, grad in zip(model.trainable_variables, grads):
                variable.assign_sub(lr * grad)
            step += 1
    assert records[-1].metrics["loss"] == pytest.approx(float(loss(DOT.y_train, model(DOT.x_train))), rel=1e-4)


def test_staircase_and_batch_size_shape_the_logged_rates():
    params = {"learning_rate": 0.1, "decay_rate": 0.5, "decay_steps": 10, "decay_unit": "step", "staircase": True}
    for batch_size, steps in ((32, 8), (80, 3)):
        _, records, _ = run(epochs=4, batch_size=batch_size, **params)
        assert len(records) == 4  # `epochs`
        assert curve(records, "lr") == pytest.approx([0.1 * 0.5 ** ((e * steps) // 10) for e in range(4)])
    table = learning_rates(params, np.arange(30), 8)
    assert (np.diff(table) != 0).sum() == 2  # staircase: changes at steps 10 and 20 only


# ---- losses and tasks --------------------------------------------------------------------------------------------------


def _by_hand(task, loss, out, y, cost=1.0, profit=99.0):
    out, y = out.astype(np.float64), y
    if task == "multiclass":
        logits = out
        softmax = np.exp(logits - logits.max(1, keepdims=True))
        softmax /= softmax.sum(1, keepdims=True)
        one_hot = np.eye(out.shape[1])[y]
        if loss == "softmax_cross_entropy":
            z = logits - logits.max(1, keepdims=True)
            return np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y])
        p = out  # the model's output is the softmax for the other losses
        if loss == "mse":
            return np.mean((p - one_hot) ** 2)
        return np.mean(-np.log(p[np.arange(len(y)), y]))
    error = out - y
    return {
        "binary_crossentropy": lambda: np.mean(np.logaddexp(0, out) - y * out),
        "mse": lambda: np.mean(error**2),
        "mae": lambda: np.mean(np.abs(error)),
        "huber": lambda: np.mean(np.where(np.abs(error) <= 1, 0.5 * error**2, np.abs(error) - 0.5)),
        "asymmetric": lambda: np.mean(np.where(out > y, cost * (out - y), profit * (y - out))),
    }[loss]()


DATA = {"binary": DOT, "multiclass": blobs(), "regression": sales()}


@pytest.mark.parametrize("task, loss", sorted(HEADS))
def test_every_loss_of_every_task_is_measured_as_by_hand_without_the_penalty(task, loss):
    # A negligible learning rate leaves the weights where the seed put them, so numpy can recompute the loss.
    data = DATA[task]
    params = {"loss": loss, "regularizer": "l2", "regularization_weight": 0.1, "cost": 2.0, "profit": 5.0}
    _, records, model = run(data, seed=4, epochs=1, learning_rate=1e-12, hidden=[6], **params)
    measured = records[0].metrics
    assert set(measured) == set(epoch_metrics(task))
    for prefix, x, y in (("", data.x_train, data.y_train), ("val_", data.x_val, data.y_val)):
        out = np.asarray(model(x, training=False))
        assert measured[prefix + "loss"] == pytest.approx(_by_hand(task, loss, out, y, 2.0, 5.0), rel=1e-4)
        if task == "regression":
            assert measured[prefix + "mse"] == pytest.approx(np.mean((out - y) ** 2), rel=1e-5)
            assert measured[prefix + "mae"] == pytest.approx(np.mean(np.abs(out - y)), rel=1e-5)
        if task == "multiclass":
            p = out if HEADS[task, loss].activation == "softmax" else np.asarray(tf.nn.softmax(out))
            p_label = np.clip(p[np.arange(len(y)), y], 1e-7, 1)  # ce clips, whatever the loss does
            assert measured[prefix + "ce"] == pytest.approx(-np.mean(np.log(p_label)), rel=1e-4)
            assert measured[prefix + "accuracy"] == pytest.approx(np.mean(p.argmax(1) == y), abs=1e-6)
    assert measured["reg_loss"] > 0


def test_the_heads_table_and_the_vocabulary_agree_on_which_losses_fit_which_task():
    assert set(HEADS) == {(task, loss) for task, losses in LOSSES_BY_TASK.items() for loss in losses}


def test_softmax_cross_entropy_on_logits_equals_categorical_crossentropy_of_the_softmax():
    data = blobs()
    fused = run(data, epochs=4, loss="softmax_cross_entropy")
    separate = run(data, epochs=4, loss="categorical_crossentropy")
    assert curve(fused[1]) == pytest.approx(curve(separate[1]), rel=1e-4)
    assert fused[2].layers[-1].activation.__name__ == "linear"  # logits out: the loss applies the softmax itself
    assert separate[2].layers[-1].activation.__name__ == "softmax"
    assert curve(fused[1], "val_accuracy")[-1] > 0.6  # and it learns


@pytest.mark.parametrize("cost, profit, sign", [(1.0, 99.0, 1), (99.0, 1.0, -1)])
def test_the_asymmetric_loss_leans_towards_the_cheaper_mistake(cost, profit, sign):
    data = sales()
    common = {"hidden": [], "optimizer": "adam", "learning_rate": 0.05, "epochs": 300}
    _, _, fitted = run(data, loss="mse", **common)
    _, _, leaning = run(data, loss="asymmetric", cost=cost, profit=profit, **common)
    bias = float(np.mean(np.asarray(leaning(data.x_train)) - data.y_train))
    mse_bias = float(np.mean(np.asarray(fitted(data.x_train)) - data.y_train))
    assert sign * bias > 0.02  # profit > cost: predict more than sells; cost > profit: less
    assert abs(mse_bias) < 0.01


def test_test_metrics_are_measured_once_after_training_for_each_task():
    for data, names in ((blobs(with_test=True), {"test_loss", "test_ce", "test_accuracy"}),
                        (sales(with_test=True), {"test_loss", "test_mse", "test_mae"})):
        outcome, records, _ = run(data, epochs=3)
        assert set(outcome.test_metrics) == names
        for name, value in outcome.test_metrics.items():  # the test set is the validation set here
            assert value == pytest.approx(records[-1].metrics["val_" + name.removeprefix("test_")], rel=1e-5)


# ---- early stopping and standardization ---------------------------------------------------------------------------------


def test_early_stopping_stops_on_the_objective_and_restores_the_best_epoch():
    data = dataset("binary", DOT.x_train, DOT.y_train, DOT.x_val, DOT.y_val, DOT.x_val, DOT.y_val)  # test = val
    outcome, records, _ = run(data, epochs=100, learning_rate=0.5, early_stopping=3,
                              objective=(("val_accuracy", "maximize"), ("params_total", "minimize")))
    accuracy = curve(records, "val_accuracy")
    best = accuracy.index(max(accuracy))  # the first of ties, as the coordinator's best_epoch
    assert len(records) < 100 and records[-1].epoch == best + 3
    assert outcome.reason.startswith(f"early stopping after epoch {best + 3}: val_accuracy")
    assert outcome.test_metrics["test_accuracy"] == pytest.approx(accuracy[best])  # the best epoch's weights
    assert outcome.test_metrics["test_loss"] == pytest.approx(records[best].metrics["val_loss"], rel=1e-5)

    full, records, _ = run(data, epochs=12, learning_rate=0.5)  # no early stopping: every epoch, final weights
    assert len(records) == 12 and full.reason is None
    assert full.test_metrics["test_loss"] == pytest.approx(records[-1].metrics["val_loss"], rel=1e-5)


def test_standardize_makes_training_blind_to_the_inputs_scale_and_offset():
    def shifted(x):
        return (x * 50 + 100).astype(np.float32)

    far = dataset("binary", shifted(DOT.x_train), DOT.y_train, shifted(DOT.x_val), DOT.y_val)
    near = dataset("binary", DOT.x_train, DOT.y_train, DOT.x_val, DOT.y_val)
    assert curve(run(far, standardize=True)[1]) == pytest.approx(curve(run(near, standardize=True)[1]), rel=1e-3)
    assert curve(run(far, standardize=False)[1]) != pytest.approx(curve(run(near, standardize=False)[1]), rel=1e-2)


# ---- model kinds ------------------------------------------------------------------------------------------------------


def test_depth_and_width_build_the_hidden_layers():
    spec = parse_spec({"name": "t", "dataset": {"name": "dot"}, "params": {"depth": 2, "width": 5}})
    params = trial_params(spec, {})
    assert params["hidden"] == [5, 5]
    outcome, _, _ = run(**{k: params[k] for k in ("depth", "width", "hidden")}, epochs=1)
    assert outcome.complexity["params_total"] == (2 * 5 + 5) + (5 * 5 + 5) + (5 + 1)


CNN = {
    "model_kind": "cnn", "hidden": [5], "image_shape": [8, 8, 1],
    "conv": [{"filters": 4, "kernel": 3, "padding": "same", "batch_norm": True, "pool": "max"},
             {"filters": 6, "kernel": 3, "stride": 2, "padding": "valid"}],
}


def test_without_bias_no_dense_or_conv_layer_has_one_and_the_count_says_so():
    mlp = build_model({"hidden": [11], "use_bias": False}, 2)
    assert not any(layer.use_bias for layer in mlp.layers if isinstance(layer, L.Dense))
    assert count(mlp)["params_total"] == 2 * 11 + 11 * 1  # the course's linear models: weights only
    cnn = count(build_model({**CNN, "use_bias": False}, 64, task="multiclass", units=3))
    assert cnn["params_total"] == (40 - 4) + 16 + (222 - 6) + (35 - 5) + (18 - 3)  # test_cnn_complexity_by_hand's
    outcome, records, _ = run(use_bias=False, epochs=3)
    assert outcome.complexity["params_total"] == 33 and curve(records)[-1] < curve(records)[0]


def test_cnn_complexity_by_hand():
    model = build_model(CNN, 64, task="multiclass", units=3)  # 64 flat values, seen as 8x8x1 images
    result = count(model)
    # conv1 8x8x4: 3*3*1*4 + 4 params, 36 * 64 MACs; BN: 4 per channel, 2 trainable; max pool -> 4x4x4;
    # conv2 stride 2 valid -> 1x1x6: 3*3*4*6 + 6 params, 216 MACs; flatten 6; dense 6*5 + 5; output 5*3 + 3.
    assert result["params_total"] == 40 + 16 + 222 + 35 + 18
    assert (result["params_trainable"], result["params_non_trainable"]) == (40 + 8 + 222 + 35 + 18, 8)
    assert result["macs"] == 36 * 64 + 216 + 30 + 15
    assert result["unknown_layers"] == []
    assert [row["class"] for row in result["layers"]] == [
        "Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D", "Conv2D", "ReLU", "Flatten", "Dense", "ReLU", "Dense"]


def test_a_cnn_learns_images_and_augmentation_changes_training_only():
    data = images()
    cnn = {**CNN, "image_shape": None, "conv": [{"filters": 4, "pool": "max"}], "hidden": [],
           "loss": "softmax_cross_entropy", "optimizer": "adam"}
    _, learned, _ = run(data, epochs=8, learning_rate=0.02, **cnn)
    assert curve(learned, "val_accuracy")[-1] > 0.9

    augment = {"flip": "horizontal", "crop": 1}
    frozen = {"epochs": 2, "learning_rate": 1e-12, **cnn}  # the weights stay put: only the measurement is compared
    assert run(data, augment=augment, **frozen)[1][0].metrics == run(data, **frozen)[1][0].metrics
    moving = {"epochs": 2, "learning_rate": 0.02, **cnn}
    assert curve(run(data, augment=augment, **moving)[1]) != curve(run(data, **moving)[1])


def test_augmentation_flips_and_crops_each_image_by_its_own_seed():
    image = tf.reshape(tf.range(16, dtype=tf.float32), (4, 4, 1))
    flip = augmenter({"model_kind": "cnn", "augment": {"flip": "horizontal"}})
    flipped = [bool(np.array_equal(flip(image, tf.constant([0, i])), image[:, ::-1])) for i in range(20)]
    assert 0 < sum(flipped) < 20  # some images mirrored, some not
    assert all(np.array_equal(flip(image, tf.constant([0, i])), flip(image, tf.constant([0, i]))) for i in range(5))
    crop = augmenter({"model_kind": "cnn", "augment": {"crop": 1}})
    crops = [np.asarray(crop(image, tf.constant([1, i])))[..., 0] for i in range(20)]
    padded = np.pad(np.asarray(image)[..., 0], 1)
    windows = [padded[r : r + 4, c : c + 4] for r in range(3) for c in range(3)]
    assert all(any(np.array_equal(c, w) for w in windows) for c in crops)  # a 4x4 window of the padded image
    assert len({c.tobytes() for c in crops}) > 2
    assert augmenter({"model_kind": "cnn", "augment": {"flip": "none", "crop": 0}}) is None


def test_a_builder_makes_the_model_from_the_kit_and_is_trained_like_any_other():
    params = {"regularizer": "l2", "regularization_weight": 0.01, "epochs": 3}
    outcome, records, _ = run(model_kind="builder", builder="tiny_builder:mlp_again", **params)
    mlp_outcome, mlp_records, _ = run(**params)
    assert [r.metrics for r in records] == [r.metrics for r in mlp_records]  # same pieces, same seed: same run
    assert dict(outcome.complexity) == dict(mlp_outcome.complexity)
    assert records[0].metrics["reg_loss"] > 0  # the kit's dense layers carry fitgap's regularizer

    ignored, records, _ = run(model_kind="builder", builder="tiny_builder:unregularized", **params)
    assert records[0].metrics["reg_loss"] == 0 and ignored.complexity["params_total"] == 2 * 4 + 4 + 4 + 1


def test_a_builder_whose_output_does_not_fit_the_task_fails_the_trial_in_one_line():
    task = TrialTask("t", 0, {"hidden": [4], "epochs": 1, "batch_size": 32, "model_kind": "builder",
                              "builder": "tiny_builder:wrong_outputs"}, seed=0, dataset={}, data_dir=TESTS)
    outcome = trainer.train(task, DOT, lambda record: False)
    assert outcome.state == "FAIL"
    assert "needs (1,): end it with kit.output()" in outcome.reason and "\n" not in outcome.reason


# ---- complexity of other layers ----------------------------------------------------------------------------------------


def test_depthwise_strided_valid_and_unknown_weightless_layers_by_hand():
    class Square(L.Layer):  # no weights, but not free: it must not count as zero
        def call(self, x):
            return x * x

    model = keras.Sequential([
        keras.Input((9, 9, 2)),
        L.DepthwiseConv2D(3, strides=2, depth_multiplier=3, padding="valid"),  # -> 4x4x6: 3*3*2*3 + 6 params
        L.BatchNormalization(),  # 6 channels: 24 params, 12 trainable
        L.AveragePooling2D(2),  # -> 2x2x6
        Square(),
        L.Conv2D(4, 2, padding="same", groups=2),  # -> 2x2x4: kernel 2*2*(6/2)*4 = 48, +4 biases
        L.GlobalAveragePooling2D(),
    ])
    result = count(model)
    assert result["params_total"] == 60 + 24 + 52
    assert (result["params_trainable"], result["params_non_trainable"]) == (60 + 12 + 52, 12)
    assert result["macs"] == 54 * 16 + 48 * 4
    assert result["unknown_layers"] == ["Square"]
    assert [row["macs"] for row in result["layers"]] == [54 * 16, 0, 0, "unknown", 48 * 4, 0]


def test_the_complexity_table_is_the_trials_artifact():
    outcome, _, _ = run(epochs=1, hidden=[3], dropout=0.5)
    lines = outcome.artifacts["complexity.csv"].decode().splitlines()
    assert lines[0] == "layer,class,output_shape,params,params_trainable,params_non_trainable,macs"
    assert [line.split(",")[1] for line in lines[1:]] == ["Dense", "ReLU", "Dropout", "Dense"]
    assert lines[1].endswith(",9,9,0,6") and lines[3].endswith(",0,0,0,0")


def test_the_task_metrics_are_what_each_task_reports():
    assert TASK_METRICS == {"binary": ("bce", "accuracy"), "multiclass": ("ce", "accuracy"),
                            "regression": ("mse", "mae")}
    assert "accuracy" not in epoch_metrics("regression") and "accuracy_gap" in epoch_metrics("multiclass")


def test_a_trial_sampled_from_a_spec_trains():
    """The whole space path: a spec's sampled params, conditional ones absent, train as they are."""
    import optuna

    spec = parse_spec({
        "name": "t", "dataset": {"name": "sales"}, "epochs": 2, "model": {"hidden": [4]},
        "objective": [{"metric": "val_mae"}],
        "search": {"loss": {"type": "categorical", "choices": ["huber", "asymmetric", "binary_crossentropy"]},
                   "profit": {"type": "float", "low": 2, "high": 9, "when": {"loss": ["asymmetric"]}},
                   "optimizer": {"type": "categorical", "choices": ["rmsprop", "sgdm"]},
                   "rho": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": ["rmsprop"]}}},
    })
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(3):
        params = trial_params(spec, suggest(study.ask(), spec))
        assert ("rho" in params) == (params["optimizer"] == "rmsprop")
        assert ("momentum" in params) == (params["optimizer"] == "sgdm")
        outcome, records, _ = run(sales(), **params)
        assert len(records) == 2 and math.isfinite(records[-1].metrics["val_mae"])
