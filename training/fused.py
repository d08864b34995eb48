"""TensorFlow side: the fused executor, K mlp trials of one fuse group trained together in one graph, their weights
stacked on a leading trial axis.

Contract: `train_batch(tasks, data, on_epoch)` trains one fuse group (`fitgap.studies.choice.fuse_group_key`: equal
for every task, never None; `choice.take_batch` makes such batches) and returns one outcome per task, in order;
any other batch is a ValueError. Records, states and reasons are those the reference executor gives each member
alone: every member goes through the trial core (`core.start_trial`, `core.EpochRule`, the outcomes), and
`on_epoch(record)` gets every member's records (`record.trial` says whose), each member's epochs in order.

A member's Keras model is not built (`core.start_trial(built=False)`): its layers' initializers give its initial
weights (its own seed), and its decision boundary comes from the batch's graph, all members at once; only a member
whose model is saved has it built, at its end, to hold its final weights. Each member visits its own
`steps.batch_order` (reshuffled or not: `shuffle`) and reads its own per-step rate from `steps.step_table`. In the
graph a Dense layer is a batched matmul over the trial axis. Per member, as tensors: learning rate, decay,
regularizer weights (l1, l2 — so any regularizer type), optimizer hyperparameters (sgdm's `momentum_form` among
them) and optimizer state (from its own start: adagrad's `initial_accumulator`), leaky_alpha; per member, by
selection among the kinds present in the batch (`tf.where` on a trial mask): activation, loss (with its
output activation and task metrics). Narrower hidden layers are zero-padded to the batch's widest and their padding
is masked to zero after the activation, so padded units neither compute nor learn. A member without biases
(`use_bias: false`) has its biases at zero and frozen, which adds exact zeros: it trains as its bias-free model.

A member that stops (pruned, failed, early-stopped) is frozen by a per-trial mask: its weights and optimizer state no
longer change, its later measurements are ignored, and the others go on unchanged (nothing mixes across the trial
axis). Traced once per batch composition (K, widths, the activations and losses present): later batches of the same
composition only call. Whether under XLA is measured by the first batch (`fitgap.training.xla`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from fitgap.studies.choice import fuse_group_key
from fitgap.studies.messages import TrialOutcome, TrialTask
from fitgap.sweeps.vocabulary import DEFAULT_LOSS
from fitgap.tracking.records import EpochRecord
from fitgap.training.artifacts import boundary_inputs, wants_boundary
from fitgap.training.core import EpochRule, TrialStart, failed_outcome, start_trial, trained_outcome
from fitgap.training.heads import HEADS, TASK_MEASURES, Head
from fitgap.training.optimizers import (
    OPTIMIZER_RULES, along, initial_slots, optimizer_hyperparameters, penalty, regularizer_weights,
)
from fitgap.training.parts import param
from fitgap.training.steps import batch_order, step_table
from fitgap.training.xla import EpochFunction

EXECUTOR = "fused"
_GRAPHS: dict[tuple, "_Graphs"] = {}
_MAX_GRAPHS = 8


def train_batch(tasks: Sequence[TrialTask], data, on_epoch: Callable[[EpochRecord], bool]) -> list[TrialOutcome]:
    """Train one fuse group together; one outcome per task, in their order (see the module docstring)."""
    numbers = [task.number for task in tasks]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"a fused batch holds one training per trial, but got trial numbers {numbers}")
    keys = {fuse_group_key(task.params) for task in tasks}
    if len(keys) != 1 or None in keys:
        raise ValueError(f"a fused batch is one fuse group (choice.fuse_group_key), but got the keys "
                         f"{sorted(keys, key=repr)}")
    outcomes = _train_group(list(tasks), data, on_epoch)
    return [outcomes[number] for number in numbers]


@dataclass(eq=False)
class _Member:
    task: TrialTask
    start: TrialStart
    rule: EpochRule | None = None
    outcome: TrialOutcome | None = None


def _train_group(tasks: list[TrialTask], data, on_epoch) -> dict[int, TrialOutcome]:
    outcomes: dict[int, TrialOutcome] = {}
    members: list[_Member] = []
    keras.backend.clear_session()  # once for the batch (its members skip it), with one garbage collection
    for task in tasks:
        try:
            members.append(_Member(task, start_trial(task, data, collect_garbage=False, built=False)))
        except Exception as error:  # a member that cannot be built fails alone
            outcomes[task.number] = failed_outcome(task, error, EXECUTOR)
    if members:
        try:
            _Batch(members, data).run(on_epoch)
        except Exception as error:  # the batch itself broke: every member not yet finished fails with it
            for m in members:
                m.outcome = m.outcome or failed_outcome(m.task, error, EXECUTOR, m.start)
        outcomes.update({m.task.number: m.outcome for m in members})
    return outcomes


def _loss_kind(params: Mapping[str, Any], task: str) -> tuple:
    """A loss as the graph sees it: its name, and the constants baked into its Keras object."""
    loss = params.get("loss", DEFAULT_LOSS[task])
    return (loss, float(param(params, "cost")), float(param(params, "profit"))) if loss == "asymmetric" else (loss,)


@dataclass(frozen=True)
class _Plan:
    """What one fused graph is traced for (the `_GRAPHS` key). A graph serves any batch it `fits`: fewer members
    (the rest are padding, frozen from the start), narrower hidden layers (masked), fewer activations and losses."""

    shape: tuple  # task, optimizer, batch size, training rows, validation rows, inputs, outputs: must be equal
    k: int
    hidden: tuple[int, ...]  # widths
    activations: tuple[str, ...]
    losses: tuple[tuple, ...]

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.shape[5], *self.hidden, self.shape[6])

    def same_kind(self, other: "_Plan") -> bool:
        return self.shape == other.shape and len(self.hidden) == len(other.hidden)

    def fits(self, other: "_Plan") -> bool:
        return (self.same_kind(other) and self.k >= other.k and all(map(int.__ge__, self.hidden, other.hidden))
                and set(other.activations) <= set(self.activations) and set(other.losses) <= set(self.losses))

    def union(self, other: "_Plan") -> "_Plan":
        return _Plan(self.shape, max(self.k, other.k), tuple(map(max, self.hidden, other.hidden)),
                     tuple(sorted({*self.activations, *other.activations})),
                     tuple(sorted({*self.losses, *other.losses})))


def _hidden_widths(member: _Member) -> list[int]:
    return [kernel.shape[1] for kernel, _ in member.start.initial[:-1]]


def _plan_of(members: list[_Member], data, x_train: np.ndarray, x_val: np.ndarray) -> _Plan:
    params = [m.task.params for m in members]
    first = params[0]
    hidden = [_hidden_widths(m) for m in members]
    return _Plan(
        shape=(data.task, param(first, "optimizer"), int(first["batch_size"]), len(x_train), len(x_val),
               x_train.shape[1], members[0].start.units),
        k=len(members),
        hidden=tuple(max(widths[layer] for widths in hidden) for layer in range(len(hidden[0]))),
        activations=tuple(sorted({param(p, "activation") for p in params})),
        losses=tuple(sorted({_loss_kind(p, data.task) for p in params})),
    )


class _Batch:
    """One fused batch: its members' stacked state, trained epoch by epoch in the graph of a fitting `_Plan`."""

    def __init__(self, members: list[_Member], data):
        self.members, self.data = members, data
        first, start = members[0].task.params, members[0].start
        self.epochs, self.batch_size = int(first["epochs"]), int(first["batch_size"])
        self.x_train, self.x_val, self.x_test = (None if x is None else x.reshape(len(x), -1)  # Flatten, as Keras
                                                 for x in (start.x_train, start.x_val, start.x_test))
        self.n = len(self.x_train)
        self.steps = math.ceil(self.n / self.batch_size)
        self.graphs = _graphs_for(_plan_of(members, data, self.x_train, self.x_val))
        self.plan = plan = self.graphs.plan
        padded = [m.task.params for m in members] + [first] * (plan.k - len(members))  # padding: frozen copies
        self.weights = [tf.constant(w) for w in _stacked([m.start for m in members], plan.widths, plan.k)]
        optimizer = OPTIMIZER_RULES[param(first, "optimizer")]
        starts = initial_slots(optimizer, [w.numpy() for w in self.weights], padded)
        self.slots = [[tf.constant(s) for s in per] for per in starts]
        self.masks = [tf.constant(mask) for mask in _masks(members, plan)]
        self.hyper = self._per_trial(padded)
        self.active = np.arange(plan.k) < len(members)  # padding never trains
        self.biased = [bool(param(p, "use_bias")) for p in padded]
        self.rates = np.stack([step_table(p, self.steps, self.epochs) for p in padded])  # (K, steps * epochs)
        self.data_tensors = tuple(tf.constant(a) for a in (self.x_train, data.y_train, self.x_val, data.y_val))
        self._current: list[np.ndarray] | None = None

    def _per_trial(self, params: list[Mapping[str, Any]]) -> dict[str, tf.Tensor]:
        def vector(values, dtype=tf.float32):
            return tf.constant(np.array(values), dtype)

        regularizers = [regularizer_weights(p) for p in params]
        optimizer = [optimizer_hyperparameters(p) for p in params]
        hyper = {name: vector([o[name] for o in optimizer]) for name in optimizer[0]}
        hyper["l1"], hyper["l2"] = vector([r[0] for r in regularizers]), vector([r[1] for r in regularizers])
        hyper["leaky_alpha"] = vector([float(param(p, "leaky_alpha")) for p in params])
        hyper["use_bias"] = vector([bool(param(p, "use_bias")) for p in params], tf.bool)
        hyper["activation"] = vector([[param(p, "activation") == a for p in params] for a in self.plan.activations],
                                     tf.bool)
        hyper["loss"] = vector([[_loss_kind(p, self.data.task) == c for p in params] for c in self.plan.losses],
                               tf.bool)
        return hyper

    def member_weights(self, index: int) -> list[np.ndarray]:
        """One member's (padded) weights now: what the best epoch keeps."""
        if self._current is None:
            self._current = [w.numpy() for w in self.weights]
        return [w[index].copy() for w in self._current]

    def run(self, on_epoch: Callable[[EpochRecord], bool]) -> None:
        self.graphs.epoch.start()
        for i, m in enumerate(self.members):
            m.rule = EpochRule(m.task, self.data.task, self.steps, on_epoch, lambda i=i: self.member_weights(i))
        active, n, steps = self.active, self.n, self.steps
        padding = [np.arange(n)] * (self.plan.k - len(self.members))
        for epoch in range(self.epochs):
            orders = np.stack([batch_order(m.task.seed, epoch, n, param(m.task.params, "shuffle"))
                               for m in self.members] + padding).astype(np.int32)
            rates = self.rates[:, epoch * steps:(epoch + 1) * steps].T
            self.weights, self.slots, measured = self.graphs.epoch(
                self.weights, self.slots, self.hyper, self.masks, tf.constant(active), tf.constant(orders),
                tf.constant(np.ascontiguousarray(rates)), tf.constant(epoch * steps, tf.int64), *self.data_tensors)
            self._current = None
            rows = measured.numpy().tolist()
            for i, m in enumerate(self.members):
                if active[i]:
                    active[i] = not self._after(m, epoch, rows[i])
            if not active.any():
                break
        self._finish()

    def _after(self, m: _Member, epoch: int, measured: list[float]) -> bool:
        """One member's epoch: True once it stops. An exception (from `on_epoch`, say) fails that member alone."""
        try:
            return m.rule.after(epoch, measured)
        except Exception as error:
            m.outcome = failed_outcome(m.task, error, EXECUTOR, m.start)
            return True

    def _finish(self) -> None:
        complete = [m.outcome is None and m.rule.state == "COMPLETE" for m in self.members]
        final = [m.rule.final_weights(self.member_weights(i)) if ok else None  # early stopping's best, else last
                 for i, (m, ok) in enumerate(zip(self.members, complete))]
        tested = self._test_values(final) if self.x_test is not None and any(complete) else []
        boundaries = self._boundaries(final) if any(complete) else None
        for i, (m, weights) in enumerate(zip(self.members, final)):
            if m.outcome is not None:
                continue
            try:
                outcome = trained_outcome(m.task, self.data, m.start, m.rule, EXECUTOR,
                                          lambda x, y, i=i: tested[i], self._as_model(i, weights),
                                          boundaries and (lambda x, i=i: boundaries(i)))
                m.outcome = dataclasses.replace(outcome, executor_reason=self.graphs.epoch.reason)
            except Exception as error:  # its artifacts: that member alone fails
                m.outcome = failed_outcome(m.task, error, EXECUTOR, m.start)

    def _as_model(self, index: int, weights: list[np.ndarray] | None) -> list[np.ndarray] | None:
        """A member's (padded) kernels and biases in its own model's variables: a bias-free member has no biases."""
        return weights if weights is None or self.biased[index] else weights[0::2]

    def _test_values(self, final: list[list[np.ndarray] | None]) -> list[list[float]]:
        """Every member's measures on the test set, with its final weights (a stopped one's: its last); one call."""
        return self.graphs.test(self._stacked_final(final), self.hyper, self.masks, tf.constant(self.x_test),
                                tf.constant(self.data.y_test)).numpy().tolist()

    def _boundaries(self, final: list[list[np.ndarray] | None]) -> Callable[[int], np.ndarray] | None:
        """member -> its P(y = 1) on the decision boundary's grid, with its final weights, computed for all members
        at once in chunks of rows that keep their hidden activations within ~64 MB; None when the data has no
        boundary. A failure is each member's to report (its boundary.npz.error.txt), not the batch's."""
        params = self.members[0].task.params  # `standardize`, the only param the grid reads, is the fuse group's
        if not wants_boundary(params, self.data):
            return None
        try:
            inputs, weights = boundary_inputs(params, self.data), self._stacked_final(final)
            rows = max(1, 2 ** 24 // (self.plan.k * max(self.plan.widths)))
            chunks = [self.graphs.probability(weights, self.hyper, self.masks, tf.constant(inputs[i:i + rows]))
                      for i in range(0, len(inputs), rows)]
            probabilities = np.concatenate([chunk.numpy() for chunk in chunks], axis=1)
        except Exception as error:  # noqa: BLE001
            failure = error

            def failed(index: int) -> np.ndarray:
                raise failure

            return failed
        return lambda index: probabilities[index]

    def _stacked_final(self, final: list[list[np.ndarray] | None]) -> list[tf.Tensor]:
        """The members' final weights stacked (a stopped one's: its last; padding's: its own)."""
        chosen = [w if w is not None else self.member_weights(i) for i, w in enumerate(final)]
        chosen += [self.member_weights(i) for i in range(len(self.members), self.plan.k)]
        return [tf.constant(np.stack(ws)) for ws in zip(*chosen)]


def _masks(members: list[_Member], plan: _Plan) -> list[np.ndarray]:
    """Per hidden layer, [K, width]: 1 on a member's own units, 0 on padding (all of a padding member's)."""
    masks = [np.zeros((plan.k, width), np.float32) for width in plan.hidden]
    for i, m in enumerate(members):
        for mask, width in zip(masks, _hidden_widths(m)):
            mask[i, :width] = 1
    return masks


def _stacked(starts: list[TrialStart], widths: tuple[int, ...], k: int) -> list[np.ndarray]:
    """Every member's kernels and biases (zeros for a member without), zero-padded to `widths` and stacked (k rows;
    the rows after the members' are padding): kernel, bias per layer."""
    stacked = []
    for layer in range(len(widths) - 1):
        kernels = np.zeros((k, widths[layer], widths[layer + 1]), np.float32)
        biases = np.zeros((k, widths[layer + 1]), np.float32)
        for i, s in enumerate(starts):
            kernel, bias = s.initial[layer]
            kernels[i, :kernel.shape[0], :kernel.shape[1]] = kernel
            if bias is not None:
                biases[i, :kernel.shape[1]] = bias
        stacked += [kernels, biases]
    return stacked


def _graphs_for(needed: _Plan) -> "_Graphs":
    """A cached graph that fits, else a new one for everything this batch and the cached graphs of its shape need:
    a study's batches soon share one graph (its activations, losses, widest layers and largest K)."""
    for plan, graphs in _GRAPHS.items():
        if plan.fits(needed):
            return graphs
    plan = needed
    for cached in [p for p in _GRAPHS if p.same_kind(needed)]:
        plan = cached.union(plan)
        del _GRAPHS[cached]  # superseded by the wider graph
    if len(_GRAPHS) >= _MAX_GRAPHS:
        del _GRAPHS[next(iter(_GRAPHS))]  # oldest first
    graphs = _GRAPHS[plan] = _Graphs(plan)
    return graphs


class _Graphs:
    """The compiled epoch and test functions of one `_Plan`. Every value is [K, ...]: row k is member k."""

    def __init__(self, plan: _Plan):
        self.plan, self.task, self.units = plan, plan.shape[0], plan.widths[-1]
        heads = [HEADS[self.task, kind[0]] for kind in plan.losses]  # a kind is its loss's name and constants
        self.losses = [(head, head.loss(dict(zip(("loss", "cost", "profit"), kind))))
                       for head, kind in zip(heads, plan.losses)]
        self.rule = OPTIMIZER_RULES[plan.shape[1]]
        self.activations = [_leaky if name == "leaky_relu" else _keras_activation(name) for name in plan.activations]
        self.epoch = EpochFunction(self._train_epoch)
        self.test = tf.function(self._measure_one)  # once per batch: not worth a compile
        self.probability = tf.function(self._probability)

    # -- the network ---------------------------------------------------------------------------------------------------

    def _logits(self, weights, hyper, masks, x):
        """x: [K, rows, in] (each member its own rows) or [1, rows, in] (the same rows for all) -> [K, rows, out]."""
        h = x
        for layer in range(len(self.plan.widths) - 1):
            z = tf.matmul(h, weights[2 * layer]) + weights[2 * layer + 1][:, None, :]  # Keras's Dense: matmul, add
            if layer == len(self.plan.widths) - 2:
                return z
            h = self._activate(z, hyper) * masks[layer][:, None, :]  # padded units: 0, so they neither feed nor learn

    def _activate(self, z, hyper):
        chosen = None
        for function, selected in zip(self.activations, tf.unstack(hyper["activation"])):
            value = function(z, hyper)
            chosen = value if chosen is None else tf.where(selected[:, None, None], value, chosen)
        return chosen

    def _select(self, per_kind: list[tf.Tensor], hyper) -> tf.Tensor:
        chosen = per_kind[0]
        for value, selected in zip(per_kind[1:], tf.unstack(hyper["loss"])[1:]):
            chosen = tf.where(along(selected, value), value, chosen)
        return chosen

    def _data_losses(self, logits, y, hyper) -> tf.Tensor:
        """Each member's data loss ([K]): its loss kind's Keras loss, reduced as Keras does (sum / size)."""
        per_kind = []
        for head, loss in self.losses:
            target = tf.one_hot(tf.cast(y, tf.int32), self.units) if head.one_hot else y
            values = loss.call(tf.cast(target, tf.float32), _output(head, logits))  # [K, rows]
            per_kind.append(tf.reduce_sum(values, axis=1) / tf.cast(tf.shape(values)[1], tf.float32))
        return self._select(per_kind, hyper)

    def _penalties(self, weights, hyper) -> list[tf.Tensor]:
        return [penalty(kernel, hyper["l1"], hyper["l2"], axes=[1, 2]) for kernel in weights[0::2]]

    # -- training ------------------------------------------------------------------------------------------------------

    def _step(self, weights, slots, hyper, masks, active, x, y, lr, step):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            data = self._data_losses(self._logits(weights, hyper, masks, x), y, hyper)
            totals = tf.reduce_sum(tf.stack([data, *self._penalties(weights, hyper)], axis=1), axis=1)
            total = tf.reduce_sum(totals)  # the members' gradients stay apart: d total / d w_k = d totals_k / d w_k
        gradients = tape.gradient(total, weights)
        new_weights, new_slots = [], []
        biased = tf.logical_and(active, hyper["use_bias"])  # a bias-free member's biases stay 0
        for index, (p, g, s) in enumerate(zip(weights, gradients, slots)):
            updated, kept = self.rule.update(p, g, s, along(lr, p), step, hyper)
            on = along(active if index % 2 == 0 else biased, p)  # a stopped member is frozen
            new_weights.append(tf.where(on, updated, p))
            new_slots.append([tf.where(on, a, b) for a, b in zip(kept, s)])
        return new_weights, new_slots

    def _train_epoch(self, weights, slots, hyper, masks, active, orders, rates, first_step,
                     x_train, y_train, x_val, y_val):
        size, n = self.plan.shape[2], self.plan.shape[3]
        full = n // size

        def batch(start, rows):
            chosen = orders[:, start:start + rows]  # [K, rows]: each member its own order
            return tf.gather(x_train, chosen), tf.gather(y_train, chosen)

        def body(i, weights, slots):
            x, y = batch(i * size, size)
            step = first_step + tf.cast(i, tf.int64)
            return (i + 1, *self._step(weights, slots, hyper, masks, active, x, y, rates[i], step))

        _, weights, slots = tf.while_loop(lambda i, *_: i < full, body, (tf.constant(0), weights, slots))
        if n % size:  # the last, partial batch: its own static shape
            x, y = batch(full * size, n % size)
            weights, slots = self._step(weights, slots, hyper, masks, active, x, y, rates[full], first_step + full)
        on_train = self._measure_one(weights, hyper, masks, x_train, y_train)
        on_val = self._measure_one(weights, hyper, masks, x_val, y_val)
        reg = tf.add_n(self._penalties(weights, hyper))
        return weights, slots, tf.concat([on_train, on_val, reg[:, None]], axis=1)

    def _measure_one(self, weights, hyper, masks, x, y):
        """[K, 1 + task metrics]: each member's data loss and task metrics on one whole set, in inference mode."""
        logits = self._logits(weights, hyper, masks, x[None])
        loss = self._data_losses(logits, tf.repeat(y[None], self.plan.k, axis=0), hyper)  # Keras wants equal ranks
        per_kind = []
        for head, _ in self.losses:
            output = _output(head, logits)
            per_kind.append(tf.vectorized_map(lambda o, head=head: tf.stack(TASK_MEASURES[self.task](head, o, y)),
                                              output))
        return tf.concat([loss[:, None], self._select(per_kind, hyper)], axis=1)

    def _probability(self, weights, hyper, masks, x):
        """[K, rows, units]: each member's P(y = 1) (its head's) on the same rows, as `heads.Head.probability`."""
        logits = self._logits(weights, hyper, masks, x[None])
        return self._select([head.probability(_output(head, logits)) for head, _ in self.losses], hyper)


def _output(head: Head, logits):
    """The output layer's activation (linear unless the head says softmax), as Keras's Dense applies it."""
    return keras.activations.get(head.activation)(logits) if head.activation else logits


def _keras_activation(name: str) -> Callable:
    function = keras.activations.get(name)
    return lambda z, hyper: function(z)


def _leaky(z, hyper):
    """`tf.nn.leaky_relu` (x > 0 ? x : x * alpha, and the same gradient), with each member's own alpha."""
    return tf.where(z > 0, z, z * hyper["leaky_alpha"][:, None, None])
