"""Coordinator side: `fitgap path` — a controlled regularization path from one trial of a study.

A sweep whose trials differ in every setting confounds regularization with everything else. A path fixes every
setting at one trial's (its searched values become `params`) and varies only the regularization: the unregularized
baseline once, then each regularizer at each weight of a log grid, `repeats` seeds each. It is an ordinary study
(`path_spec`): a hand-written spec of the same shape, dumped to YAML and launched, gives the same trials. Its points
are enqueued, one trial each, and its budget is their number: Optuna's grid sampler would cross `none` with every
weight (and it refuses the conditional `regularization_weight`); the spec's sampler, random, is never consulted, and
lets the coordinator ask every point at once (a model-based one would be asked in rounds). `l1_l2` trains at the
default `l1_ratio`. Pruning is off: a path measures every point to the end. The study is linked to the trial it
started from in all three stores (`link`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import optuna

from fitgap.errors import UsageError
from fitgap.studies.stores import Stores
from fitgap.studies.study import load_study
from fitgap.sweeps.space import from_optuna, trial_params
from fitgap.sweeps.spec import SweepSpec, changed_field, parse_spec
from fitgap.sweeps.vocabulary import HYPERPARAMETERS, REGULARIZERS, SPEC_LEVEL, excerpt
from fitgap.tracking.answer import REGULARIZATION  # what may vary in a controlled comparison: all a path varies
from fitgap.tracking.mlflow_sink import MlflowSink
from fitgap.tracking.results import ResultsDB

PATH_REGULARIZERS = tuple(r for r in REGULARIZERS if r != "none")
KIND = "path"  # what the study is of its parent, in the results database's `study_links`


def regularizers_of(names: str | Sequence[str]) -> list[str]:
    """'l1,l2' (or a list) -> the regularizers of a path, each once; `none` is always its baseline."""
    listed = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    if not listed or any(n not in PATH_REGULARIZERS for n in listed) or len(set(listed)) < len(listed):
        raise UsageError(f"`--regularizers` {excerpt(names)}: must be a comma-separated list of "
                         f"{', '.join(PATH_REGULARIZERS)}, each once")
    return listed


def log_grid(text: str) -> list[float]:
    """'LOW:HIGH:COUNT' -> COUNT weights evenly spaced on a log scale from LOW to HIGH, both included (LOW alone for
    COUNT 1)."""
    bad = UsageError(f"`--weights` {excerpt(text)}: must be LOW:HIGH:COUNT with numbers 0 < LOW < HIGH and an "
                     "integer COUNT >= 1, e.g. 1e-5:1e-1:9")
    try:
        low, high, count = text.split(":")
        low, high, count = float(low), float(high), int(count)
    except (AttributeError, ValueError):
        raise bad from None
    if not (math.isfinite(high) and 0 < low < high and count >= 1):
        raise bad
    return [float(w) for w in np.geomspace(low, high, count)]


def start_trial(study: optuna.Study, number: int | None, best: list[dict]) -> optuna.trial.FrozenTrial:
    """The COMPLETE trial a path starts from: trial `number`, else `best` (`api.best`'s one trial); a multi-objective
    study has no single best, so it needs `number`."""
    name = study.study_name
    if number is None:
        if len(study.directions) > 1:
            front = ", ".join(str(t["number"]) for t in best) or "none yet"
            raise UsageError(f"`--trial`: study {name!r} has {len(study.directions)} objectives, so no single best "
                             f"trial: give --trial (its Pareto set: {front})")
        if not best:
            raise UsageError(f"`--trial`: study {name!r} has no COMPLETE trial to start a path from")
        number = best[0]["number"]
    trials = study.get_trials(deepcopy=False)
    trial = next((t for t in trials if t.number == number), None)
    if trial is None:
        raise UsageError(f"`--trial` {number}: study {name!r} has no such trial (it has {len(trials)}, numbered "
                         "from 0)")
    if trial.state != optuna.trial.TrialState.COMPLETE:
        raise UsageError(f"`--trial` {number}: trial {number} of study {name!r} is {trial.state.name}; a path "
                         "starts from a COMPLETE trial")
    return trial


def path_spec(parent: SweepSpec, trial: optuna.trial.FrozenTrial, regularizers: list[str], weights: list[float],
              repeats: int, name: str | None = None) -> SweepSpec:
    """The path's spec: the parent's, with everything the trial sampled or the parent fixed (but the regularization)
    in `params` (`epochs`, `batch_size`, `hidden` at the spec level), `regularizer` searched over none and
    `regularizers`, `regularization_weight` over `weights`, every point enqueued once, `repeats` seeds each."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UsageError(f"`--repeats` {excerpt(repeats)}: must be an integer >= 1")
    sampled = {k: from_optuna(v, k) for k, v in trial.params.items()}
    trained = trial_params(parent, sampled)  # the trial's settings; conditions that do not hold are left out
    named = (parent.params.keys() | sampled.keys()) - set(REGULARIZATION)
    spec = parent.model_dump(mode="json")
    spec.update(
        name=name or f"{parent.name}-path-{trial.number}",
        params={k: v for k, v in trained.items() if k in named and k in HYPERPARAMETERS and k not in SPEC_LEVEL},
        search={"regularizer": {"type": "categorical", "choices": ["none", *regularizers]},
                "regularization_weight": {"type": "categorical", "choices": weights,
                                          "when": {"regularizer": regularizers}}},
        enqueue=[{"regularizer": "none"}] + [{"regularizer": r, "regularization_weight": w}
                                              for r in regularizers for w in weights],
        sampler="random",
        pruner=None, repeats=repeats,
    )
    spec["trials"] = len(spec["enqueue"])
    for key in SPEC_LEVEL:  # searched by the parent: fixed where the spec fixes them
        if key in sampled:
            (spec["model"] if key == "hidden" else spec)[key] = sampled[key]
    path = parse_spec(spec, source=f"the path of trial {trial.number} of study {parent.name!r}")
    path._base_dir = parent.base_dir
    return path


def check_name(spec: SweepSpec, stores: Stores) -> None:
    """A path may resume a study of its name with the same spec, never take over one with another."""
    try:
        existing = load_study(spec.name, stores)
    except UsageError:
        return
    changed = changed_field(existing.user_attrs.get("fitgap.spec", {}),
                            spec.model_dump(mode="json", exclude={"trials"}))
    if changed:
        raise UsageError(f"`--name` {spec.name!r}: a study of that name exists with another spec (its field "
                         f"`{changed[0]}` differs): choose another --name")


def link(stores: Stores, study: str, parent: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Link the path `study` to the trial it started from: Optuna's user attr `fitgap.parent`, tags on its MLflow
    parent run (`fitgap.parent_study`, `fitgap.parent_trial`, `fitgap.parent_run_id`: the trial's run) and a row of
    the results database's `study_links`. Writing it again changes nothing."""
    load_study(study, stores).set_user_attr("fitgap.parent", {"study": parent.study_name, "trial": trial.number})
    sink = MlflowSink(stores.tracking_uri, stores.artifact_root)
    tags = {"fitgap.parent_study": parent.study_name, "fitgap.parent_trial": str(trial.number),
            "fitgap.parent_run_id": trial.user_attrs.get("fitgap.mlflow_run_id")}
    run = sink.find_study_run(study)
    for key, value in tags.items():
        if value is not None:  # a trial of an older fitgap may have no run id
            sink.client.set_tag(run.run_id, key, value)
    with ResultsDB(stores.results_url) as results:
        if results.parent_of(study) is None:
            results.link_study(study, parent.study_name, trial.number, KIND)
