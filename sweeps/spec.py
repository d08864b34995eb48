"""The sweep spec: a YAML file, read safely and validated before anything is created.

Every problem becomes one `SpecError` line that names the field and quotes the bad value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, PrivateAttr, ValidationError, model_validator

from sweeps.dataset_spec import DatasetSpec
from sweeps.vocabulary import (
    HYPERPARAMETERS,
    LOSS_DEPENDENT_METRICS,
    OBJECTIVE_METRICS,
    SAMPLERS,
    default_direction,
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
    choices: list[bool | int | float | str] = Field(min_length=1)
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


class ModelSpec(_Strict):
    kind: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = [11]


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
    model: ModelSpec = ModelSpec()
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 32
    objective: list[Objective] = Field([Objective(metric="val_loss")], min_length=1)
    trials: PositiveInt = 20
    seed: int = 0
    sampler: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    search: dict[str, Dimension] = {}
    params: dict[str, Any] = {}
    enqueue: list[dict[str, Any]] = []
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
        if "loss" in self.search:
            for objective in self.objective:
                if objective.metric in LOSS_DEPENDENT_METRICS:
                    raise ValueError(
                        f"`objective.metric` {objective.metric!r} depends on the searched `loss` (MSE and cross-entropy "
                        "are on different scales, so the sampler would learn to pick the loss): use a loss-independent "
                        "metric such as val_bce or val_accuracy"
                    )
        return self

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
    elif hp.kind in (str, bool):
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
