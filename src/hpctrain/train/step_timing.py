"""Where each rank's training steps go: waiting for input, its own compute, the gradient
allreduce, and the rest, measured on every rank, every step, so a slow rank is named.

Three timestamps are taken inside the training graph (small Python functions ordered by
control dependencies) and two in Python around each step:

    batch begin (callback) -> train_step starts -> gradients ready -> allreduced -> batch end
    |------- input -------|------ compute -----|--- allreduce ---|---- other ----|

- input: the next batch (tf.data) plus the function call; large when the input is too slow.
- compute: forward and backward pass of this rank's batch: a straggler's is the largest.
- allreduce: from this rank's last gradient to the averaged gradients: transfer time not
  hidden behind the backward pass, plus the wait for slower ranks (a fast rank waits here).
- other: applying the update, metrics and the other callbacks.

The gradient timestamp does not hold the allreduce back (no control dependency on it), so
Horovod still overlaps communication with the backward pass. The first steps of every
`model.fit` (graph tracing) are left out. Every epoch the ranks' medians are allgathered;
the metrics row of the epoch gets them (`rank_steps`), identical on every rank.

`HPCTRAIN_TEST_SLOW_RANK=RANK:SECONDS[:RUNS]` (a test hook) makes that rank sleep inside
its compute every step: the straggler tests slow a rank on purpose with it, and the
job-system tests keep a job running until Slurm's signal reaches it. Only a job's first RUNS
runs are slowed (1 by default; a requeued job's SLURM_RESTART_COUNT counts them): the hook
paces a job up to the stops a test brings about, not the resumed run after the last one.
Imported only inside a rank, after TF_USE_LEGACY_KERAS=1 is set.
"""

from __future__ import annotations

import os
import statistics
import time

import horovod.tensorflow as hvd_tf
import numpy as np
import tensorflow as tf

from hpctrain.environment import JobEnvironment

PARTS = ("input_s", "compute_s", "allreduce_s", "other_s")
SKIP_STEPS = 3  # steps at the start of each fit() call: tracing, first allocations
# Every SAMPLE_EVERY-th step is timed: the three in-graph marks are Python functions, and
# on every step they cost 6-8 % of the CNN's step rate (results/benchmarks, trainer
# overhead); one step in 10 still gives ~47 samples per rank per Fashion-MNIST epoch.
SAMPLE_EVERY = 10
SLOW_RANK_ENV = "HPCTRAIN_TEST_SLOW_RANK"


def slow_rank_hook(rank: int) -> float:
    """Seconds this rank sleeps per step under the test hook (0.0: not slowed)."""
    value = os.environ.get(SLOW_RANK_ENV, "")
    if not value:
        return 0.0
    who, seconds, runs = (value.split(":") + ["", ""])[:3]
    if JobEnvironment.detect().restart_count >= int(runs or 1):
        return 0.0
    return float(seconds or 0.05) if int(who) == rank else 0.0


