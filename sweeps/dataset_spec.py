"""The spec's `dataset:` section: which data a sweep trains on and how it is split."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sweeps.vocabulary import DATASETS


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal[DATASETS]  # type: ignore[valid-type]
    validation_fraction: float = Field(0.2, gt=0, lt=1)

    @property
    def task(self) -> str:
        """binary, multiclass or regression: decides the output layer and which losses make sense."""
        return "binary"
