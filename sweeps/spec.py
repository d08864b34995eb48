"""Spec language (pure Python, knows nothing of storage or TensorFlow): the sweep spec, validated before anything is
created (a spec file is read by `reading.load_spec`).

Every problem becomes one `SpecError` line that names the field and quotes (an excerpt of) the bad value. Types are
strict (a bool is not an int, a string is not a number; no infinity or NaN). Besides each field's own checks, the
spec must hold together (`SweepSpec._consistent`): every enqueued value is one its dimension can take, a `when:` names
values its parent can take, a hyperparameter that exists only under a condition (`vocabulary.CONDITIONS`) is searched
with a matching `when:`, a regularizer has a weight, a fixed value fits the dataset's task (`vocabulary.TASK_CHOICES`),
and every objective is measured for that task.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal


from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from fitgap.errors import UsageError
from fitgap.sweeps.dataset_spec import DatasetSpec
from fitgap.sweeps.pruning import PRUNERS, PrunerSpec
from fitgap.sweeps.vocabulary import (
    COMPLEXITY_METRICS,
    CONDITIONS,
    DATASETS,
    DEFAULT_LOSS,
    HYPERPARAMETERS,
    LOSS_DEPENDENT_METRICS,
    MODEL_KINDS,
    OBJECTIVE_METRICS,
    SAMPLERS,
    SHAPE,
    SPEC_LEVEL,
    TASK_CHOICES,
    TASK_METRICS,
    default_direction,
    epoch_metrics,
    excerpt,
    shorten,
)

MAX_NAME_LENGTH = 100  # the study name names files and folders (255 bytes at most) and MLflow experiments


class SpecError(UsageError, ValueError):
    """A spec (or its data) is invalid: nothing has been created, nothing runs."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


Condition = dict[str, Annotated[list[Any], Field(min_length=1)]]  # sampled only when params[key] is in the list


