"""The compiled and fused executors train the trial the keras executor trains: per-epoch loss and val_loss within
`RTOL` of the reference, from the same initial weights and batch order, one factor at a time against a base case.

Each fused trial is one member of a batch of different trials (every variant of its dataset and optimizer at once).
Every choice `auto` may make for an mlp is checked: compiled or fused, with XLA or without (`training.xla`). Every
variant runs fused under XLA (XLA's kernels for every activation, loss and optimizer); the other runners take one
variant of each kind of factor (`ONE_OF_EACH`): a compile per trial makes compiled-under-XLA the suite's slowest part.
Measured on CPU float32 at lr <= 0.1 over 20 epochs: at most ~3e-6 apart (the order of float32 sums in a batched
matmul), so 1e-4 leaves room without hiding a wrong formula, which shows as 1e-3 or more within an epoch or two.
"""

import contextlib
import io
import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from dataclasses import replace  # noqa: E402

import fitgap.training.compiled as compiled_module  # noqa: E402
from fitgap.training.compiled import train_batch as train_compiled  # noqa: E402
from fitgap.data.datasets import load_dataset  # noqa: E402
from fitgap.training.inputs import model_inputs  # noqa: E402
import fitgap.training.fused as fused_module  # noqa: E402
from fitgap.training.fused import train_batch as train_fused  # noqa: E402
from fitgap.studies.choice import (  # noqa: E402
    MAX_K, choose_executor, choose_k, fuse_group_key, take_batch,
)
from fitgap.training.reference import train_batch as train  # noqa: E402
from fitgap.studies.messages import TrialTask  # noqa: E402

from tiny import blobs, dataset, images, sales  # noqa: E402

pytestmark = pytest.mark.tensorflow

RTOL = 1e-4
EPOCHS = 12
DOT = load_dataset({"name": "dot", "validation_fraction": 0.2})
DATA = {"dot": DOT, "blobs": blobs(with_test=True), "sales": sales(with_test=True)}
BASE = {
    "dot": {"hidden": [11], "epochs": EPOCHS, "batch_size": 32, "learning_rate": 0.05, "standardize": True},
    "blobs": {"hidden": [6], "epochs": EPOCHS, "batch_size": 16, "learning_rate": 0.05,
              "loss": "softmax_cross_entropy"},
    "sales": {"hidden": [4, 3], "epochs": EPOCHS, "batch_size": 8, "learning_rate": 0.01, "loss": "mse"},
}
OPTIMIZERS = {"sgdm": {"momentum": 0.8}, "adagrad": {}, "rmsprop": {"rho": 0.8}, "adam": {"beta_1": 0.8}}

# name -> (dataset, the factor that differs from the base case)
VARIANTS = {
    "base": ("dot", {}),
    **{f"activation={a}": ("dot", {"activation": a}) for a in
       ("sigmoid", "tanh", "elu", "selu", "gelu", "swish", "softplus", "linear")},
    "activation=leaky_relu": ("dot", {"activation": "leaky_relu", "leaky_alpha": 0.1}),
    **{f"loss={loss}": ("dot", {"loss": loss}) for loss in ("mse", "mae", "huber")},
    "regularizer=l1": ("dot", {"regularizer": "l1", "regularization_weight": 0.01}),
    "regularizer=l2": ("dot", {"regularizer": "l2", "regularization_weight": 0.01}),
    "regularizer=l1_l2": ("dot", {"regularizer": "l1_l2", "regularization_weight": 0.01, "l1_ratio": 0.3}),
    "decay per epoch": ("dot", {"learning_rate": 0.1, "decay_rate": 0.5, "decay_steps": 4}),
    "decay per step, staircase": ("dot", {"learning_rate": 0.1, "decay_rate": 0.5, "decay_steps": 20,
                                          "decay_unit": "step", "staircase": True}),
    "narrower and glorot": ("dot", {"hidden": [5], "initializer": "glorot_uniform"}),
    **{f"optimizer={name}": ("dot", {"optimizer": name, "learning_rate": 0.02, **own})
       for name, own in OPTIMIZERS.items()},
    # a second member per optimizer, so that each optimizer's fused batch holds different trials
    **{f"optimizer={name}, tanh": ("dot", {"optimizer": name, "learning_rate": 0.01, "activation": "tanh", **own})
       for name, own in OPTIMIZERS.items()},
    # the course's forms, each in a fused batch with Keras's
    "momentum_form=course": ("dot", {"optimizer": "sgdm", "learning_rate": 0.1, "momentum": 0.8,
                                     "momentum_form": "course"}),
    "initial_accumulator=0": ("dot", {"optimizer": "adagrad", "learning_rate": 0.02, "initial_accumulator": 0.0}),
    "use_bias=false": ("dot", {"use_bias": False}),
    "shuffle=false": ("dot", {"shuffle": False}),
    **{f"multiclass loss={loss}": ("blobs", {"loss": loss}) for loss in
       ("softmax_cross_entropy", "sparse_categorical_crossentropy", "categorical_crossentropy", "mse")},
    **{f"regression loss={loss}": ("sales", {"loss": loss}) for loss in ("mse", "mae", "huber")},
    "regression loss=asymmetric": ("sales", {"loss": "asymmetric", "cost": 2.0, "profit": 5.0}),
}


