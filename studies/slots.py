"""Slots: where executors run. Each slot is one executor process with its device pinned through its environment,
which must be in place before TensorFlow is imported."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Slot:
    index: int
    device: str  # "cpu" or "gpu:<index>"
    env: Mapping[str, str]  # added to the executor's environment


def cpu_slots(count: int | None = None, cores: int | None = None) -> list[Slot]:
    """`count` CPU slots (default: one per two cores, at least one) splitting the cores' threads between them."""
    cores = cores or os.cpu_count() or 1
    count = count or max(1, cores // 2)
    threads = str(max(1, cores // count))
    env = {
        "CUDA_VISIBLE_DEVICES": "",  # a CPU slot must not grab a GPU
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": threads,
    }
    return [Slot(i, "cpu", env) for i in range(count)]
