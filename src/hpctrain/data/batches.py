"""tf.data batches of a window's rows, or of arrays in memory, and their augmentation: the
graph side of the reader (reader.py) and the in-memory pipeline the benchmarks compare it to.

    memory_batches(tf, images, labels, 128, seed=0, augment=crop_flip(tf, 224, seed=0))
    synthetic_batches(tf, (224, 224, 3), 1000, 64, seed=0)

Batches leave as (images, labels) after `augment(images, labels, epoch, step)` ran on whole
batches (augment.py), with tf.data's autotuning off, so both pipelines are built alike.
"""

from __future__ import annotations

import numpy as np

GATHER_BYTES = 16 << 20  # images gathered by one tf.gather (gather_group)


def memory_batches(tf, images, labels, batch_size: int, seed: int,
                   first_epoch: int = 0, epochs: int | None = None, augment=None,
                   group: int = 0, threads: int = 1):
    """The same arrays served from memory by tf.data: a stateless shuffle of indices per epoch,
    batches gathered `group` at a time (default: as the reader does, gather_group). The
    in-memory baseline of the benchmarks. `images`, `labels`: arrays or tensors."""
    images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
    n = int(labels.shape[0])
    steps = n // batch_size
    last = first_epoch + epochs if epochs is not None else np.iinfo(np.int64).max
    group = group or gather_group(tuple(images.shape[1:]), batch_size)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        index = tf.reshape(order[:steps * batch_size], (steps, batch_size))
        return gathered(tf, images, labels, index, epoch, tf.constant(0, tf.int64), group)

    ds = tf.data.Dataset.range(first_epoch, last).flat_map(one_epoch)
    return augmented(tf, ds, augment, threads)


def gather_group(shape: tuple[int, ...], batch_size: int) -> int:
    """Batches gathered by one op: as many as fit in GATHER_BYTES, at least one. Small images
    are limited by tf.data's cost per element, not by the copy: one gather per batch of
    28x28 ran at 0.8 of one gather per 16 MiB group here (bench/input_pipeline.py)."""
    return max(1, GATHER_BYTES // (int(np.prod(shape)) * batch_size))


def gathered(tf, images, labels, index, epoch, first_step, group: int):
    """Batches `index` (k, B) of rows of `images` and `labels`, as (images, labels, epoch,
    step) elements: one gather per `group` batches, then split into batches."""
    k = tf.shape(index, out_type=tf.int64)[0]
    ds = tf.data.Dataset.from_tensor_slices((index, first_step + tf.range(k)))

    def gather(i, s):
        return tf.gather(images, i), tf.gather(labels, i), tf.fill(tf.shape(s), epoch), s

    return ds.map(gather) if group == 1 else ds.batch(group).map(gather).unbatch()


def sliced(tf, images, labels, epoch, first_step, batch_size: int):
    """Rows of `images` and `labels` that are k whole batches in order, as (images, labels,
    epoch, step) elements."""
    k = tf.shape(labels, out_type=tf.int64)[0] // batch_size
    return tf.data.Dataset.from_tensor_slices((
        tf.reshape(images, (-1, batch_size, *images.shape[1:])),
        tf.reshape(labels, (-1, batch_size)), tf.fill([k], epoch), first_step + tf.range(k)))


def augmented(tf, ds, augment, threads: int = 1):
    """(images, labels, epoch, step) batches -> (images, labels), through `augment` if given,
    on `threads` batches at once (deterministic: the order is kept, and each batch's crops are
    a function of its (epoch, step), not of the thread); prefetched, with tf.data's
    autotuning off (both pipelines alike)."""
    if augment is None:
        ds = ds.map(lambda x, y, epoch, step: (x, y))
    else:
        parallel = {"num_parallel_calls": threads, "deterministic": True} if threads > 1 else {}
        ds = ds.map(augment, **parallel)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


def synthetic_batches(tf, input_shape: tuple[int, ...], num_classes: int, batch_size: int,
                      seed: int):
    """One batch of random uint8 images and labels made on the device and repeated forever:
    no I/O and no host-to-device copies (as Horovod's synthetic benchmark)."""
    gen = tf.random.Generator.from_seed(seed)
    images = tf.cast(gen.uniform((batch_size, *input_shape), 0, 256, dtype=tf.int32), tf.uint8)
    labels = gen.uniform((batch_size,), 0, num_classes, dtype=tf.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()