def executor_for(params, requested="auto") -> str:
    return choose_executor(params, requested)[0]


def task_of(name: str) -> TrialTask:
    """The variant's trial: numbered (and seeded) by its place in VARIANTS."""
    number = list(VARIANTS).index(name)
    data_name, factor = VARIANTS[name]
    return TrialTask("parity", number, {**BASE[data_name], **factor}, seed=100 + number, dataset={})


def collect(trainer, tasks, data, stop=lambda record: False):
    """Run `trainer` on tasks (one by one; fused: in the batches the coordinator would send, `choice.take_batch`,
    a trial that cannot fuse by its own executor); (outcomes, records by trial number)."""
    records: dict[int, list] = {task.number: [] for task in tasks}

    def on_epoch(record):
        records[record.trial].append(record)
        return stop(record)

    if trainer is not train_fused:
        return trainer(tasks, data, on_epoch), records
    trainers = {"fused": train_fused, "compiled": train_compiled, "keras": train}
    waiting = [(replace(task, executor=executor_for(task.params, "fused")), 0) for task in tasks]
    outcomes = {}
    while waiting:
        batch = [task for task, _ in take_batch(waiting, MAX_K)]
        outcomes.update((o.number, o) for o in trainers[batch[0].executor](batch, data, on_epoch))
    return [outcomes[task.number] for task in tasks], records


