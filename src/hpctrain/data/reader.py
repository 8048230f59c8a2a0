"""Read a rank's shard of a staged HDF5 file (see staging.py for the layout).

Each rank reads only its own contiguous slice of the training set, as a few large chunk-aligned
reads (single-sample reads through h5py are bound by the GIL). The shard is then served from
memory by tf.data; MNIST-family shards are tens of MB. The file handle is opened inside the
rank process and closed before training starts.

`batches` shuffles sample *indices* and gathers whole batches: shuffling the images
themselves made tf.data refill a buffer of every image at each epoch boundary, which cost
~0.2 s per step of the epoch when two ranks share two cores (measured, see the closing note
of issue 2). Each epoch's order is a pure function of (seed, epoch), so resuming is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np


@dataclass
class Shard:
    images: np.ndarray  # (n, H, W, C) uint8
    labels: np.ndarray  # (n,) int32
    start: int
    stop: int
    total: int  # samples in the split (after any limit)


def shard_bounds(total: int, rank: int, size: int) -> tuple[int, int]:
    """Contiguous, equal-sized shards; the last `total % size` samples are left out so every
    rank runs the same number of steps (a rank with more steps would hang the others)."""
    per_rank = total // size
    return rank * per_rank, (rank + 1) * per_rank


def read_shard(path: str, split: str, rank: int, size: int, limit: int = 0) -> Shard:
    with h5py.File(path, "r") as f:
        images, labels = f[f"{split}/images"], f[f"{split}/labels"]
        total = images.shape[0] if not limit else min(limit, images.shape[0])
        start, stop = shard_bounds(total, rank, size)
        if stop <= start:
            raise ValueError(f"{path}: {split} has {total} samples, too few for {size} ranks")
        return Shard(images[start:stop], labels[start:stop].astype(np.int32), start, stop, total)


def batches(tf, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
            first_epoch: int = 0, epochs: int | None = None, first_step: int = 0):
    """Shuffled full batches of (images, labels), `n // batch_size` per epoch.

    Epoch e's order is a stateless shuffle keyed by (seed, e): it depends on nothing that
    happened before, so a run resumed at epoch e (and step `first_step` of it) sees exactly
    the batches an uninterrupted run would. Endless unless `epochs` is given."""
    images, labels = tf.constant(images), tf.constant(labels)
    n = int(labels.shape[0])
    last = first_epoch + epochs if epochs is not None else np.iinfo(np.int64).max

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)

    ds = (tf.data.Dataset.range(first_epoch, last).flat_map(one_epoch).skip(first_step)
          .map(lambda idx: (tf.gather(images, idx), tf.gather(labels, idx))).prefetch(2))
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def synthetic_batches(tf, input_shape: tuple[int, ...], num_classes: int, batch_size: int,
                      seed: int):
    """One batch of random uint8 images and labels made on the device and repeated forever:
    no I/O and no host-to-device copies (as Horovod's synthetic benchmark)."""
    gen = tf.random.Generator.from_seed(seed)
    images = tf.cast(gen.uniform((batch_size, *input_shape), 0, 256, dtype=tf.int32), tf.uint8)
    labels = gen.uniform((batch_size,), 0, num_classes, dtype=tf.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()
