"""On-the-fly augmentation of whole uint8 batches inside the tf.data graph, and the matching
evaluation crop.

    train:  random crop x crop window of each S x S image + random horizontal flip
    eval:   the central crop x crop window

Both are two batched gathers (rows, then columns; the flip is a reversed column index), so no
Python and no per-image op runs. The randomness is stateless, keyed by (seed, epoch, step): a
resumed run draws the same crops as an uninterrupted one.
"""

from __future__ import annotations


def crop_flip(tf, crop: int, seed: int, flip: bool = True):
    """`augment(images, labels, epoch, step)` for RankReader.dataset / memory_batches."""

    def augment(images, labels, epoch, step):
        size = images.shape[1]
        n = tf.shape(images)[0]
        key = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64),
                        tf.cast(step, tf.int64)])
        offsets = tf.random.stateless_uniform((n, 2), key, 0, size - crop + 1, tf.int32)
        span = tf.range(crop, dtype=tf.int32)
        rows = offsets[:, :1] + span
        cols = offsets[:, 1:] + span
        if flip:
            flips = tf.random.stateless_uniform((n, 1), key + 1, 0, 2, tf.int32)
            cols = tf.where(flips == 1, tf.reverse(cols, axis=[1]), cols)
        images = tf.gather(images, rows, axis=1, batch_dims=1)
        images = tf.gather(images, cols, axis=2, batch_dims=1)
        return tf.ensure_shape(images, (None, crop, crop, images.shape[-1])), labels

    return augment


def center_crop(images, crop: int):
    """The central crop x crop window of a batch: a numpy view, or a slice in a tf.data graph
    (the static height and width are known there)."""
    h, w = images.shape[1:3]
    if crop == h and crop == w:
        return images
    top, left = (h - crop) // 2, (w - crop) // 2
    return images[:, top:top + crop, left:left + crop]
