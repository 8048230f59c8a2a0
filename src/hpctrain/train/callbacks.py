"""Keras callbacks of the training loop: epoch timing and metrics, exact sharded evaluation,
BatchNorm statistics averaging, stop at a target accuracy,
stop (and checkpoint mid-epoch) on request.

An epoch cut short by a stop request still ends with `on_epoch_end`, whose `logs` then hold
`interrupted_at_step`: evaluation and the metrics row skip it, the checkpoint keeps the step.
Imported only inside a rank, after TF_USE_LEGACY_KERAS=1 is set."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import horovod.tensorflow as hvd_tf
import numpy as np
import tensorflow as tf

from hpctrain.atomic import write_jsonl
from hpctrain.train.preemption import decode, encode

TOP_K = 5
TOP_K_FROM_CLASSES = 10  # more classes than this: the report shows top-5 accuracy too


def top_k_hits(probs: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among their k most probable classes (ties: the lower
    class index first, as argmax does)."""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return int((order == np.asarray(labels)[:, None]).any(axis=1).sum())


class ShardedEvaluation(tf.keras.callbacks.Callback):
    """Evaluate each rank's test shard and sum loss and hits over ranks, so `val_loss` and
    `val_accuracy` are exact for the whole test set (and identical on every rank).
    `batches()` yields this rank's (images, labels) in order, a window at a time."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches
        self._forward: Any = None  # a tf.function, made on first use

    def on_epoch_end(self, epoch, logs=None):
        if logs and logs.get("interrupted_at_step"):
            return
        t0 = time.perf_counter()
        if self._forward is None:  # plain batched calls: no tf.data iterator to tear down
            self._forward = tf.function(lambda x: self.model(x, training=False))
        loss_sum, hits, hits5, count, classes = 0.0, 0.0, 0.0, 0, 0
        for images, labels in self.batches():
            probs = self._forward(images).numpy()
            picked = probs[np.arange(len(labels)), labels]
            loss_sum += float(-np.log(np.clip(picked, 1e-7, 1.0)).sum())
            hits += float(top_k_hits(probs, labels, 1))
            hits5 += float(top_k_hits(probs, labels, TOP_K))
            count += len(labels)
            classes = probs.shape[1]
        totals = hvd_tf.allreduce(  # Horovod: sum over ranks
            tf.constant([loss_sum, hits, hits5, float(count)], tf.float64),
            op=hvd_tf.Sum, name="hpctrain_eval").numpy()
        if logs is not None:
            logs["val_loss"] = totals[0] / totals[3]
            logs["val_accuracy"] = totals[1] / totals[3]
            if classes > TOP_K_FROM_CLASSES:  # top-5 says something only with many classes
                logs[f"val_top{TOP_K}_accuracy"] = totals[2] / totals[3]
            logs["eval_s"] = time.perf_counter() - t0


class AverageNonTrainable(tf.keras.callbacks.Callback):
    """Horovod: average non-trainable float weights (BatchNorm moving statistics) over ranks
    at the end of every epoch, before evaluation. Gradients are averaged, but each rank
    updates these from its own batches; averaging keeps evaluation and checkpoints identical
    on all ranks, which the ranks-in-sync check then verifies."""

    def on_epoch_end(self, epoch, logs=None):
        for i, var in enumerate(self.model.non_trainable_weights):
            if var.dtype.is_floating:
                var.assign(hvd_tf.allreduce(var, op=hvd_tf.Average, name=f"hpctrain_nt_{i}"))


class TargetAccuracyStop(tf.keras.callbacks.Callback):
    """Stop once the (allreduced, hence identical on every rank) test accuracy reaches the
    target; every rank stops after the same epoch."""

    def __init__(self, target: float):
        super().__init__()
        self.target = target

    def on_epoch_end(self, epoch, logs=None):
        if logs and (logs.get("val_accuracy") or 0.0) >= self.target:
            self.model.stop_training = True


class StopOnRequest(tf.keras.callbacks.Callback):
    """Every `every` steps the ranks allreduce their stop requests (preemption.StopRequest);
    if any rank has one, all stop after the same step. Place it right after the timer, so the
    callbacks after it see `logs["interrupted_at_step"]` of an epoch cut short."""

    def __init__(self, request, every: int, steps: int, ranks: int):
        super().__init__()
        self.request, self.every, self.steps, self.ranks = request, every, steps, ranks
        self.batch_offset = 0  # steps of the current epoch done before this fit() call
        self.reason: str | None = None
        self.at: tuple[int, int] | None = None  # (epoch index, steps done in it)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self.batch_offset + batch + 1
        if step % self.every and step != self.steps:
            return
        code = encode(self.request.reason())
        if self.ranks > 1:  # one rank has nobody to agree with (an allreduce is ~1 ms)
            code = hvd_tf.allreduce(  # Horovod: any rank's request stops every rank
                tf.constant(code, tf.int32), op=hvd_tf.Max, name="hpctrain_stop").numpy()
        if code:
            self.reason, self.at = decode(int(code)), (self.epoch, step)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.batch_offset = 0
        if self.at and self.at[1] < self.steps and logs is not None:
            logs["interrupted_at_step"] = self.at[1]

    @property
    def interrupted_mid_epoch(self) -> bool:
        return bool(self.at and self.at[1] < self.steps)


class _Timer(tf.keras.callbacks.Callback):
    def __init__(self, recorder: EpochRecorder):
        super().__init__()
        self.recorder = recorder

    def on_train_begin(self, logs=None):
        if not self.recorder.train_start:  # a resumed run may call fit() twice
            self.recorder.train_start = time.perf_counter()
        self.recorder.train_end = 0.0  # running again

    def on_train_end(self, logs=None):
        self.recorder.train_end = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.recorder.epoch_start = self.window_start = time.perf_counter()
        self.recorder.window_rates = []

    def on_train_batch_end(self, batch, logs=None):
        r = self.recorder
        if (batch + 1) % r.window_steps == 0:
            now = time.perf_counter()
            r.window_rates.append(r.window_steps * r.images_per_step / (now - self.window_start))
            self.window_start = now

    def on_epoch_end(self, epoch, logs=None):
        self.recorder.epoch_seconds = time.perf_counter() - self.recorder.epoch_start


class _Writer(tf.keras.callbacks.Callback):
    def __init__(self, recorder: EpochRecorder, path: Path | None, print_fn=None):
        super().__init__()
        self.recorder, self.path, self.print_fn = recorder, path, print_fn

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get("interrupted_at_step"):
            self.recorder.interrupt(int(logs["interrupted_at_step"]))
            return
        row = self.recorder.add(epoch, logs or {})
        if self.path is not None:
            write_jsonl(self.path, self.recorder.rows)
        if self.print_fn:
            val = "" if row["val_accuracy"] is None else f" val_acc {row['val_accuracy']:.4f}"
            evl = "" if not val else f", eval {row['eval_s']:.1f} s"
            self.print_fn(f"epoch {row['epoch']}: loss {row['loss']:.4f} acc "
                          f"{row['accuracy']:.4f}{val} lr {row['lr'] or 0:.3g} "
                          f"{row['epoch_s']:.1f} s {row['images_per_s']:.0f} img/s{evl}")


def _number(value) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


class EpochRecorder:
    """Collects one row per epoch (identical on every rank after metric averaging)."""

    def __init__(self, steps: int, global_batch: int, windows: int = 10,
                 rows: list[dict] | None = None, partial: dict | None = None):
        self.steps = steps
        self.images_per_step = global_batch
        self.images_per_epoch = steps * global_batch
        self.window_steps = max(1, steps // windows)  # throughput sampled 10x per epoch
        self.window_rates: list[float] = []
        self.rows: list[dict] = list(rows or [])  # earlier segments' epochs, when resumed
        self.offset_s = (self.rows[-1]["elapsed_s"] if self.rows else 0.0) + (
            partial["epoch_s"] if partial else 0.0)
        self.first_row = len(self.rows)
        self.train_start = self.train_end = self.epoch_start = self.epoch_seconds = 0.0
        # An epoch begun in an earlier segment: {"step": steps done, "epoch_s": their time}
        self.partial: dict | None = partial
        self.timer = _Timer(self)

    def interrupt(self, step: int) -> None:
        """The current epoch stopped after `step` of its steps (a stop request)."""
        before = self.partial or {"step": 0, "epoch_s": 0.0}
        self.partial = {"step": step, "epoch_s": before["epoch_s"] + self.epoch_seconds,
                        "resumed_at_steps": before.get("resumed_at_steps", []) + (
                            [before["step"]] if before["step"] else [])}

    def writer(self, path: Path | None, print_fn=None) -> _Writer:
        return _Writer(self, path, print_fn)

    @property
    def train_seconds(self) -> float:
        if not self.train_start:
            return 0.0
        return (self.train_end or time.perf_counter()) - self.train_start

    def add(self, epoch: int, logs: dict) -> dict:
        partial, self.partial = self.partial, None
        epoch_s = self.epoch_seconds + (partial["epoch_s"] if partial else 0.0)
        row = {
            "epoch": epoch + 1,
            "loss": _number(logs.get("loss")),
            "accuracy": _number(logs.get("accuracy")),
            "val_loss": _number(logs.get("val_loss")),  # None: no test set (synthetic data)
            "val_accuracy": _number(logs.get("val_accuracy")),
            **({"val_top5_accuracy": _number(logs["val_top5_accuracy"])}
               if "val_top5_accuracy" in logs else {}),  # more than ten classes
            "lr": float(logs["lr"]) if "lr" in logs else None,
            "epoch_s": epoch_s,
            "first_in_segment": len(self.rows) == self.first_row,  # includes graph building
            # steps at which this epoch was resumed after a stop request (metrics cover the
            # steps since the last of them)
            "resumed_at_steps": (partial.get("resumed_at_steps", []) + [partial["step"]])
            if partial else [],
            "eval_s": _number(logs.get("eval_s")),
            "elapsed_s": self.offset_s + self.train_seconds,
            "end_unix_s": time.time(),  # after the evaluation: time to accuracy from any start
            "images": self.images_per_epoch,
            "images_per_s": self.images_per_epoch / epoch_s,
            "window_images_per_s": self.window_rates,
            # every rank's median (and mean) input / compute / allreduce / other s per step
            "rank_steps": logs.get("rank_steps", []),
            "units": {"epoch_s": "s, training steps only", "eval_s": "s, test-set evaluation",
                      "elapsed_s": "s of training since the run's start, all segments",
                      "end_unix_s": "Unix time (s) at the end of the epoch and its evaluation",
                      "images_per_s": "images/s, all ranks",
                      "window_images_per_s": "images/s, all ranks, per tenth of the epoch",
                      "loss": "cross-entropy (nats)"},
        }
        self.rows.append(row)
        return row