class FloatDim(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None
    when: Condition | None = None

    @model_validator(mode="after")
    def _bounds(self):
        _check_bounds(self.low, self.high, self.log, self.step)
        return self

    @property
    def points(self) -> int | None:
        """How many values a grid of this dimension has (None without a step), counted, never enumerated."""
        return None if self.step is None else int(_span(self.low, self.high) / Decimal(str(self.step))) + 1


class IntDim(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1
    when: Condition | None = None

    @model_validator(mode="after")
    def _bounds(self):
        _check_bounds(self.low, self.high, self.log, self.step if self.step != 1 else None)
        return self

    @property
    def points(self) -> int:
        return (self.high - self.low) // self.step + 1


class CategoricalDim(_Strict):
    type: Literal["categorical"]
    choices: list[bool | int | float | str | list[int]] = Field(min_length=1)  # lists: `hidden` widths
    when: Condition | None = None


def _check_bounds(low, high, log, step):
    low_, high_, step_ = f"low={excerpt(low)}", f"high={excerpt(high)}", f"step={excerpt(step)}"
    if not low < high:
        raise ValueError(f"`low < high` must hold, but got {low_} and {high_}")
    if log and low <= 0:
        raise ValueError(f"`low > 0` must hold for log=true, but got {low_}")
    if log and step is not None:
        raise ValueError(f"`step` cannot be combined with log=true, but got {step_}")
    if step is not None and step <= 0:
        raise ValueError(f"`step > 0` must hold, but got {step_}")
    if step is not None and _span(low, high) % Decimal(str(step)):
        # Optuna would move `high` down to the last step, with a multi-line warning: say so now, in one line
        last = Decimal(str(low)) + _span(low, high) // Decimal(str(step)) * Decimal(str(step))
        raise ValueError(f"`high - low` must be a multiple of `step` (e.g. high={shorten(str(last))}), but got "
                         f"{low_}, {high_} and {step_}")


def _span(low, high) -> Decimal:
    """high - low as written, as Optuna reckons steps: 0.5 - 0.1 is 0.4, a multiple of 0.1."""
    return Decimal(str(high)) - Decimal(str(low))


Dimension = Annotated[FloatDim | IntDim | CategoricalDim, Field(discriminator="type")]


class MlpModel(_Strict):
    """Dense layers of `hidden` widths (or `depth` x `width`), each followed by the activation and dropout."""

    kind: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = [11]


class ConvBlock(_Strict):
    """Conv2D -> [BatchNormalization] -> activation -> [pooling]."""

    filters: PositiveInt
    kernel: PositiveInt = 3
    stride: PositiveInt = 1
    padding: Literal["same", "valid"] = "same"
    batch_norm: bool = False
    pool: Literal["none", "max", "avg"] = "none"
    pool_size: PositiveInt = 2


class Augment(_Strict):
    """Random changes to each training image, drawn anew every epoch; validation and test images are never changed."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    crop: NonNegativeInt = 0  # pad each side with this many zero pixels, then crop a random window of the image size


class CnnModel(_Strict):
    """Conv blocks, then a dense head of `hidden` widths (activation, dropout), then the output layer."""

    kind: Literal["cnn"]
    conv: list[ConvBlock] = Field(min_length=1)
    hidden: list[PositiveInt] = []
    # (height, width, channels) of flat rows; a YAML (or stored JSON) list, so not strict about being a tuple
    image_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(None, strict=False)
    augment: Augment = Augment()


class BuilderModel(_Strict):
    """The user's own Keras model: `function(params, kit)` from `module:function`, imported only with allow_builder."""

    kind: Literal["builder"]
    builder: str = Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
    hidden: list[PositiveInt] = [11]  # handed to the builder in params["hidden"], like every hyperparameter


ModelSpec = Annotated[MlpModel | CnnModel | BuilderModel, Field(discriminator="kind")]


class Objective(_Strict):
    metric: Literal[OBJECTIVE_METRICS]  # type: ignore[valid-type]
    direction: Literal["minimize", "maximize"] = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _direction(self):
        if self.direction is None:
            object.__setattr__(self, "direction", default_direction(self.metric))
        return self


class SweepSpec(_Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    dataset: DatasetSpec
    model: ModelSpec = MlpModel()
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 32
    objective: list[Objective] = Field([Objective(metric="val_loss")], min_length=1)
    trials: PositiveInt = 20
    seed: int = 0
    sampler: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    search: dict[str, Dimension] = {}
    params: dict[str, Any] = {}
    enqueue: list[dict[str, Any]] = []
    pruner: PrunerSpec | None = None  # see sweeps/pruning.py
    trial_timeout: float | None = Field(None, gt=0)  # seconds; a trial over it stops and fails
    executor: Literal["auto", "keras", "compiled", "fused"] = "auto"  # how trials train (studies/keras)
    repeats: PositiveInt = 1  # trainings per parameter set, with different seeds: Optuna is told their mean

    @model_validator(mode="after")
    def _prunable(self):
        if self.pruner is not None and self.pruner.type != "none" and len(self.objective) > 1:
            raise ValueError(f"`pruner` {self.pruner.type!r} cannot be used with {len(self.objective)} objectives: "
                             "Optuna cannot prune multi-objective trials")
        if self.pruner is not None and self.pruner.type != "none" and self.repeats > 1:
            raise ValueError(f"`pruner` {self.pruner.type!r} cannot be used with repeats={self.repeats}: a trial's "
                             "repeats train apart, so no single curve could be pruned")
        return self
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)  # relative data paths resolve against it

    @model_validator(mode="after")
    def _consistent(self):
        for name in [*self.search, *self.params]:
            if name not in HYPERPARAMETERS:
                where = "search" if name in self.search else "params"
                raise ValueError(f"`{where}`: unknown hyperparameter {excerpt(name)}; known: {sorted(HYPERPARAMETERS)}")
        for name in set(self.search) & set(self.params):
            raise ValueError(f"`{name}` is both searched (search:) and fixed (params:); choose one")
        object.__setattr__(self, "search", _parents_first(self.search))
        for name, value in self.params.items():
            _check_value(f"params.{name}", name, value)
        for name, dim in self.search.items():
            self._check_dimension(name, dim)
        for i, entry in enumerate(self.enqueue):
            self._check_enqueued(i, entry)
        self._check_shape()
        self._check_conditions()
        self._check_penalty()
        self._check_task()
        self._check_objectives()
        return self

    def _check_dimension(self, name: str, dim: Any) -> None:
        hp = HYPERPARAMETERS[name]
        if isinstance(dim, CategoricalDim):
            for choice in dim.choices:
                _check_value(f"search.{name}.choices", name, choice)
        elif hp.kind in (str, bool, list):
            raise ValueError(f"`search.{name}.type` must be categorical for {name}, but got {dim.type!r}")
        elif hp.kind is int and isinstance(dim, FloatDim):
            raise ValueError(f"`search.{name}.type` must be int for {name}, but got 'float'")
        else:
            _check_value(f"search.{name}.low", name, dim.low)
            _check_value(f"search.{name}.high", name, dim.high)
        for key, values in (dim.when or {}).items():
            if key not in self.search and key not in self.params:
                raise ValueError(f"`search.{name}.when` names {excerpt(key)}, which is neither searched nor fixed")
            for value in values:
                _check_value(f"search.{name}.when.{key}", key, value)
                never = self._never(key, value)
                if never:  # a dead condition: refuse it rather than never search the dimension
                    raise ValueError(f"`search.{name}.when.{key}` lists {excerpt(value)}, which {key} never takes "
                                     f"({never})")

    def _never(self, name: str, value: Any) -> str | None:
        """Why `name` never has `value` in a trial (its dimension's range, or its fixed value), or None."""
        if name in self.search:
            dim = self.search[name]
            return _outside(dim, value, self.choices(name) if isinstance(dim, CategoricalDim) else None)
        fixed = self.value_of(name)
        return None if _same(fixed, value) else f"it is {excerpt(fixed)} in every trial"

    def _check_enqueued(self, i: int, entry: dict[str, Any]) -> None:
        """An enqueued value is one its dimension can take, in a trial where that dimension exists."""
        for name, value in entry.items():
            field = f"enqueue[{i}].{name}"
            if name not in self.search:
                raise ValueError(f"`{field}`: only searched names can be enqueued, but got {excerpt(name)}")
            _check_value(field, name, value)
            dim = self.search[name]
            problem = _outside(dim, value)  # a choice that does not fit the task is `_check_task`'s to explain
            if problem:
                raise ValueError(f"`{field}` {problem}, but got {excerpt(value)}")
            for key, values in (dim.when or {}).items():
                if key in entry and not any(_same(entry[key], v) for v in values):
                    raise ValueError(f"`{field}`: {name} exists only when {key} is one of {excerpt(values)}, but "
                                     f"enqueue[{i}].{key} is {excerpt(entry[key])}")

    @field_validator("model", mode="before")
    @classmethod
    def _mlp_by_default(cls, model: Any) -> Any:
        return {"kind": "mlp", **model} if isinstance(model, dict) and "kind" not in model else model

    def _check_shape(self) -> None:
        for name in SPEC_LEVEL:
            if name in self.params:
                where = "model.hidden" if name == "hidden" else name
                raise ValueError(f"`params.{name}`: set it at the spec level (`{where}:`) or search it, "
                                 f"but got {excerpt(self.params[name])}")
        uses = [name for name in SHAPE if name in self.search or name in self.params]
        # `model.hidden` at its default counts as unset: a stored spec (a full dump) carries the default
        default_hidden = type(self.model).model_fields["hidden"].default
        if uses and ("hidden" in self.search or self.model.hidden != default_hidden):
            raise ValueError(f"`{uses[0]}` and `hidden` both set the hidden layers ([width] * depth or a list of "
                             "widths): use one")
        for i, entry in enumerate(self.enqueue):
            if "hidden" in entry:
                raise ValueError(f"`enqueue[{i}].hidden`: a list of widths cannot be enqueued, but got "
                                 f"{excerpt(entry['hidden'])}; search depth and width to enqueue layer shapes")

    def _check_conditions(self) -> None:
        """A conditional hyperparameter must be able to exist: searched under a searched parent, it says `when`."""
        for name, (parent, allowed) in CONDITIONS.items():
            where = "search" if name in self.search else "params" if name in self.params else None
            if where is None:
                continue
            if parent not in self.search:
                value = self.value_of(parent)
                if value not in allowed:
                    raise ValueError(f"`{where}.{name}` is used only when {parent} is one of {list(allowed)}, "
                                     f"but {parent} is {excerpt(value)}")
            elif where == "search":  # a fixed value simply goes where its condition holds
                listed = (self.search[name].when or {}).get(parent)
                if listed is None or not set(listed) <= set(allowed):
                    raise ValueError(
                        f"`search.{name}` exists only when {parent} is one of {list(allowed)}: give it "
                        f"`when: {{{parent}: [...]}}` listing only those (fitgap does not add the condition), "
                        f"but got when={excerpt(self.search[name].when)}"
                    )

    def _check_penalty(self) -> None:
        """The default weight is 0, which would train without a penalty under a regularizer's name: each regularizer
        a trial can have (fixed, or a searched choice, which covers the enqueued ones) needs `regularization_weight`,
        fixed or searched in every trial that has that regularizer."""
        if "regularization_weight" in self.params:
            return
        weight = self.search.get("regularization_weight")
        when = (weight.when or {}) if weight else {}
        if "regularizer" in self.search:
            field, values = "search.regularizer.choices", self.choices("regularizer")
        else:
            field, values = "params.regularizer", [self.value_of("regularizer")]
        for value in values:
            weighted = weight is not None and set(when) <= {"regularizer"} and value in when.get("regularizer", [value])
            if value != "none" and not weighted:
                raise ValueError(
                    f"`{field}` {excerpt(value)} needs a `regularization_weight` (its default 0 trains without a "
                    f"penalty): fix it in params, or search it with `when: {{regularizer: [...]}}` including "
                    f"{excerpt(value)}")

    def _check_task(self) -> None:
        """Fixed values that cannot fit the dataset's task are refused; searched choices are cut down to the fitting
        ones (`choices`), which must leave at least one."""
        task, dataset = self.dataset.task, self.dataset.name
        for name, by_task in TASK_CHOICES.items():
            valid = list(by_task[task])
            if name in self.search:
                if not self.choices(name):
                    raise ValueError(f"`search.{name}.choices`: none of {excerpt(self.search[name].choices)} fits "
                                     f"the {task} task of dataset {dataset!r}; valid there: {valid}")
            elif self.value_of(name) not in valid:
                raise ValueError(f"`params.{name}` {excerpt(self.value_of(name))} does not fit the {task} task of "
                                 f"dataset {dataset!r}; valid there: {valid}")
            for i, entry in enumerate(self.enqueue):
                if name in entry and entry[name] not in valid:
                    raise ValueError(f"`enqueue[{i}].{name}` {excerpt(entry[name])} does not fit the {task} task of "
                                     f"dataset {dataset!r}; valid there: {valid}")

    def _check_objectives(self) -> None:
        task = self.dataset.task
        independent = " or ".join(f"val_{m}" for m in TASK_METRICS[task])
        measured = epoch_metrics(task) + COMPLEXITY_METRICS
        for objective in self.objective:
            if objective.metric not in measured:
                raise ValueError(f"`objective.metric` {objective.metric!r} is not measured for a {task} task; "
                                 f"use one of {list(measured)}")
            if "loss" in self.search and objective.metric in LOSS_DEPENDENT_METRICS:
                raise ValueError(
                    f"`objective.metric` {objective.metric!r} depends on the searched `loss` (MSE and cross-entropy "
                    "are on different scales, so the sampler would learn to pick the loss): use a loss-independent "
                    f"metric such as {independent}"
                )
        patience = self.search.get("early_stopping") or self.params.get("early_stopping", 0)
        if patience and self.metrics[0] in COMPLEXITY_METRICS:
            raise ValueError(f"`early_stopping` watches the first objective, but {self.metrics[0]!r} is not measured "
                             f"per epoch: put an epoch metric such as {independent} first")

    def value_of(self, name: str) -> Any:
        """The value every trial has for a hyperparameter that is not searched: fixed, spec-level, or the default
        (the loss's default depends on the task)."""
        if name in self.params:
            return self.params[name]
        if name in ("epochs", "batch_size"):
            return getattr(self, name)
        if name == "hidden":
            return list(self.model.hidden)
        if name == "loss":
            return DEFAULT_LOSS[self.dataset.task]
        return HYPERPARAMETERS[name].default

    def choices(self, name: str) -> list:
        """A searched categorical dimension's choices that fit the dataset's task, in the spec's order."""
        choices = self.search[name].choices
        by_task = TASK_CHOICES.get(name)
        return [c for c in choices if c in by_task[self.dataset.task]] if by_task else list(choices)

    def model_params(self) -> dict[str, Any]:
        """The model section as params (beyond `hidden`), so that any stored trial can rebuild its model."""
        section = self.model.model_dump(mode="json", exclude={"kind", "hidden"})
        return {"model_kind": self.model.kind, **section}

    @property
    def base_dir(self) -> Path:
        """The spec file's folder (the current one for a spec given as data)."""
        return self._base_dir

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objective]

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objective]