class StepClock(tf.keras.callbacks.Callback):
    """Install with `clock.instrument(model, optimizer)` before `model.compile`'s first
    step, add as the LAST callback (its batch-begin then follows the other callbacks')."""

    def __init__(self, rank: int, node: str):
        super().__init__()
        self.rank, self.node = rank, node
        # train_step start, gradients ready, gradients allreduced: Unix time in seconds
        self.marks = [0.0, 0.0, 0.0]
        self.sleep_s = slow_rank_hook(rank)
        # the test hook slows every step of one rank: then every rank times every step, so a
        # rank's median never rests on the one or two samples of a short run's
        self.every = 1 if os.environ.get(SLOW_RANK_ENV) else SAMPLE_EVERY
        self.count: tf.Variable | None = None  # steps run, in the graph
        self.allreduces = True  # False: one rank without Horovod's optimizer
        self.steps: list[tuple[float, ...]] = []
        self.begin = 0.0
        self.seen = 0  # steps since the last fit() began

    # ---- the graph side ------------------------------------------------------------------
    def _mark(self, index: int, tensors: list, sampled: tf.Tensor) -> tf.Tensor:
        """A graph op that stores the time once `tensors` are computed. They are its data
        inputs (one element of each): a control dependency on the outputs of Horovod's
        allreduce (a nested tf.function) does not wait for it; a data dependency does.
        A Python function, not tf.timestamp: op determinism (our default) refuses Timestamp."""
        marks = self.marks
        sleep_s = self.sleep_s if index == 0 else 0.0

        def stamp(_probe):
            marks[index] = time.time()
            if sleep_s:  # the test hook: this rank computes slowly (after the stamp)
                time.sleep(sleep_s)
            return np.float64(marks[index])

        probe = tf.concat([tf.cast(tf.reshape(getattr(t, "values", t), [-1])[:1], tf.float32)
                           for t in tensors if t is not None], axis=0)
        return tf.cond(sampled, lambda: tf.py_function(stamp, [probe], tf.float64,
                                                       name=f"hpctrain_mark{index}"),
                       lambda: tf.constant(0.0, tf.float64))

    def instrument(self, model, optimizer) -> None:
        """Timestamp the start of `model.train_step` and Horovod's gradient allreduce (on one
        rank, without Horovod's optimizer, the start of `apply_gradients`: allreduce 0). All
        are instance attributes, so Keras' train function and the optimizers call them like
        the methods they replace."""
        train_step = model.train_step
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="hpctrain_steps")
        count, every = self.count, self.every
        sampled: dict = {}

        def timed_train_step(data):
            sampled["now"] = tf.equal(count.assign_add(1) % every, 0)
            start = self._mark(0, tf.nest.flatten(data), sampled["now"])
            with tf.control_dependencies([start]):
                data = tf.nest.map_structure(tf.identity, data)
            return train_step(data)

        model.train_step = timed_train_step
        allreduce = getattr(optimizer, "_allreduce", None)  # Horovod's DistributedOptimizer
        if allreduce is None:  # one rank, a plain optimizer: nothing to allreduce
            apply = optimizer.apply_gradients

            def timed_apply(grads_and_vars, *args, **kwargs):
                grads, variables = zip(*grads_and_vars, strict=True)
                ready = self._mark(1, list(grads), sampled["now"])
                with tf.control_dependencies([ready]):
                    marked = [None if g is None else tf.identity(g) for g in grads]
                return apply(list(zip(marked, variables, strict=True)), *args, **kwargs)

            optimizer.apply_gradients = timed_apply
            self.allreduces = False
            return

        def timed_allreduce(grads, variables):
            ready = self._mark(1, list(grads), sampled["now"])
            reduced = allreduce(grads, variables)
            with tf.control_dependencies([ready]):
                done = self._mark(2, list(reduced), sampled["now"])
            with tf.control_dependencies([done]):
                return [None if g is None else tf.identity(g) for g in reduced]

        optimizer._allreduce = timed_allreduce

    # ---- the Python side -----------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self.seen = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.steps = []

    def on_train_batch_begin(self, batch, logs=None):
        self.begin = time.time()

    def on_train_batch_end(self, batch, logs=None):
        end = time.time()
        self.seen += 1
        if self.seen <= SKIP_STEPS:
            return
        start, ready, reduced = self.marks
        if not self.allreduces:
            reduced = ready
        if not self.begin <= start <= ready <= reduced <= end:
            return  # a step without Horovod's allreduce (e.g. accumulating gradients)
        self.steps.append((start - self.begin, ready - start, reduced - ready, end - reduced))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or logs.get("interrupted_at_step"):
            return
        mine = summarize_steps(self.steps, self.rank, self.node)
        # Horovod: every rank's medians, so rank 0 can name a slow one
        logs["rank_steps"] = hvd_tf.allgather_object(mine, name="hpctrain_rank_steps")


def summarize_steps(steps: list[tuple[float, ...]], rank: int, node: str) -> dict:
    """Per part over an epoch's timed steps: the median (robust: straggler detection) and
    the mean (the parts' means add up to the mean step, which throughput is made of)."""
    out: dict = {"rank": rank, "node": node, "steps": len(steps)}
    keys = [*PARTS, "step_s"]
    if not steps:
        return {**out, **{k: None for k in keys}, "mean": {k: None for k in keys},
                "step_p90_s": None}
    arr = np.asarray(steps)
    arr = np.column_stack([arr, arr.sum(axis=1)])
    out.update({k: float(statistics.median(arr[:, i])) for i, k in enumerate(keys)})
    out["mean"] = {k: float(arr[:, i].mean()) for i, k in enumerate(keys)}
    out["step_p90_s"] = float(np.percentile(arr[:, -1], 90))
    return out
