"""The in-graph learning-rate schedule and dropout seeds (train/step_schedule.py): a run
stopped mid-epoch and continued from that step ends with the weights of an uninterrupted one,
bit for bit; without reseeding it does not (so the check can fail); the rate follows the
pure function and SGD's momentum is restored after every step. In-process TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpctrain.train.step_schedule import StepSchedule

STEPS, BATCH = 4, 8


def rate(epoch: float) -> float:
    return 0.05 * (1.0 + epoch)  # changes every step: exercises the momentum correction


@pytest.fixture
def tf_generators():
    tf.keras.backend.experimental.enable_tf_random_generator()
    yield
    tf.keras.backend.experimental.disable_tf_random_generator()


def _model(reseed: bool):
    tf.keras.utils.set_random_seed(7)
    inputs = tf.keras.Input((6,))
    x = tf.keras.layers.Dropout(0.5)(tf.keras.layers.Dense(16, activation="relu")(inputs))
    x = tf.keras.layers.Dropout(0.3)(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(x))
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=tf.keras.optimizers.legacy.SGD(0.05, momentum=0.9))
    schedule = StepSchedule(seed=3, steps=STEPS, rate=rate, reseed=reseed, sgd_momentum=0.9)
    schedule.install(model)
    return model, schedule


def _batches(epoch: int, first_step: int = 0):
    rng = np.random.default_rng(epoch)
    x = rng.normal(size=(STEPS * BATCH, 6)).astype(np.float32)
    y = rng.integers(0, 3, STEPS * BATCH)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).skip(first_step)


def _train(reseed: bool, stop_at: int | None) -> tuple[list[np.ndarray], dict]:
    """Two epochs; with `stop_at`, the second epoch is cut after that many steps and
    continued by a second fit() from that step (how the trainer resumes)."""
    model, schedule = _model(reseed)
    logs: dict = {}
    keep = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, lg: logs.update(lg))
    callbacks = [schedule, keep]
    model.fit(_batches(0), epochs=1, steps_per_epoch=STEPS, callbacks=callbacks, verbose=0)
    if stop_at is None:
        model.fit(_batches(1), epochs=2, initial_epoch=1, steps_per_epoch=STEPS,
                  callbacks=callbacks, verbose=0)
    else:
        model.fit(_batches(1), epochs=2, initial_epoch=1, steps_per_epoch=stop_at,
                  callbacks=callbacks, verbose=0)
        # another segment: a fresh generator state, as in a new process
        for layer in model.layers:
            rng = getattr(layer, "_random_generator", None)
            if rng is not None and getattr(rng, "_generator", None) is not None:
                rng._generator.reset_from_seed(12345)
        schedule.batch_offset = stop_at
        model.fit(_batches(1, stop_at), epochs=2, initial_epoch=1,
                  steps_per_epoch=STEPS - stop_at, callbacks=callbacks, verbose=0)
    logs["momentum"] = float(tf.keras.backend.get_value(model.optimizer.momentum))
    return model.get_weights(), logs


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_resumed_mid_epoch_is_exact(tf_generators):
    whole, logs = _train(reseed=True, stop_at=None)
    resumed, _ = _train(reseed=True, stop_at=1)
    assert _same(whole, resumed)
    # the rate of the epoch's last step, from the pure function (float32)
    assert logs["lr"] == pytest.approx(rate(1 + (STEPS - 1) / STEPS), rel=1e-6)
    assert logs["momentum"] == pytest.approx(0.9, rel=1e-6)  # corrected, then restored


def test_without_reseeding_a_resumed_run_differs(tf_generators):
    whole, _ = _train(reseed=False, stop_at=None)
    resumed, _ = _train(reseed=False, stop_at=1)
    assert not _same(whole, resumed)
