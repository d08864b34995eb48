"""Spec language (pure Python, knows nothing of storage or TensorFlow): the spec's `dataset:` section: which data a sweep trains on and how it is split.

One model per source, told apart by `name`. Every source knows its `task` (binary, multiclass or regression) when
the spec is loaded, so a loss that cannot fit the task is refused before any data is read; `n_classes` is known
statically for classification except for a multiclass user file that omits it (it is then counted at load).

Splits: the file's own test set when it has one, else the last `test_fraction` of the rows is held out as the test
set; of the rows left, the last `validation_fraction` validates (or, with `validation: test`, the file's test set
does). Nothing is shuffled except iris and digits, once, with a fixed seed (sklearn ships them ordered by class).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fitgap.sweeps.vocabulary import excerpt

Task = Literal["binary", "multiclass", "regression"]
Fraction = Annotated[float, Field(gt=0, lt=1)]
DEFAULT_VALIDATION_FRACTION = 0.2


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)  # as the spec's

    validation_fraction: Fraction = DEFAULT_VALIDATION_FRACTION
    test_fraction: Fraction | None = None  # held out from the end before the validation split


class Dot(_Source):
    """The course's 2-D points: label 1 inside the circle x1^2 + x2^2 < 2."""

    name: Literal["dot"]
    task: ClassVar[str] = "binary"
    n_classes: ClassVar[int | None] = 2


class Sales(_Source):
    """The course's yogurt sales: y = x1 + x2 + noise in [-0.05, 0.05)."""

    name: Literal["sales"]
    task: ClassVar[str] = "regression"
    n_classes: ClassVar[int | None] = None


class Iris(_Source):
    name: Literal["iris"]
    task: ClassVar[str] = "multiclass"
    n_classes: ClassVar[int | None] = 3


class Digits(_Source):
    """sklearn's 8x8 digits, pixels scaled to [0, 1]: 64 features, or (8, 8, 1) images for a CNN."""

    name: Literal["digits"]
    task: ClassVar[str] = "multiclass"
    n_classes: ClassVar[int | None] = 10
    as_images: bool = False


class _UserData(_Source):
    path: str = Field(min_length=1)  # relative to the spec file's folder
    task: Task
    n_classes: int | None = Field(None, ge=2)  # multiclass: counted from the labels when omitted

    @model_validator(mode="after")
    def _classes_fit_the_task(self):
        if self.task == "regression" and self.n_classes is not None:
            raise ValueError(f"`n_classes` is for classification, but got {excerpt(self.n_classes)} for task 'regression'")
        if self.task == "binary":
            if self.n_classes not in (None, 2):
                raise ValueError(f"`n_classes` must be 2 for task 'binary', but got {excerpt(self.n_classes)}")
            object.__setattr__(self, "n_classes", 2)
        return self


class Csv(_UserData):
    """A CSV file with a header row; every used cell must be a number."""

    name: Literal["csv"]
    target: str = Field(min_length=1)
    features: list[str] | None = Field(None, min_length=1)  # None: every column but the target

    @model_validator(mode="after")
    def _target_is_not_a_feature(self):
        if self.features and self.target in self.features:
            raise ValueError(f"`features` must not contain the target, but got {excerpt(self.target)} in both")
        return self


class _WithTestSet(_Source):
    """A source that may carry its own test set, which can then validate instead of a fraction of the rows."""

    validation: Literal["split", "test"] = "split"
    validation_fraction: Fraction | None = None  # 0.2 when validation is split
    flatten: bool = False  # (n, h, w, c) images -> (n, h*w*c) rows, for an MLP

    @model_validator(mode="after")
    def _one_validation_set(self):
        # None, not a default, so that a dumped and reloaded section (what an executor gets) means the same
        if self.validation == "test" and self.validation_fraction is not None:
            raise ValueError("`validation_fraction` splits the training rows, but `validation: test` validates on "
                             f"the file's test set; choose one, but got validation_fraction={self.validation_fraction}")
        if self.validation == "split" and self.validation_fraction is None:
            object.__setattr__(self, "validation_fraction", DEFAULT_VALIDATION_FRACTION)
        return self


class Npz(_WithTestSet, _UserData):
    """A numpy .npz archive with arrays x_train, y_train and optionally x_test, y_test."""

    name: Literal["npz"]
    scale: float | None = Field(None, gt=0)  # x is divided by it (255 for uint8 images)


class Hdf5(_WithTestSet, _UserData):
    """An HDF5 file; the dataset names default to the common cat-vs-non-cat layout."""

    name: Literal["hdf5"]
    test_path: str | None = Field(None, min_length=1)  # the test datasets' file, when not in `path`
    x_train: str = "train_set_x"
    y_train: str = "train_set_y"
    x_test: str | None = None  # None: "test_set_x" and "test_set_y", used when present; a name given must exist
    y_test: str | None = None
    scale: float | None = Field(None, gt=0)


class Keras(_WithTestSet):
    """A Keras dataset read from the local Keras cache only (fitgap never downloads); pixels scaled to [0, 1]."""

    name: Literal["keras"]
    dataset: Literal["mnist", "fashion_mnist", "cifar10"]
    task: ClassVar[str] = "multiclass"
    n_classes: ClassVar[int | None] = 10


DatasetSpec = Annotated[Dot | Sales | Iris | Digits | Csv | Npz | Hdf5 | Keras, Field(discriminator="name")]
