"""Executors: processes that train trials and never touch storage.

`ExecutorProcess` is the coordinator's handle on one; `main` is the process itself (`python -m studies.executor`).
The process is started fresh (never forked from a coordinator holding connections and threads) with its slot's
environment, imports TensorFlow once, and trains the tasks it is sent until its input closes. It ignores SIGINT (the
coordinator handles Ctrl-C) and exits as soon as the coordinator's pipe closes, so no orphan keeps the cores busy.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from studies.protocol import (EPOCHS_EVERY_S, Batch, Decision, Epochs, Ready, Stop, TrialOutcome, TrialTask, receive,
                              send)
from studies.slots import Slot


class Died:
    """Posted by a handle's reader when its process's output ends."""

    def __init__(self, returncode: int | None):
        self.returncode = returncode


class ExecutorProcess:
    """One executor process on one slot. Messages from it are posted to `events` as (this handle, message): a slot's
    replaced executor can still post its last words (its `Died`) after the new one started."""

    def __init__(self, slot: Slot, events: queue.Queue, log_path: Path):
        self.slot = slot
        env = os.environ | dict(slot.env) | {"FITGAP_DEVICE": slot.device, "TF_CPP_MIN_LOG_LEVEL": "2"}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "studies.executor"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
        self._events = events
        threading.Thread(target=self._read, daemon=True, name=f"executor-{slot.index}").start()

    def _read(self) -> None:
        while (message := receive(self.process.stdout)) is not None:
            self._events.put((self, message))
        self._events.put((self, Died(self.process.wait())))

    def submit(self, *tasks: TrialTask) -> None:
        self._send(Batch(tasks))

    def stop(self, number: int, reason: str) -> None:
        self._send(Stop(number, reason))

    def decide(self, number: int, epoch: int, stop: bool) -> None:
        self._send(Decision(number, epoch, stop))

    def _send(self, message: Any) -> None:
        try:
            send(self.process.stdin, message)
        except (BrokenPipeError, ValueError):
            pass  # the process is gone; its reader reports that

    def close(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        try:
            self.process.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def pin_device(tf=None) -> str:
    """The device this process was pinned to by its environment; on a real GPU slot, check that it sees exactly
    that GPU and cap its memory when the card is shared (a logical device, before the first op)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not visible:
        return "cpu"
    if tf is None or "FITGAP_FAKE_GPUS" in os.environ:  # fake GPUs (tests): pinned by environment, run on CPU
        return f"gpu:{visible}"
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) != 1:
        raise SystemExit(f"slot pinned to GPU {visible} sees {len(gpus)} GPUs")
    memory = os.environ.get("FITGAP_GPU_MEMORY_MB")
    if memory:
        tf.config.set_logical_device_configuration(gpus[0], [tf.config.LogicalDeviceConfiguration(int(memory))])
    return f"gpu:{visible}"


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol owns the real stdout; anything TensorFlow or a user prints goes to stderr (the slot's log).
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stops: set[int] = set()  # trials the coordinator asked to end after their current epoch
    decided: dict[int, int] = {}  # trial -> last epoch the coordinator decided on
    answered = threading.Condition()
    batches: queue.Queue = queue.Queue()

    def read_input() -> None:
        while (message := receive(sys.stdin.buffer)) is not None:
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

    from studies.keras.datasets import load_dataset

    device = pin_device(tf)
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
        current = {task.number: task for task in batch.tasks}
        try:
            outcomes = train_batch(list(batch.tasks), data_of(batch.tasks[0]), on_epoch)
        except Exception as e:  # the trainers report their own failures; this is the last resort
            outcomes = [TrialOutcome(task.number, "FAIL", reason=f"{type(e).__name__}: {e}",
                                     traceback=traceback.format_exc()) for task in batch.tasks]
        send_epochs()
        for outcome in outcomes:
            send(out, outcome)


def train_batch(tasks: list[TrialTask], data, on_epoch) -> list[TrialOutcome]:
    """A fused batch trains as one graph; otherwise each task trains alone with its executor."""
    if tasks[0].executor == "fused":
        from studies.keras.fused import train_fused

        return train_fused(tasks, data, on_epoch)
    if tasks[0].executor == "compiled":
        from studies.keras.compiled import train_compiled as train
    else:
        from studies.keras.train import train
    return [train(task, data, on_epoch) for task in tasks]


if __name__ == "__main__":
    main()
