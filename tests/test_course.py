"""The course's results, reproduced by the shipped course specs on real TensorFlow: the weights themselves."""

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from fitgap.data.datasets import load_dataset  # noqa: E402
from fitgap.studies.choice import choose_executor  # noqa: E402
from fitgap.studies.trials import trial_task  # noqa: E402
from fitgap.sweeps.reading import load_spec  # noqa: E402
from fitgap.sweeps.space import trial_params  # noqa: E402
from fitgap.training.fused import train_batch  # noqa: E402

pytestmark = pytest.mark.tensorflow

COURSE = Path(__file__).parent.parent / "sweeps" / "specs" / "course"


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's own, loading a model
def test_the_sales_weights_lean_as_the_courses_do(tmp_path):
    """MSE fits y = x1 + x2 (both weights ~1); cost 1 / profit 99 predicts more (both > 1), cost 99 / profit 1 less
    (both < 1): the weights of the bias-free model each trial of `course/sales.yaml` ends with, as the study's
    coordinator would train them (its enqueued params, seeds and executor: fused, which `tests/test_parity.py` holds
    to the keras executor's training)."""
    spec = load_spec(COURSE / "sales.yaml")
    data = load_dataset(spec.dataset)
    params = [trial_params(spec, entry) for entry in spec.enqueue]
    assert choose_executor(params[0])[0] == "fused"
    tasks = [trial_task(spec, number, p, 0, "fused", save_model=True, prune=False) for number, p in enumerate(params)]
    outcomes = train_batch(tasks, data, lambda record: False)
    weights = {}
    for task, outcome in zip(tasks, outcomes):
        assert (outcome.state, outcome.executor) == ("COMPLETE", "fused"), outcome.traceback
        assert outcome.complexity["params_total"] == 2  # w1, w2: no bias
        path = tmp_path / f"{task.number}.keras"
        path.write_bytes(outcome.artifacts["model.keras"])
        (kernel,) = keras.models.load_model(path).get_weights()
        weights[task.params.get("cost"), task.params.get("profit")] = kernel.ravel()
    assert np.abs(weights[None, None] - 1).max() < 0.1, weights
    assert (weights[1.0, 99.0] > 1).all(), weights
    assert (weights[99.0, 1.0] < 1).all(), weights
