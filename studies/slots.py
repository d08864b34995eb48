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
    index: int  # nvidia-smi's index; slots set CUDA_DEVICE_ORDER=PCI_BUS_ID so that CUDA counts the same way
    memory_mb: int  # total
    free_mb: int | None = None  # free when discovered (None: unknown, taken as the total)
    mig: str | None = None  # a MIG instance of card `index`: its UUID, which is what CUDA_VISIBLE_DEVICES takes
    mig_number: int = 0

    @property
    def device(self) -> str:
        return f"gpu:{self.index}" + (f"/mig:{self.mig_number}" if self.mig else "")


# Each process on a card needs memory beyond TensorFlow's cap: its CUDA context and the cuDNN/cuBLAS workspaces
# (several hundred MiB on recent cards). A slot's cap leaves this much of the card's free memory per process.
GPU_MARGIN_MB = 1024
MIN_SLOT_MB = 512  # a shared card must leave each slot at least this much
_QUERY = "--query-gpu=index,memory.total,memory.free,mig.mode.current"
_MIG_LINE = re.compile(r"^\s*MIG\s+(?P<profile>\S+)\s+Device\s+(?P<number>\d+):\s*\(UUID:\s*(?P<uuid>MIG-[^)\s]+)\)")
_GPU_LINE = re.compile(r"^GPU\s+(?P<index>\d+):")


def discover_gpus() -> list[Gpu]:
    fake = os.environ.get("FITGAP_FAKE_GPUS")
    if fake is not None:
        memory = int(os.environ.get("FITGAP_FAKE_GPU_MEMORY_MB", "16000"))
        return [Gpu(int(i), memory) for i in fake.split(",") if i.strip()]
    query = _nvidia_smi(_QUERY, "--format=csv,noheader,nounits")
    return parse_gpus(query, _nvidia_smi("-L") if "Enabled" in query else "")


def _nvidia_smi(*args: str) -> str:
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def parse_gpus(query: str, listing: str = "") -> list[Gpu]:
    """The GPUs in nvidia-smi's `_QUERY` output; a card in MIG mode is its MIG instances instead (from `-L`'s
    listing), each with the memory of its profile (`1g.10gb`: 10 GiB)."""
    instances: dict[int, list[Gpu]] = {}
    card = None
    for line in listing.splitlines():
        if found := _GPU_LINE.match(line):
            card = int(found["index"])
        elif (found := _MIG_LINE.match(line)) and card is not None:
            size = re.search(r"(\d+)gb", found["profile"])
            memory = int(size[1]) * 1024 if size else 0
            instances.setdefault(card, []).append(Gpu(card, memory, memory, found["uuid"], int(found["number"])))
    gpus = []
    for row in _csv_rows(query):
        if len(row) < 3 or not row[0].isdigit() or not row[1].isdigit():
            continue
        index, total = int(row[0]), int(row[1])
        if len(row) > 3 and row[3] == "Enabled":
            gpus += instances.get(index, [])  # MIG on, no instance made: nothing to run on
        else:
            gpus.append(Gpu(index, total, int(row[2]) if row[2].isdigit() else None))
    return gpus


def _csv_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split(",")] for line in text.splitlines() if line.strip()]


def plan_slots(gpus: str | None = None, slots_per_gpu: int = 1, cpu_slots: int | None = None,
               cores: int | None = None, available: list[Gpu] | None = None,
               deterministic: bool = False) -> list[Slot]:
    """One slot per (GPU, k < slots_per_gpu) and `cpu_slots` CPU slots.

    gpus: "all" (the default), "none" or a list like "0,2" (nvidia-smi's indices; a card in MIG mode gives all its
    instances). Without GPUs, the default is one CPU slot per two cores. deterministic: TensorFlow's op determinism
    in every executor (GPU kernels too: what `fitgap rerun` needs to match to the bit; some speed is lost).
    """
    available = discover_gpus() if available is None else available
    indices = sorted({gpu.index for gpu in available})
    if gpus in (None, "all"):
        chosen = available
    elif gpus == "none":
        chosen = []
    else:
        try:
            wanted = [int(part) for part in gpus.split(",")]
        except ValueError:
            raise SlotError(f"`--gpus` must be all, none or a list like 0,2, but got {gpus!r}") from None
        missing = [i for i in wanted if i not in indices]
        if missing:
            found = ",".join(str(i) for i in indices) or "none"
            raise SlotError(f"`--gpus`: GPU {missing[0]} does not exist on this machine (found: {found})")
        chosen = [gpu for i in wanted for gpu in available if gpu.index == i]
    if slots_per_gpu < 1:
        raise SlotError(f"`--slots-per-gpu` must be >= 1, but got {slots_per_gpu}")
    cores = cores or os.cpu_count() or 1
    if cpu_slots is None:
        cpu_slots = 0 if chosen else max(1, cores // 2)
    threads = str(max(1, cores // max(len(chosen) * slots_per_gpu + cpu_slots, 1)))  # every slot's share
    common = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": threads, "OMP_NUM_THREADS": threads,
              **({"FITGAP_DETERMINISTIC": "1"} if deterministic else {})}
    slots = [Slot(0, gpu.device, common | gpu_env(gpu, slots_per_gpu)) for gpu in chosen for _ in range(slots_per_gpu)]
    cpu_threads = str(max(1, cores // max(cpu_slots, 1)))  # GPU slots hardly use the CPU
    cpu_env = common | {"CUDA_VISIBLE_DEVICES": "",  # a CPU slot must not grab a GPU
                        "TF_NUM_INTRAOP_THREADS": cpu_threads, "OMP_NUM_THREADS": cpu_threads}
    slots += [Slot(0, "cpu", cpu_env) for _ in range(cpu_slots)]
    if not slots:
        raise SlotError("no slots: --gpus none needs --cpu-slots N with N >= 1")
    return [Slot(i, slot.device, slot.env) for i, slot in enumerate(slots)]


def gpu_env(gpu: Gpu, slots_per_gpu: int) -> dict[str, str]:
    """One GPU per process, named as nvidia-smi names it. Alone on its card a slot grows its memory; sharing it, each
    of the K slots gets an equal share of the card's free memory less a margin per process (a logical device set up
    by the executor after import: the two settings cannot be combined)."""
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": gpu.mig or str(gpu.index)}
    if slots_per_gpu == 1:
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        return env
    free = gpu.memory_mb if gpu.free_mb is None else gpu.free_mb
    share = (free - slots_per_gpu * GPU_MARGIN_MB) // slots_per_gpu
    if share < MIN_SLOT_MB:
        raise SlotError(f"`--slots-per-gpu`: {gpu.device} has {free} MiB free, too little for {slots_per_gpu} "
                        f"slots ({GPU_MARGIN_MB} MiB per process for CUDA, and at least {MIN_SLOT_MB} MiB each)")
    env["FITGAP_GPU_MEMORY_MB"] = str(share)
    return env
