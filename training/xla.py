"""TensorFlow side: whether an epoch graph runs under XLA, decided by measuring it (`EpochFunction`).

XLA (`jit_compile`) makes the course's small networks' epochs several times faster, and on CPU an MNIST-sized MLP's
epoch ~75x and a 64x64 CNN's ~40x slower (`bench/real_sizes.py`); where the line falls depends on the device and the
model, so no rule of thumb is trusted with it. Each graph measures instead, on its first trial's own epochs: its
first call (which traces and pays one-time costs) runs without XLA, its second runs without XLA and is timed. An
epoch longer than `TRY_BELOW_S` stays without XLA (XLA is not tried: a slow XLA epoch can cost ~100x a plain one).
A shorter one is then compiled and timed with XLA, on the same arguments (those results are discarded: the
function is pure), and XLA is kept from the next epoch on, for every trial of that graph in this process, when at
least `MARGIN` faster. The trial that measured mixes the two modes (its first two epochs without), within the
parity tests' tolerance like any XLA trial; a trial's numbers therefore depend, by rounding, on the machine and on
what ran before it: `FITGAP_XLA=off` is the setting for reruns that must agree bit for bit.

Never under XLA: graphs whose training it would not reproduce (`blocker`): dropout (other random numbers for the
same seed), batch normalization and convolutions (another summation order, which Adam and L2 amplify: a CNN drifted
7.8e-3 in training loss from keras by epoch 7).

`FITGAP_XLA` = auto (default) | on | off overrides the measurement: off reproduces the keras executor's arithmetic
bit for bit (a rerun on another machine gives the same numbers), on compiles every graph XLA allows.
"""

from __future__ import annotations

import time
from typing import Callable

import tensorflow as tf

from fitgap.studies.choice import xla_mode

TRY_BELOW_S = 0.05  # a plain epoch longer than this: XLA is not tried (its probe could cost ~100x that)
MARGIN = 1.2  # XLA's epoch must be this much faster to be kept: a close call keeps the keras arithmetic

class EpochFunction:
    """A pure function of tensors, called through a concrete graph: with XLA or without (see the module docstring).
    Call `start()` as each trial (or fused batch) starts; `reason` then says, for its record, which mode it trained
    in and why."""

    def __init__(self, function: Callable, blocker: str | None = None):
        self.function = function
        self._plain = self._xla = None  # concrete functions, traced when first needed
        self._plain_calls = 0
        chosen = xla_mode()
        self.xla: bool | None = None  # None: not measured yet
        self.decision = ""
        if blocker or chosen == "off":
            self.xla, self.decision = False, f"no XLA: {blocker or 'FITGAP_XLA=off'}"
        elif chosen == "on":
            self.xla, self.decision = True, "XLA: FITGAP_XLA=on"
        self.start()

    def start(self) -> None:
        self._measuring = self.xla is None
        self._calls = 0  # this trial's epochs so far

    @property
    def reason(self) -> str:
        if not self._measuring:
            return self.decision
        if not self.decision:
            return "no XLA (not measured yet)"
        first = f"XLA from its epoch {self._decided_at}" if self.xla else "no XLA"
        return f"{first} (this trial measured: {self.decision})"

    def __call__(self, *args):
        self._calls += 1
        if self.xla:
            return self._concrete(True, args)(*args)
        plain = self._concrete(False, args)
        if self.xla is not None:
            return plain(*args)
        self._plain_calls += 1
        if self._plain_calls == 1:  # a graph's first call traces and pays one-time costs: not a measurement
            return plain(*args)
        result, plain_s = _timed(plain, args)
        self._decide(plain_s, args)
        self._decided_at = self._calls  # the epoch after this one: epochs count from 0
        return result

    def _concrete(self, xla: bool, args):
        if xla:
            self._xla = self._xla or tf.function(self.function, jit_compile=True).get_concrete_function(*args)
            return self._xla
        self._plain = self._plain or tf.function(self.function).get_concrete_function(*args)
        return self._plain

    def _decide(self, plain_s: float, args) -> None:
        """From a warm plain epoch's time: XLA or not for the trials that start from now on."""
        if plain_s > TRY_BELOW_S:
            self.xla, self.decision = False, f"no XLA: an epoch takes {_ms(plain_s)} without"
            return
        xla = self._concrete(True, args)
        _timed(xla, args)  # compiles; the results of XLA's probing calls are discarded (the function is pure)
        _, xla_s = _timed(xla, args)
        self.xla = xla_s * MARGIN <= plain_s
        self.decision = f"{'XLA' if self.xla else 'no XLA'}: an epoch took {_ms(xla_s)} with, {_ms(plain_s)} without"
        if not self.xla:
            self._xla = None  # let its compiled program go


def _timed(call, args) -> tuple:
    """The call's result and its seconds, until the graph has finished (its last output read back)."""
    began = time.perf_counter()
    result = call(*args)
    tf.nest.map_structure(lambda t: t.numpy(), result[-1])
    return result, time.perf_counter() - began


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms"