@contextlib.contextmanager
def xla(mode: str):
    """Graphs built under FITGAP_XLA=mode (the executors' caches hold graphs of the mode they were built in)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FITGAP_XLA", mode)
        compiled_module._LOOPS.clear()
        fused_module._GRAPHS.clear()
        yield
    compiled_module._LOOPS.clear()
    fused_module._GRAPHS.clear()


RUNNERS = [f"{executor}, xla {mode}" for executor in ("compiled", "fused") for mode in ("on", "off")]
# One variant of each kind of factor: enough for the runners whose kernels are checked by others (without XLA,
# TensorFlow's own kernels, the keras executor's; compiled under XLA, XLA's kernels, which fused under XLA checks)
ONE_OF_EACH = ["base", "activation=leaky_relu", "loss=huber", "regularizer=l1_l2", "decay per step, staircase",
               "narrower and glorot", *(f"optimizer={name}" for name in OPTIMIZERS),
               "momentum_form=course", "initial_accumulator=0", "use_bias=false",
               "multiclass loss=softmax_cross_entropy", "regression loss=asymmetric"]


def variants(runner: str) -> list[str]:
    return list(VARIANTS) if runner in ("keras", "fused, xla on") else ONE_OF_EACH


@pytest.fixture(scope="module")
def runs():
    """Every variant under keras and under every choice auto may make for an mlp (compiled or fused, with XLA or
    without): {runner: (outcomes by name, records by name)}."""
    names = list(VARIANTS)
    tasks = {name: task_of(name) for name in names}
    trainers = {"keras": train, "compiled": train_compiled, "fused": train_fused}
    results = {runner: ({}, {}) for runner in ("keras", *RUNNERS)}
    for runner in results:
        executor, _, mode = runner.partition(", xla ")
        with xla(mode or "off"):
            for data_name, data in DATA.items():
                mine = [name for name in variants(runner) if VARIANTS[name][0] == data_name]
                batch = [tasks[name] for name in mine]
                outcomes, records = collect(trainers[executor], batch, data)  # fused: a batch per optimizer
                for name, task, outcome in zip(mine, batch, outcomes):
                    results[runner][0][name] = outcome
                    results[runner][1][name] = records[task.number]
    return results


def curves(records, metrics=("loss", "val_loss")) -> np.ndarray:
    return np.array([[r.metrics[m] for m in metrics] for r in records])


@pytest.mark.parametrize("runner, name", [(runner, name) for runner in RUNNERS for name in variants(runner)])
def test_each_factor_trains_as_the_keras_executor_does(runs, runner, name):
    reference, outcome = runs["keras"][0][name], runs[runner][0][name]
    executor, mode = runner.split(", xla ")
    assert reference.state == "COMPLETE", reference.reason
    assert (outcome.state, outcome.reason, outcome.executor) == ("COMPLETE", None, executor), outcome.traceback
    assert outcome.executor_reason == ("XLA: FITGAP_XLA=on" if mode == "on" else "no XLA: FITGAP_XLA=off")
    assert dict(outcome.complexity) == dict(reference.complexity)
    assert outcome.artifacts["complexity.csv"] == reference.artifacts["complexity.csv"]
    assert outcome.artifacts.keys() == reference.artifacts.keys()
    if "boundary.npz" in reference.artifacts:  # the decision boundary of the final weights
        probabilities = [np.load(io.BytesIO(o.artifacts["boundary.npz"]))["probability"] for o in (outcome, reference)]
        np.testing.assert_allclose(*probabilities, atol=1e-4)
    expected, got = runs["keras"][1][name], runs[runner][1][name]
    assert [r.epoch for r in got] == list(range(EPOCHS))
    assert [set(r.metrics) for r in got] == [set(r.metrics) for r in expected]
    np.testing.assert_allclose(curves(got), curves(expected), rtol=RTOL)
    np.testing.assert_allclose(curves(got, ("reg_loss",)), curves(expected, ("reg_loss",)), rtol=RTOL, atol=1e-7)
    assert [r.metrics["lr"] for r in got] == [r.metrics["lr"] for r in expected]  # the same table, the same floats
    assert outcome.test_metrics.keys() == reference.test_metrics.keys()
    for key, value in reference.test_metrics.items():
        assert outcome.test_metrics[key] == pytest.approx(value, rel=RTOL, abs=1e-6)
    assert curves(expected)[-1, 0] < curves(expected)[0, 0]  # a case that learns, so that parity means something


@pytest.mark.parametrize("executor", ["compiled", "fused"])
def test_the_same_seed_gives_the_same_results_twice(runs, executor):
    names = ["base", "activation=leaky_relu", "loss=huber", "regularizer=l1_l2"]
    if executor == "fused":  # the same batches as the first run (a batch's composition shapes its graph)
        names = [name for name in VARIANTS if VARIANTS[name][0] == "dot"]
    tasks = [task_of(name) for name in names]
    trainer = train_compiled if executor == "compiled" else train_fused
    with xla("on"):
        _, again = collect(trainer, tasks, DOT)
    for name, task in zip(names, tasks):
        first = [r.metrics for r in runs[f"{executor}, xla on"][1][name]]
        assert [r.metrics for r in again[task.number]] == first


def test_a_stopped_member_is_pruned_alone_and_the_others_train_as_alone():
    tasks = [task_of(name) for name in ["base", "activation=tanh", "loss=mse", "regularizer=l1"]]
    pruned = tasks[1].number
    outcomes, records = collect(train_fused, tasks, DOT, stop=lambda r: r.trial == pruned and r.epoch == 4)
    assert (outcomes[1].state, outcomes[1].reason, outcomes[1].executor) == ("PRUNED", "stopped at epoch 4", "fused")
    assert [r.epoch for r in records[pruned]] == [0, 1, 2, 3, 4]
    for task, outcome in zip(tasks, outcomes):
        if task.number == pruned:
            continue
        assert (outcome.state, outcome.reason) == ("COMPLETE", None)
        _, alone = collect(train_fused, [task], DOT)
        np.testing.assert_allclose(curves(records[task.number]), curves(alone[task.number]), rtol=1e-6)
        _, reference = collect(train, [task], DOT)
        np.testing.assert_allclose(curves(records[task.number]), curves(reference[task.number]), rtol=RTOL)


def test_failures_early_stopping_and_test_metrics_match_the_reference_inside_a_batch():
    data = dataset("binary", DOT.x_train, DOT.y_train, DOT.x_val, DOT.y_val, DOT.x_val, DOT.y_val)  # test = val
    common = {**BASE["dot"], "epochs": 40}
    params = [{"learning_rate": 0.1, "early_stopping": 3},  # stops early, its best epoch's weights are tested
              {"loss": "mse", "learning_rate": 1e6},  # diverges: FAIL on its non-finite loss
              {"activation": "tanh"},  # on_epoch raises for it: FAIL with the traceback, alone
              {"dropout": 0.2}]  # cannot fuse: trained alone by the compiled executor
    tasks = [TrialTask("parity", i, {**common, **p}, seed=7 + i, dataset={}, objective=(("val_accuracy", "maximize"),))
             for i, p in enumerate(params)]

    def stop(record):
        if record.trial == 2 and record.epoch == 5:
            raise RuntimeError("tracking is down\nsecond line")
        return False

    fused, fused_records = collect(train_fused, tasks, data, stop)
    keras_runs = [collect(train, [task], data, stop) for task in tasks]
    for task, outcome, (reference, reference_records) in zip(tasks, fused, keras_runs):
        (reference,) = reference
        assert (outcome.state, outcome.reason) == (reference.state, reference.reason)
        assert len(fused_records[task.number]) == len(reference_records[task.number])
        assert outcome.test_metrics.keys() == reference.test_metrics.keys()
        for key, value in reference.test_metrics.items():
            assert outcome.test_metrics[key] == pytest.approx(value, rel=RTOL, abs=1e-6)
    assert [o.executor for o in fused] == ["fused", "fused", "fused", "compiled"]
    assert fused[0].reason.startswith("early stopping after epoch") and fused[0].test_metrics
    assert fused[1].reason.startswith("non-finite loss")
    assert fused[2].reason == "RuntimeError: tracking is down" and "Traceback" in fused[2].traceback
    np.testing.assert_allclose(curves(fused_records[3]), curves(keras_runs[3][1][3]), rtol=RTOL)


CNN = {**BASE["blobs"], "model_kind": "cnn", "hidden": [5], "regularizer": "l2", "regularization_weight": 0.001,
       "conv": [{"filters": 4, "kernel": 3, "padding": "same", "pool": "max"}, {"filters": 8, "kernel": 3}]}


@pytest.mark.parametrize("case", ["dropout", "cnn with batch norm", "cnn, adam and l2"])
def test_the_compiled_executor_also_trains_what_cannot_fuse_as_keras_does(case):
    """Whatever the XLA setting: these graphs never run under XLA (`xla.EpochFunction`'s blocker)."""
    data = DATA["blobs"] if case == "dropout" else images()
    # Not Adam with batch norm: the conv bias before it gets a gradient of pure rounding noise, which Adam scales
    # into full steps, so any other summation order (another kernel choice) drifts ~1e-3 apart.
    params = {
        "dropout": {**BASE["blobs"], "dropout": 0.3},
        "cnn with batch norm": {**CNN, "optimizer": "sgdm",
                                "conv": [{"filters": 4, "kernel": 3, "batch_norm": True, "pool": "max"}]},
        "cnn, adam and l2": {**CNN, "optimizer": "adam", "learning_rate": 0.01},
    }[case]
    assert executor_for(params) == "compiled"
    task = TrialTask("parity", 0, params, seed=3, dataset={})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FITGAP_XLA", "on")
        (outcome,), compiled = collect(train_compiled, [task], data)
    (reference,), expected = collect(train, [task], data)
    assert (outcome.state, outcome.executor) == ("COMPLETE", "compiled"), outcome.traceback
    assert outcome.executor_reason.startswith("no XLA: ") and "layers" in outcome.executor_reason
    assert dict(outcome.complexity) == dict(reference.complexity)
    np.testing.assert_allclose(curves(compiled[0]), curves(expected[0]), rtol=RTOL)


def test_a_smaller_batch_reuses_a_wider_graph_and_trains_the_same():
    """Later batches of a study (fewer members, narrower layers, fewer kinds) run in the graph of an earlier one."""
    wide = [task_of(name) for name in ["base", "activation=tanh", "loss=mse"]]
    wide[0] = TrialTask("parity", 0, {**wide[0].params, "hidden": [16]}, seed=1, dataset={})
    collect(train_fused, wide, DOT)
    graphs = list(fused_module._GRAPHS)
    small = task_of("narrower and glorot")
    _, fused = collect(train_fused, [small], DOT)
    assert list(fused_module._GRAPHS) == graphs  # no new graph
    _, reference = collect(train, [small], DOT)
    np.testing.assert_allclose(curves(fused[small.number]), curves(reference[small.number]), rtol=RTOL)


def test_a_fused_batch_is_one_fuse_group_or_refused():
    """The coordinator sends one fuse group at a time (`choice.take_batch`): anything else is refused untrained."""
    base, adam = task_of("base"), task_of("optimizer=adam")
    dropout = TrialTask("parity", 99, {**BASE["dot"], "dropout": 0.2}, seed=0, dataset={})
    for batch in ([base, adam], [dropout], [base, dropout], []):
        with pytest.raises(ValueError, match="one fuse group"):
            train_fused(batch, DOT, lambda record: False)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's own, loading a model
@pytest.mark.parametrize("executor", ["compiled", "fused"])
def test_the_saved_model_holds_the_trials_final_weights(executor, tmp_path):
    """model.keras (`task.save_model`) comes from the trial's own Keras model, given its final (unpadded) weights."""
    narrow, wide = (TrialTask("parity", n, {**BASE["dot"], "hidden": [h]}, seed=n, dataset={}, save_model=True)
                    for n, h in ((0, 3), (1, 9)))
    trainer = train_fused if executor == "fused" else train_compiled
    outcomes, records = collect(trainer, [narrow, wide], DOT)
    for task, outcome in zip((narrow, wide), outcomes):
        path = tmp_path / f"{task.number}.keras"
        path.write_bytes(outcome.artifacts["model.keras"])
        model = keras.models.load_model(path)
        _, x_val, _ = model_inputs(task.params, DOT)  # standardized, as the trial saw it
        logits = np.asarray(model(x_val), dtype=np.float64)
        bce = np.mean(np.logaddexp(0, logits) - DOT.y_val * logits)
        assert bce == pytest.approx(records[task.number][-1].metrics["val_loss"], rel=1e-5)


@pytest.mark.parametrize("data_name, params", [
    ("dot", {"hidden": [11]}),
    ("dot", {"hidden": [5], "initializer": "glorot_uniform", "activation": "leaky_relu", "use_bias": False}),
    ("dot", {"hidden": [3, 7], "regularizer": "l2", "regularization_weight": 0.01, "initializer": "lecun_normal"}),
    ("blobs", {"hidden": [6], "loss": "sparse_categorical_crossentropy", "activation": "relu"}),
    ("images", {"hidden": [4], "loss": "softmax_cross_entropy", "initializer": "truncated_normal"}),
])
def test_a_fused_members_unbuilt_model_starts_exactly_as_its_built_model(data_name, params):
    """`start_trial(built=False)` (a fused member) gives the initial weights, complexity and complexity.csv of the
    Keras model `start_trial` builds, bit for bit, whatever was built before it in the process."""
    from fitgap.training.core import start_trial

    data = images() if data_name == "images" else DATA[data_name]
    for seed in (3, 4):
        task = TrialTask("parity", seed, {"epochs": 1, "batch_size": 8, **params}, seed=seed, dataset={})
        built = start_trial(task, data)
        member = start_trial(task, data, built=False)
        dense = [layer for layer in built.model.layers if isinstance(layer, keras.layers.Dense)]
        assert len(member.initial) == len(dense)
        for (kernel, bias), layer in zip(member.initial, dense):
            np.testing.assert_array_equal(kernel, layer.kernel.numpy())
            assert (bias is None) == (not layer.use_bias)
            if bias is not None:
                np.testing.assert_array_equal(bias, layer.bias.numpy())
        assert member.model is None
        assert (member.complexity, member.artifacts) == (built.complexity, built.artifacts)


def test_a_fused_batch_whose_boundaries_fail_completes_every_member_with_the_reason_in_its_artifacts(monkeypatch):
    def no_grid(params, data):
        raise MemoryError("no room for the grid")

    monkeypatch.setattr(fused_module, "boundary_inputs", no_grid)
    outcomes, _ = collect(train_fused, [task_of("base"), task_of("activation=tanh")], DOT)
    for outcome in outcomes:
        assert outcome.state == "COMPLETE" and "boundary.npz" not in outcome.artifacts
        assert "MemoryError: no room for the grid" in outcome.artifacts["boundary.npz.error.txt"].decode()


# ---- the executor choice the coordinator makes (no training) ---------------------------------------------------------


def test_auto_picks_fused_then_compiled_then_keras():
    mlp = {"hidden": [11]}
    assert executor_for(mlp) == "fused"
    assert executor_for({**mlp, "dropout": 0.2}) == "compiled"
    assert executor_for({"model_kind": "cnn", "conv": [{"filters": 4}], "hidden": []}) == "compiled"
    assert executor_for({"model_kind": "cnn", "augment": {"flip": "horizontal"}}) == "keras"
    assert executor_for({"model_kind": "builder", "builder": "m:f"}) == "keras"
    assert executor_for(mlp, requested="compiled") == "compiled"
    assert executor_for(mlp, requested="keras") == "keras"
    # auto fuses batches of two or more: one member alone trains as compiled does, a little slower
    assert choose_executor(mlp, fuse=1) == ("compiled", "auto: compiled, not fused (one trial per batch fits in "
                                                        "FITGAP_FUSE_MEMORY_MB)")
    assert choose_executor(mlp, requested="fused", fuse=1)[0] == "fused"
    assert choose_executor({**mlp, "dropout": 0.2})[1].endswith("(dropout: its masks come from Keras's per-layer "
                                                               "seed generators)")
    with pytest.raises(ValueError, match="`executor` must be one of"):
        executor_for(mlp, requested="fast")


def test_what_a_fused_batch_needs_equal_and_what_may_differ():
    base = {"hidden": [11], "epochs": 100, "batch_size": 32}
    key = fuse_group_key(base)
    for differs in ({"learning_rate": 0.3, "decay_rate": 0.5, "decay_steps": 7, "decay_unit": "step"},
                    {"activation": "tanh"}, {"loss": "mse"}, {"regularizer": "l1", "regularization_weight": 0.1},
                    {"hidden": [3]}, {"initializer": "glorot_uniform"}, {"early_stopping": 5}, {"use_bias": False},
                    {"shuffle": False}):
        assert fuse_group_key({**base, **differs}) == key, differs
    for optimizer, differs in (("sgdm", {"momentum_form": "course"}), ("adagrad", {"initial_accumulator": 0.0})):
        own = {**base, "optimizer": optimizer}
        assert fuse_group_key({**own, **differs}) == fuse_group_key(own), differs
    for must_match in ({"optimizer": "adam"}, {"batch_size": 16}, {"epochs": 50}, {"hidden": [11, 11]},
                       {"standardize": True}):
        assert fuse_group_key({**base, **must_match}) != key, must_match
    assert fuse_group_key({**base, "dropout": 0.1}) is None


def test_k_comes_from_memory_and_model_size_unless_given():
    dot = {"hidden": [11], "epochs": 100, "batch_size": 32}
    assert choose_k(dot, DOT) == MAX_K
    assert 1 <= choose_k({**dot, "hidden": [4096, 4096]}, DOT) < MAX_K
    assert choose_k(dot, DOT, fuse=5) == 5
    assert choose_k({**dot, "dropout": 0.5}, DOT) == 1
    assert math.isfinite(choose_k(dot, DATA["blobs"]))
