"""Coordinator side: slots, where executors run. Each slot is one executor process pinned to one device through its environment,
which is in place before the process imports TensorFlow.

GPUs are discovered without TensorFlow (`nvidia-smi`), so the coordinator never imports it. FITGAP_FAKE_GPUS
("0,1", with FITGAP_FAKE_GPU_MEMORY_MB) stands in for nvidia-smi so that pinning can be tested without a GPU; the
executors of fake GPUs train on the CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from typing import Mapping

from fitgap.errors import UsageError


class SlotError(UsageError, ValueError):
    """A slot option asks for something this machine does not have."""


@dataclass(frozen=True)
class Slot:
    index: int
    device: str  # "cpu" or "gpu:<index>"
    env: Mapping[str, str]  # added to the executor's environment


@dataclass(frozen=True)
class Gpu:
    index: int
    memory_mb: int


def discover_gpus() -> list[Gpu]:
    fake = os.environ.get("FITGAP_FAKE_GPUS")
    if fake is not None:
        memory = int(os.environ.get("FITGAP_FAKE_GPU_MEMORY_MB", "16000"))
        return [Gpu(int(i), memory) for i in fake.split(",") if i.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [Gpu(int(m[1]), int(m[2])) for m in re.finditer(r"^\s*(\d+)\s*,\s*(\d+)", out.stdout, re.M)]


def plan_slots(gpus: str | None = None, slots_per_gpu: int = 1, cpu_slots: int | None = None,
               cores: int | None = None, available: list[Gpu] | None = None) -> list[Slot]:
    """One slot per (GPU, k < slots_per_gpu) and `cpu_slots` CPU slots.

    gpus: "all" (the default), "none" or a list like "0,2". Without GPUs, the default is one CPU slot per two cores.
    """
    available = discover_gpus() if available is None else available
    by_index = {gpu.index: gpu for gpu in available}
    if gpus in (None, "all"):
        chosen = available
    elif gpus == "none":
        chosen = []
    else:
        try:
            wanted = [int(part) for part in gpus.split(",")]
        except ValueError:
            raise SlotError(f"`--gpus` must be all, none or a list like 0,2, but got {gpus!r}") from None
        missing = [i for i in wanted if i not in by_index]
        if missing:
            found = ",".join(str(i) for i in by_index) or "none"
            raise SlotError(f"`--gpus`: GPU {missing[0]} does not exist on this machine (found: {found})")
        chosen = [by_index[i] for i in wanted]
    if slots_per_gpu < 1:
        raise SlotError(f"`--slots-per-gpu` must be >= 1, but got {slots_per_gpu}")
    slots = [Slot(0, f"gpu:{gpu.index}", gpu_env(gpu, slots_per_gpu)) for gpu in chosen for _ in range(slots_per_gpu)]
    cores = cores or os.cpu_count() or 1
    if cpu_slots is None:
        cpu_slots = 0 if slots else max(1, cores // 2)
    threads = str(max(1, cores // max(cpu_slots, 1)))
    cpu_env = {
        "CUDA_VISIBLE_DEVICES": "",  # a CPU slot must not grab a GPU
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": threads,
    }
    slots += [Slot(0, "cpu", cpu_env) for _ in range(cpu_slots)]
    if not slots:
        raise SlotError("no slots: --gpus none needs --cpu-slots N with N >= 1")
    return [Slot(i, slot.device, slot.env) for i, slot in enumerate(slots)]


def gpu_env(gpu: Gpu, slots_per_gpu: int) -> dict[str, str]:
    """One GPU per process. Alone on its card a slot grows its memory; sharing it, it gets 1/K of the card (a
    logical device set up by the executor after import: the two settings cannot be combined)."""
    env = {"CUDA_VISIBLE_DEVICES": str(gpu.index), "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    if slots_per_gpu == 1:
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    else:
        env["FITGAP_GPU_MEMORY_MB"] = str(gpu.memory_mb // slots_per_gpu)
    return env
