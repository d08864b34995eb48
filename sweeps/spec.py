"""The sweep spec: a YAML file, read safely and validated before anything is created.

Every problem becomes one `SpecError` line that names the field and quotes the bad value. Besides each field's own
checks, the spec must hold together (`SweepSpec._consistent`): a hyperparameter that exists only under a condition
(`vocabulary.CONDITIONS`) is searched with a matching `when:`, a fixed value fits the dataset's task
(`vocabulary.TASK_CHOICES`), and every objective is measured for that task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
import importlib.util
import math
import sys

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

from sweeps.dataset_spec import DatasetSpec
from sweeps.pruning import PRUNERS, PrunerSpec
from sweeps.vocabulary import (
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
)


class SpecError(ValueError):
    """A spec (or its data) is invalid: nothing has been created, nothing runs."""

    exit_code = 2  # the CLI prints such errors as one line and exits with this code


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Condition = dict[str, list[Any]]  # dimension is sampled only when params[key] is in the list


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


class CategoricalDim(_Strict):
    type: Literal["categorical"]
    choices: list[bool | int | float | str | list[int]] = Field(min_length=1)  # lists: `hidden` widths
    when: Condition | None = None


def _check_bounds(low, high, log, step):
    if not low < high:
        raise ValueError(f"`low < high` must hold, but got {low=} and {high=}")
    if log and low <= 0:
        raise ValueError(f"`low > 0` must hold for log=true, but got {low=}")
    if log and step is not None:
        raise ValueError(f"`step` cannot be combined with log=true, but got {step=}")
    if step is not None and step <= 0:
        raise ValueError(f"`step > 0` must hold, but got {step=}")


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
    image_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = None  # (height, width, channels) of flat rows
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
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
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
                raise ValueError(f"`{where}.{name}`: unknown hyperparameter; known: {sorted(HYPERPARAMETERS)}")
        for name in set(self.search) & set(self.params):
            raise ValueError(f"`{name}` is both searched (search:) and fixed (params:); choose one")
        for name, value in self.params.items():
            _check_value(f"params.{name}", name, value)
        seen: set[str] = set(self.params)
        for name, dim in self.search.items():
            _check_dimension(name, dim, seen)
            seen.add(name)
        for i, entry in enumerate(self.enqueue):
            for name, value in entry.items():
                if name not in self.search:
                    raise ValueError(f"`enqueue[{i}].{name}`: only searched names can be enqueued, but got {name!r}")
                _check_value(f"enqueue[{i}].{name}", name, value)
        self._check_shape()
        self._check_conditions()
        self._check_task()
        self._check_objectives()
        return self

    @field_validator("model", mode="before")
    @classmethod
    def _mlp_by_default(cls, model: Any) -> Any:
        return {"kind": "mlp", **model} if isinstance(model, dict) and "kind" not in model else model

    def _check_shape(self) -> None:
        for name in SPEC_LEVEL:
            if name in self.params:
                where = "model.hidden" if name == "hidden" else name
                raise ValueError(f"`params.{name}`: set it at the spec level (`{where}:`) or search it, "
                                 f"but got {self.params[name]!r}")
        uses = [name for name in SHAPE if name in self.search or name in self.params]
        if uses and ("hidden" in self.search or "hidden" in self.model.model_fields_set):
            raise ValueError(f"`{uses[0]}` and `hidden` both set the hidden layers ([width] * depth or a list of "
                             "widths): use one")
        for i, entry in enumerate(self.enqueue):
            if "hidden" in entry:
                raise ValueError(f"`enqueue[{i}].hidden`: a list of widths cannot be enqueued, but got "
                                 f"{entry['hidden']!r}; search depth and width to enqueue layer shapes")

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
                                     f"but {parent} is {value!r}")
            elif where == "search":  # a fixed value simply goes where its condition holds
                listed = (self.search[name].when or {}).get(parent)
                if listed is None or not set(listed) <= set(allowed):
                    raise ValueError(
                        f"`search.{name}` exists only when {parent} is one of {list(allowed)}: give it "
                        f"`when: {{{parent}: [...]}}` listing only those (fitgap does not add the condition), "
                        f"but got when={self.search[name].when!r}"
                    )

    def _check_task(self) -> None:
        """Fixed values that cannot fit the dataset's task are refused; searched choices are cut down to the fitting
        ones (`choices`), which must leave at least one."""
        task, dataset = self.dataset.task, self.dataset.name
        for name, by_task in TASK_CHOICES.items():
            valid = list(by_task[task])
            if name in self.search:
                if not self.choices(name):
                    raise ValueError(f"`search.{name}.choices`: none of {self.search[name].choices} fits the {task} "
                                     f"task of dataset {dataset!r}; valid there: {valid}")
            elif self.value_of(name) not in valid:
                raise ValueError(f"`params.{name}` {self.value_of(name)!r} does not fit the {task} task of dataset "
                                 f"{dataset!r}; valid there: {valid}")
            for i, entry in enumerate(self.enqueue):
                if name in entry and entry[name] not in valid:
                    raise ValueError(f"`enqueue[{i}].{name}` {entry[name]!r} does not fit the {task} task of dataset "
                                     f"{dataset!r}; valid there: {valid}")

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
        raise ValueError(f"`{field}` {problem}, but got {value!r}")


def _check_dimension(name: str, dim: Any, earlier: set[str]) -> None:
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
        if key not in earlier:
            raise ValueError(f"`search.{name}.when` names {key!r}, which is not searched or fixed before {name!r}")
        for value in values:
            _check_value(f"search.{name}.when.{key}", key, value)


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


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file; raise SpecError with one line naming the field and the bad value."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a mapping of fields, but got {type(data).__name__}")
    spec = parse_spec(data, source=str(path))
    spec._base_dir = path.resolve().parent
    return spec


def parse_spec(data: dict, source: str = "spec") -> SweepSpec:
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(f"{source}: {_one_line(e)}") from None


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if len(loc) > 2 and loc[0] == "search" and loc[2] in ("float", "int", "categorical"):
        del loc[2]  # the union's tag says nothing the user wrote
    if len(loc) > 1 and (loc[0], loc[1]) in [("model", k) for k in MODEL_KINDS] + [("dataset", d) for d in DATASETS]:
        del loc[1]
    if len(loc) > 1 and loc[0] == "pruner" and loc[1] in PRUNERS:
        del loc[1]
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"`{'.'.join(loc)}`: unknown key"
    if msg.startswith("`"):
        return msg if not loc else f"`{'.'.join(loc)}`: {msg}"
    field = ".".join(loc) or "spec"
    return f"`{field}`: {msg}, but got {first.get('input')!r}"


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
