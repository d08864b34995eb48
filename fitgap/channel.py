"""The one channel between fitgap and its child processes (executors, the tracking process, the plotting process):
length-prefixed pickles on the child's stdin and on a private copy of its stdout.

Parent side: `Child` starts ``python -P -m MODULE`` (``-P``: the working directory is not on the child's path, so a
user's `tracking.py` or `sweeps/` there cannot shadow anything), writes messages from a feeder thread (a message may
be larger than a pipe's buffer, and the parent must never wait for a busy child), and reads the child's messages on
a reader thread, handing each to `on_message`, then the exit code to `on_exit` once the stream ends.
Child side: `child_ends()` gives the input stream and the private output; from then on the process's stdout is its
stderr, so whatever a library prints cannot corrupt the stream.

Both ends are fitgap processes started by this code for one user; nothing else writes these pipes, so pickle is safe.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from typing import Any, BinaryIO, Callable, Mapping

_HEADER = struct.Struct("!I")


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def send(stream: BinaryIO, message: Any) -> None:
    stream.write(frame(message))
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    """The next message, or None at the end of the stream (a cut-off message is an end too)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def child_ends() -> tuple[BinaryIO, BinaryIO]:
    """In a child process: (its input, its private output). Call it first, before anything can print."""
    output = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return sys.stdin.buffer, output


class Child:
    """A fitgap child process and the two threads that talk to it."""

    def __init__(self, module: str, on_message: Callable[[Any], None], on_exit: Callable[[int], None], *,
                 env: Mapping[str, str] | None = None, stderr: Any = None, name: str = "fitgap-child"):
        self.process = subprocess.Popen([sys.executable, "-P", "-m", module], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=stderr, env=env)
        self._outbox: queue.Queue = queue.Queue()
        self._on_message, self._on_exit = on_message, on_exit
        threading.Thread(target=self._feed, daemon=True, name=f"{name}-feed").start()
        threading.Thread(target=self._read, daemon=True, name=f"{name}-read").start()

    def send(self, message: Any) -> None:
        """Queue a message (pickled now: the child gets it as it is at this call)."""
        self._outbox.put(frame(message))

    def close_input(self) -> None:
        """The child's input ends once what was sent before is written: that is its signal to finish."""
        self._outbox.put(None)

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; a child still running after `timeout` seconds is killed."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait()

    def kill(self) -> None:
        self.process.kill()

    def _feed(self) -> None:
        stdin = self.process.stdin
        while (data := self._outbox.get()) is not None:
            try:
                stdin.write(data)
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                break  # the child is gone: the reader reports its exit
        try:
            stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def _read(self) -> None:
        while True:
            try:
                message = receive(self.process.stdout)
            except Exception:  # its output cannot be read any more: stop it, and say so through on_exit
                self.kill()
                break
            if message is None:
                break
            self._on_message(message)
        self._on_exit(self.process.wait())
