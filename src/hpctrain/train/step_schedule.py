"""The per-step work of the learning-rate schedule and of the dropout seeds, done inside the
training step instead of in Python callbacks.

Before every step the rate must follow `optim.lr_multiplier` (linear scaling, warm-up,
schedule) and every Dropout layer's generator must be reset from (seed, epoch, step, layer),
so a run resumed at any step draws the masks and uses the rates an uninterrupted one would.
Done from Python callbacks that is an eager variable write per layer plus Python big-integer
seed arithmetic on every step: the reseeding was 20 % of the main thread's samples in py-spy,
and the two callbacks together about 5 % of the workshop CNN's step rate (results/benchmarks,
trainer overhead, at 044e059). Here Python sets the epoch, the steps already done
and a table of the epoch's rates once per epoch; the graph does the rest:

    epoch begin (Python):   epoch, step <- epoch, steps done before this fit()
                            rates[s] <- lr * lr_multiplier(epoch + s / steps) for each step s
    each step (graph):      lr <- rates[step]; (SGD: momentum correction, Goyal et al. eq. 10)
                            each dropout generator <- seed(seed, epoch, step, layer)
                            train_step(data); step += 1; (SGD: momentum restored)

The rate table comes from the same pure function the unit tests check, so there is one
formula. Imported only inside a rank, after TF_USE_LEGACY_KERAS=1 is set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf


def random_generators(model) -> list[tuple[int, tf.random.Generator]]:
    """(index, generator) of every layer that draws random numbers (Dropout), in a stable
    order. Needs tf.random.Generator-based layers (`enable_tf_random_generator()` before
    the model is built)."""
    found = []
    for index, layer in enumerate(model.submodules):
        rng = getattr(layer, "_random_generator", None)
        if rng is None or not hasattr(rng, "_maybe_init"):
            continue
        rng._maybe_init()  # tf-keras creates the generator lazily
        if getattr(rng, "_generator", None) is not None:
            found.append((index, rng._generator))
    return found


def seed_key(seed, epoch, step, index):
    """The seed of one layer's generator for one step; Python ints or int64 tensors (the
    graph's arithmetic wraps at 64 bits, which only has to agree with itself)."""
    return ((seed * 1_000_003 + epoch) * 100_003 + step) * 1_009 + index


class StepSchedule(tf.keras.callbacks.Callback):
    """Install with `schedule.install(model)` after `compile` (and any checkpoint restore),
    before the first `fit`. `rate(epoch_fraction)` gives the learning rate, None leaves the
    optimizer's own (benchmarks: `without: [lr_schedule]`); `reseed=False` leaves dropout's
    generators alone (`without: [reseed]`)."""

    _supports_tf_logs = True  # no batch hooks; epoch logs are only written

    def __init__(self, seed: int, steps: int, rate: Callable[[float], float] | None,
                 reseed: bool = True, sgd_momentum: float = 0.0):
        super().__init__()
        self.seed, self.steps, self.rate, self.reseed = seed, steps, rate, reseed
        self.sgd_momentum = sgd_momentum
        self.batch_offset = 0  # steps of this epoch done before this fit() (resumed)
        self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="hpctrain_epoch")
        self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="hpctrain_step")
        self.rates = tf.Variable(tf.zeros([steps], tf.float32), trainable=False,
                                 name="hpctrain_rates")

    def install(self, model) -> None:
        opt = model.optimizer
        generators = random_generators(model) if self.reseed else []
        train_step = model.train_step
        epoch, step, rates, steps = self.epoch_var, self.step_var, self.rates, self.steps
        seed, rate, momentum = self.seed, self.rate, self.sgd_momentum

        def scheduled_train_step(data):
            ops = []
            for index, generator in generators:
                key = seed_key(tf.constant(seed, tf.int64), epoch, step, index)
                state = generator.state
                ops.append(state.assign(tf.concat(
                    [tf.reshape(key, [1]), tf.zeros([state.shape[0] - 1], tf.int64)], 0)))
            if rate is not None:
                old = tf.identity(opt.lr)
                new = rates[tf.minimum(step, steps - 1)]
                ops.append(opt.lr.assign(new))
                if momentum:  # Horovod: momentum correction while the rate changes
                    changed = tf.logical_and(tf.not_equal(new, old), old > 0)
                    ops.append(opt.momentum.assign(
                        tf.where(changed, momentum * new / tf.where(changed, old, 1.0),
                                 momentum)))
            with tf.control_dependencies(ops):
                data = tf.nest.map_structure(tf.identity, data)
            outputs = train_step(data)
            with tf.control_dependencies(tf.nest.flatten(outputs)):
                step.assign_add(1)
                if rate is not None and momentum:
                    opt.momentum.assign(momentum)
            return outputs

        model.train_step = scheduled_train_step  # an instance attribute, called as the method

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_var.assign(epoch)
        self.step_var.assign(self.batch_offset)
        if self.rate is not None:
            self.rates.assign(np.array([self.rate(epoch + s / self.steps)
                                        for s in range(self.steps)], np.float32))

    def on_epoch_end(self, epoch, logs=None):
        self.batch_offset = 0
        if logs is not None:
            logs["lr"] = float(tf.keras.backend.get_value(self.model.optimizer.lr))
