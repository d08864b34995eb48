"""TensorFlow side: the executor process (`python -P -m fitgap.training.process`), one per slot.

It is started fresh (never forked from a coordinator holding connections and threads) with its slot's environment,
imports TensorFlow once, says `Ready`, and trains the batches it is sent until its input closes: then it exits at
once, mid-trial or not, so that no orphan keeps the cores busy. It ignores SIGINT (Ctrl-C is the coordinator's). It
never touches storage: everything a trial produces goes back over `fitgap.channel` (`fitgap.studies.messages`).
"""

from __future__ import annotations

import gc
import os
import queue
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from fitgap.channel import child_ends, receive, send
from fitgap.studies.messages import EPOCHS_EVERY_S, Batch, Decision, Epochs, Ready, Stop, TrialOutcome, TrialTask


def pin_device(tf=None) -> str:
    """The device this process was pinned to by its environment (`fitgap.studies.slots`); on a real GPU slot, check
    that it sees exactly that GPU (or MIG instance) and cap its memory when the card is shared (a logical device,
    before the first op). With FITGAP_DETERMINISTIC, TensorFlow's ops are made deterministic (GPU kernels too)."""
    if tf is not None and os.environ.get("FITGAP_DETERMINISTIC"):
        tf.config.experimental.enable_op_determinism()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not visible:
        return "cpu"
    device = os.environ.get("FITGAP_DEVICE") or f"gpu:{visible}"
    if tf is None or "FITGAP_FAKE_GPUS" in os.environ:  # fake GPUs (tests): pinned by environment, run on CPU
        return device
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) != 1:
        raise SystemExit(f"slot pinned to {device} (CUDA_VISIBLE_DEVICES={visible}) sees {len(gpus)} GPUs")
    memory = os.environ.get("FITGAP_GPU_MEMORY_MB")
    if memory:
        tf.config.set_logical_device_configuration(gpus[0], [tf.config.LogicalDeviceConfiguration(int(memory))])
    return device


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox, out = child_ends()  # anything TensorFlow or a user prints goes to stderr (the slot's log)
    stops: set[int] = set()  # trials the coordinator asked to end after their current epoch
    decided: dict[int, int] = {}  # trial -> last epoch the coordinator decided on
    answered = threading.Condition()
    batches: queue.Queue = queue.Queue()

    def read_input() -> None:
        while (message := receive(inbox)) is not None:
            if isinstance(message, (Stop, Decision)):
                with answered:
                    if isinstance(message, Decision):
                        decided[message.number] = message.epoch
                    if isinstance(message, Stop) or message.stop:
                        stops.add(message.number)
                    answered.notify_all()
            else:
                batches.put(message)
        os._exit(0)  # the coordinator is gone or done: stop at once, mid-trial or not

    import tensorflow as tf

    from fitgap.data.datasets import load_dataset
    from fitgap.training import compiled, fused, reference

    trainers = {"keras": reference.train_batch, "compiled": compiled.train_batch, "fused": fused.train_batch}
    device = pin_device(tf)
    _freeze_imported_objects()
    threading.Thread(target=read_input, daemon=True).start()
    send(out, Ready(os.getpid(), device))
    datasets: dict[str, Any] = {}
    current: dict[int, TrialTask] = {}

    epochs: list = []  # records not sent yet
    sent_at = time.monotonic()

    def send_epochs() -> None:
        nonlocal sent_at
        if epochs:
            send(out, Epochs(tuple(epochs)))
            epochs.clear()
        sent_at = time.monotonic()

    def on_epoch(record) -> bool:
        epochs.append(record)
        task = current[record.trial]
        decide = record.epoch in task.decide_at
        if decide or time.monotonic() - sent_at >= EPOCHS_EVERY_S:
            send_epochs()
        if decide:  # wait for the pruner: the same epochs decide on every run
            with answered:
                answered.wait_for(lambda: task.number in stops or decided.get(task.number, -1) >= record.epoch)
        return task.number in stops

    def data_of(task: TrialTask):
        key = repr((sorted(task.dataset.items()), task.data_dir))
        if key not in datasets:
            datasets[key] = load_dataset(task.dataset, Path(task.data_dir))
        return datasets[key]

    while True:
        batch: Batch = batches.get()
        tasks = list(batch.tasks)
        current = {task.number: task for task in tasks}
        try:
            outcomes = trainers[tasks[0].executor](tasks, data_of(tasks[0]), on_epoch)
        except Exception as e:  # the trainers report their own failures; this is the last resort
            outcomes = [TrialOutcome(task.number, "FAIL", reason=f"{type(e).__name__}: {e}",
                                     traceback=traceback.format_exc()) for task in tasks]
        send_epochs()
        for outcome in outcomes:
            send(out, outcome)


def _freeze_imported_objects() -> None:
    """Move the ~400k objects importing TensorFlow created out of the garbage collector's sight.

    `clear_session()` runs a full `gc.collect()` and Python runs its own full collections during training; each one
    walked all of TensorFlow's long-lived objects: ~145 ms per trial, a third of a small trial. Frozen objects are never
    collected, which costs nothing for module-level objects that live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    main()