def _check_value(field: str, name: str, value: Any) -> None:
    problem = HYPERPARAMETERS[name].problem(value)
    if problem:
        raise ValueError(f"`{field}` {problem}, but got {excerpt(value)}")


def _same(a: Any, b: Any) -> bool:
    """Equal as a spec means it: true is not 1 (Python says it is)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _outside(dim: Any, value: Any, choices: list | None = None) -> str | None:
    """Why `dim` never suggests `value` ("must be ..."), or None; a categorical's `choices` default to its own.
    Steps are checked as Optuna checks an enqueued value."""
    if isinstance(dim, CategoricalDim):
        choices = dim.choices if choices is None else choices
        return None if any(_same(value, c) for c in choices) else f"must be one of {excerpt(choices)}"
    kind, types = ("an integer", int) if isinstance(dim, IntDim) else ("a number", (int, float))
    if isinstance(value, bool) or not isinstance(value, types):
        return f"must be {kind}"
    steps = (value - dim.low) / dim.step if dim.step else 0
    if not (dim.low <= value <= dim.high and abs(steps - round(steps)) < 1e-8):
        on_steps = f" on steps of {excerpt(dim.step)}" if dim.step not in (None, 1) else ""
        return f"must be {kind} in [{excerpt(dim.low)}, {excerpt(dim.high)}]{on_steps}"
    return None


def _parents_first(search: dict[str, Any]) -> dict[str, Any]:
    """The dimensions in the order they are suggested: each after the searched ones its `when:` names, otherwise as
    listed. A mapping has no order (a tool that writes YAML may sort its keys), so only a cycle is an error."""
    ordered, left = {}, dict(search)
    while left:
        ready = next((name for name, dim in left.items() if not set(dim.when or ()) & left.keys()), None)
        if ready is None:
            raise ValueError(f"`search`: the `when:` conditions form a cycle, {' -> '.join(_cycle(left))}: "
                             "a dimension cannot depend on itself")
        ordered[ready] = left.pop(ready)
    return ordered


def _cycle(left: dict[str, Any]) -> list[str]:
    """A cycle among dimensions that each name another of them in `when:`, as [a, b, ..., a]."""
    path = [next(iter(left))]
    while path.count(path[-1]) < 2:
        path.append(next(key for key in left[path[-1]].when if key in left))
    return path[path.index(path[-1]):]


def check_builder(spec: SweepSpec, allow_builder: bool) -> None:
    """A builder's module runs the user's code when imported: refuse it unless allowed, and check it can be found
    (its package is imported to find it; the module itself is imported only by executors)."""
    if spec.model.kind != "builder":
        return
    module = spec.model.builder.partition(":")[0]
    if not allow_builder:
        raise SpecError(f"`model.builder` {spec.model.builder!r} would import and run your code: pass --allow-builder "
                        "(allow_builder=True) to allow it")
    sys.path.insert(0, str(spec.base_dir))  # executors import it with the spec's folder first on sys.path too
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    finally:
        sys.path.remove(str(spec.base_dir))
    if found is None:
        raise SpecError(f"`model.builder`: no module {module!r} in the spec's folder or on sys.path")


def image_shape_for(image_shape: Any, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The (height, width, channels) a cnn takes for samples of `sample_shape`: `model.image_shape` when given (the
    samples are reshaped to it), else the samples' own shape; ValueError when neither fits."""
    sample_shape = tuple(int(d) for d in sample_shape)
    if image_shape is None:
        if len(sample_shape) != 3:
            raise ValueError(f"a cnn takes images (height, width, channels), but the data's samples have shape "
                             f"{sample_shape}: set `model.image_shape`")
        return sample_shape
    wanted = tuple(int(d) for d in image_shape)
    if math.prod(wanted) != math.prod(sample_shape):
        raise ValueError(f"`model.image_shape` {list(wanted)} holds {math.prod(wanted)} values, but the data's "
                         f"samples have shape {sample_shape}")
    return wanted


