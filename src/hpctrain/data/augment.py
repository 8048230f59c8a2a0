"""On-the-fly augmentation of whole uint8 batches inside the tf.data graph, and the matching
evaluation crop.

    train:  random crop x crop window of each S x S image + random horizontal flip
            (or, resized_crop_flip: a random-resized-crop window resized to crop x crop)
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


def resized_crop_boxes(tf, n, height: int, width: int, key, area=(0.08, 1.0),
                       aspect=(3 / 4, 4 / 3), tries: int = 10):
    """Random-resized-crop windows for n images of height x width, as torchvision draws
    them: an area fraction uniform in `area`, an aspect ratio (width / height) log-uniform in
    `aspect`, up to `tries` draws until the window fits, at a uniform position; if none fits,
    the whole image cut to the nearest aspect in range, centred. Returns int32 (top, left,
    rows, cols), each of shape (n,)."""
    u = tf.random.stateless_uniform((n, tries, 4), key, 0.0, 1.0, tf.float64)
    log_lo, log_hi = tf.math.log(tf.constant(aspect[0], tf.float64)), \
        tf.math.log(tf.constant(aspect[1], tf.float64))
    target = (area[0] + (area[1] - area[0]) * u[..., 0]) * float(height * width)
    ratio = tf.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    cols = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)
    rows = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)
    fits = (cols >= 1) & (rows >= 1) & (cols <= width) & (rows <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    pick = tf.stack([tf.range(n, dtype=tf.int32), first], axis=1)
    rows, cols, uu = tf.gather_nd(rows, pick), tf.gather_nd(cols, pick), tf.gather_nd(u, pick)
    top = tf.cast(tf.floor(uu[:, 2] * tf.cast(height - rows + 1, tf.float64)), tf.int32)
    left = tf.cast(tf.floor(uu[:, 3] * tf.cast(width - cols + 1, tf.float64)), tf.int32)
    # none fit: the whole image, cut to the aspect range, centred
    in_ratio = width / height
    if in_ratio < aspect[0]:
        f_cols, f_rows = width, int(round(width / aspect[0]))
    elif in_ratio > aspect[1]:
        f_cols, f_rows = int(round(height * aspect[1])), height
    else:
        f_cols, f_rows = width, height
    ok = tf.reduce_any(fits, axis=1)
    rows = tf.where(ok, rows, f_rows)
    cols = tf.where(ok, cols, f_cols)
    top = tf.where(ok, top, (height - f_rows) // 2)
    left = tf.where(ok, left, (width - f_cols) // 2)
    return top, left, rows, cols


def resized_crop_flip(tf, crop: int, seed: int, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3),
                      flip: bool = True):
    """`augment(images, labels, epoch, step)`: a random-resized-crop window of each image
    (resized_crop_boxes), resized bilinearly to crop x crop, flipped at random; one batched
    crop_and_resize, keyed by (seed, epoch, step) like crop_flip, so exactly resumable."""

    def augment(images, labels, epoch, step):
        n = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        key = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64),
                        tf.cast(step, tf.int64)])
        top, left, rows, cols = resized_crop_boxes(tf, n, height, width, key, area, aspect)
        # crop_and_resize maps box coordinate 0 to the first pixel and 1 to the last
        y1 = tf.cast(top, tf.float32) / (height - 1)
        y2 = tf.cast(top + rows - 1, tf.float32) / (height - 1)
        x1 = tf.cast(left, tf.float32) / (width - 1)
        x2 = tf.cast(left + cols - 1, tf.float32) / (width - 1)
        if flip:  # a box given right to left is sampled mirrored
            flips = tf.random.stateless_uniform((n,), key + 1, 0, 2, tf.int32) == 1
            x1, x2 = tf.where(flips, x2, x1), tf.where(flips, x1, x2)
        boxes = tf.stack([y1, x1, y2, x2], axis=1)
        out = tf.image.crop_and_resize(tf.cast(images, tf.float32), boxes,
                                       tf.range(n, dtype=tf.int32), (crop, crop))
        out = tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), images.dtype)
        return tf.ensure_shape(out, (None, crop, crop, images.shape[-1])), labels

    return augment
