"""Slot planning: which executor gets which device and environment. No GPU here: discovery is faked two ways."""

from __future__ import annotations

import os

import pytest

from fitgap.training.process import pin_device
from fitgap.studies.slots import GPU_MARGIN_MB, Gpu, SlotError, discover_gpus, parse_gpus, plan_slots
from fitgap.sweeps.pruning import HyperbandPruner, MedianPruner, SuccessiveHalvingPruner, report_epochs

TWO_GPUS = [Gpu(0, 16000), Gpu(1, 8000)]


def test_two_gpus_two_slots_each_share_memory_instead_of_growing():
    slots = plan_slots("all", slots_per_gpu=2, available=TWO_GPUS)
    assert [(s.index, s.device) for s in slots] == [(0, "gpu:0"), (1, "gpu:0"), (2, "gpu:1"), (3, "gpu:1")]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "0", "1", "1"]
    # Each of K slots: the card's free memory less a CUDA margin per process, split K ways (the free memory is the
    # total when nvidia-smi did not say)
    share = [(16000 - 2 * GPU_MARGIN_MB) // 2, (8000 - 2 * GPU_MARGIN_MB) // 2]
    assert [s.env["FITGAP_GPU_MEMORY_MB"] for s in slots] == [str(share[0])] * 2 + [str(share[1])] * 2
    assert not any("TF_FORCE_GPU_ALLOW_GROWTH" in s.env for s in slots)  # cannot be combined with a memory limit
    assert {s.env["CUDA_DEVICE_ORDER"] for s in slots} == {"PCI_BUS_ID"}  # CUDA counts cards as nvidia-smi does
    busy = plan_slots("0", slots_per_gpu=3, available=[Gpu(0, 16000, free_mb=9000)])
    assert {s.env["FITGAP_GPU_MEMORY_MB"] for s in busy} == {str((9000 - 3 * GPU_MARGIN_MB) // 3)}
    with pytest.raises(SlotError, match="`--slots-per-gpu`: gpu:0 has 3000 MiB free, too little for 4 slots"):
        plan_slots("0", slots_per_gpu=4, available=[Gpu(0, 16000, free_mb=3000)])


def test_gpu_slots_share_the_cores_and_can_be_made_deterministic():
    slots = plan_slots("all", slots_per_gpu=2, cores=16, available=TWO_GPUS)
    assert {s.env["TF_NUM_INTRAOP_THREADS"] for s in slots} == {"4"} and {s.env["OMP_NUM_THREADS"] for s in slots} == {"4"}
    assert not any("FITGAP_DETERMINISTIC" in s.env for s in slots)
    assert all(s.env["FITGAP_DETERMINISTIC"] == "1" for s in plan_slots(cores=4, available=TWO_GPUS,
                                                                          deterministic=True))


QUERY = "0, 81559, 80100, Disabled\n1, 81559, 81000, Enabled\n2, 24576, 20000, [N/A]\n"
LISTING = """\
GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-6e6cb1e7-e44e-3c3d-635e-af4e9e3c9b88)
  MIG 3g.40gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c9a0c22)
  MIG 1g.10gb     Device  1: (UUID: MIG-1a2b3c4d-1111-2222-3333-444455556666)
GPU 2: NVIDIA GeForce RTX 4090 (UUID: GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)
"""


def test_a_card_in_mig_mode_is_its_mig_instances_each_pinned_by_uuid():
    gpus = parse_gpus(QUERY, LISTING)
    assert [(g.device, g.memory_mb, g.free_mb) for g in gpus] == [
        ("gpu:0", 81559, 80100), ("gpu:1/mig:0", 40960, 40960), ("gpu:1/mig:1", 10240, 10240), ("gpu:2", 24576, 20000)]
    slots = plan_slots("1", available=gpus)
    assert [(s.device, s.env["CUDA_VISIBLE_DEVICES"]) for s in slots] == [
        ("gpu:1/mig:0", "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c9a0c22"),
        ("gpu:1/mig:1", "MIG-1a2b3c4d-1111-2222-3333-444455556666")]
    assert parse_gpus("1, 81559, 81000, Enabled\n", "GPU 1: A100 (UUID: GPU-x)\n") == []  # MIG on, no instance


def test_one_slot_per_gpu_grows_memory_and_gpus_can_be_chosen():
    slots = plan_slots("1", available=TWO_GPUS)
    assert [(s.device, s.env["CUDA_VISIBLE_DEVICES"], s.env["TF_FORCE_GPU_ALLOW_GROWTH"]) for s in slots] == [
        ("gpu:1", "1", "true")]


def test_a_gpu_that_does_not_exist_is_an_error_naming_it():
    with pytest.raises(SlotError, match="GPU 3 does not exist on this machine \\(found: 0,1\\)"):
        plan_slots("0,3", available=TWO_GPUS)
    with pytest.raises(SlotError, match="'zero'"):
        plan_slots("zero", available=TWO_GPUS)


def test_cpu_slots_split_the_cores_and_hide_gpus():
    slots = plan_slots(cores=8, available=[])
    assert len(slots) == 4 and {s.device for s in slots} == {"cpu"}
    assert {s.env["TF_NUM_INTRAOP_THREADS"] for s in slots} == {"2"} and {s.env["OMP_NUM_THREADS"] for s in slots} == {"2"}
    assert {s.env["CUDA_VISIBLE_DEVICES"] for s in slots} == {""}
    assert len(plan_slots(cores=1, available=[])) == 1  # at least one
    mixed = plan_slots("all", cpu_slots=1, cores=8, available=TWO_GPUS)
    assert [s.device for s in mixed] == ["gpu:0", "gpu:1", "cpu"]
    assert mixed[2].env["TF_NUM_INTRAOP_THREADS"] == "8"
    with pytest.raises(SlotError, match="no slots"):
        plan_slots("none", cpu_slots=0, available=TWO_GPUS)


def test_gpus_are_discovered_with_nvidia_smi_not_tensorflow(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, 24576, 20000, Disabled'\necho '1, 11264, 11000, [N/A]'\n")
    fake.chmod(0o755)
    monkeypatch.delenv("FITGAP_FAKE_GPUS", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert discover_gpus() == [Gpu(0, 24576, 20000), Gpu(1, 11264, 11000)]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert discover_gpus() == []  # no nvidia-smi: no GPU


def test_fake_gpus_from_the_environment(monkeypatch):
    monkeypatch.setenv("FITGAP_FAKE_GPUS", "0,1")
    monkeypatch.setenv("FITGAP_FAKE_GPU_MEMORY_MB", "1000")
    assert discover_gpus() == [Gpu(0, 1000), Gpu(1, 1000)]


def test_the_executor_reads_its_device_from_its_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pin_device() == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert pin_device() == "gpu:1"


def test_pruner_report_epochs():
    assert report_epochs(None, 100) == frozenset()
    assert sorted(report_epochs(MedianPruner(type="median", report_every=10), 50)) == [9, 19, 29, 39]
    assert len(report_epochs(MedianPruner(type="median"), 100)) == 9  # a tenth of the epochs by default
    rungs = report_epochs(SuccessiveHalvingPruner(type="successive_halving", min_resource=1, reduction_factor=3), 100)
    assert sorted(rungs) == [0, 2, 8, 26, 80]  # after 1, 3, 9, 27, 81 epochs
    assert report_epochs(HyperbandPruner(type="hyperband", min_resource=2, reduction_factor=2), 20) == {1, 3, 7, 15}