def check_input_shape(spec: SweepSpec, sample_shape: tuple[int, ...]) -> None:
    """Refuse, before any trial, a model that cannot take the data's samples (a cnn needs images)."""
    if spec.model.kind == "cnn":
        try:
            image_shape_for(spec.model.image_shape, sample_shape)
        except ValueError as error:
            raise SpecError(f"`model`: {error}") from None


MAX_INT = 2**63 - 1  # what the stores hold (a 64-bit integer column, Optuna's and MLflow's values)


def parse_spec(data: dict, source: str = "spec") -> SweepSpec:
    _check_integers(data, source)
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(f"{source}: {_one_line(e)}") from None


def _check_integers(value: Any, source: str, path: str = "") -> None:
    """Every integer anywhere in the spec fits the stores: a larger one would fail the launch, not the check."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_integers(item, source, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_integers(item, source, f"{path}[{index}]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise SpecError(f"{source}: `{shorten(path)}`: {excerpt(value)} is larger than the stores hold "
                        f"(a 64-bit integer, at most {MAX_INT})")


def _one_line(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    loc = [str(p) for p in first["loc"]]
    if len(loc) > 2 and loc[0] == "search" and loc[2] in ("float", "int", "categorical"):
        del loc[2]  # the union's tag says nothing the user wrote
    if len(loc) > 1 and (loc[0], loc[1]) in [("model", k) for k in MODEL_KINDS] + [("dataset", d) for d in DATASETS]:
        del loc[1]
    if len(loc) > 1 and loc[0] == "pruner" and loc[1] in PRUNERS:
        del loc[1]
    msg = first["msg"].removeprefix("Value error, ")
    field = shorten(".".join(loc)) or "spec"  # a key may be user text too
    if first["type"] == "extra_forbidden":
        return f"`{field}`: unknown key"
    if first["type"] == "missing":
        return f"`{field}`: a required field is missing"
    if msg.startswith("`"):
        return msg if not loc else f"`{field}`: {msg}"
    return f"`{field}`: {msg}, but got {excerpt(first.get('input'))}"


def changed_field(stored: dict, current: dict, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first field that differs between two dumped specs, as (dotted name, stored value, current value)."""
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = changed_field(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}", a, b
    return None
