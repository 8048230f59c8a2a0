"""Read a rank's shard of a staged HDF5 file (see staging.py for the layout).

Each rank reads only its own contiguous slice of the training set, as a few large chunk-aligned
reads (single-sample reads through h5py are bound by the GIL). The shard is then served from
memory by tf.data; MNIST-family shards are tens of MB. The file handle is opened inside the
rank process and closed before training starts.

`batches` shuffles sample *indices* and gathers whole batches: shuffling the images
themselves made tf.data refill a buffer of every image at each epoch boundary, which cost
~0.2 s per step of the epoch when two ranks share two cores (measured, see the closing note
of issue 2).
"""

from __future__ import annotations

import json
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


def describe(path: str) -> dict:
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        return {
            "dataset": str(attrs.get("dataset", "?")),
            "class_names": json.loads(attrs.get("class_names", "[]")),
            "num_classes": int(attrs.get("num_classes", 10)),
            "input_shape": tuple(f["train/images"].shape[1:]),
            "train_count": int(f["train/images"].shape[0]),
            "test_count": int(f["test/images"].shape[0]),
            "source_sha256": json.loads(attrs.get("source_sha256", "{}")),
        }


def batches(tf, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
            repeat: bool = True):
    """Shuffled full batches of (images, labels), reshuffled every pass; endless if `repeat`."""
    images, labels = tf.constant(images), tf.constant(labels)
    n = int(labels.shape[0])
    ds = (tf.data.Dataset.range(n)
          .shuffle(n, seed=seed, reshuffle_each_iteration=True)
          .batch(batch_size, drop_remainder=True))
    if repeat:
        ds = ds.repeat()
    ds = ds.map(lambda idx: (tf.gather(images, idx), tf.gather(labels, idx))).prefetch(2)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
