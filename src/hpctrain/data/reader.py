"""Read a rank's share of a staged data set (layout.py) as tf.data batches, streaming.

    reader = RankReader.open(data, "train", rank, size, batch_size=128, seed=seed + rank)
    ds = reader.dataset(tf, first_epoch=0, augment=...)   # endless shuffled batches
    for images, labels in RankReader.open(data, "test", rank, size, 512).in_order(): ...

Each rank gets a contiguous, equal-sized range of the split (the last `total % size` samples
are left out, so every rank runs the same number of steps); over shards, that is whole shards
when their number is a multiple of the ranks. The range is cut into blocks of whole HDF5 chunks
(~16 MiB); an epoch visits the blocks in a random order, a window of several blocks at a time
(the shuffle buffer, `shuffle_mb`), reads each window into a reused buffer (`os.preadv` at the
chunks' offsets, without the GIL; h5py for compressed data) and draws a permutation of its
rows. The only Python work is per window, never per sample: tf.data then gathers whole
batches, augments them on the fly (augment.py) and prefetches. Files are opened in the thread
that reads them, inside the rank's process. Memory per rank: about four windows (the buffers
of a WindowPool: the one being read, the prefetched ones, the one being cut into batches).

When the rank's whole share fits in one window (a 28x28 data set: 23 MiB a rank of 2), it is
read once and kept: every epoch is then the same one window, in a new order, as the
in-memory pipeline's is (reading it again each epoch was most of what the reader lost to that
pipeline there: bench/input_pipeline.py).

Epoch e's order is a pure function of (seed, e): a run resumed at epoch e, step s computes the
order, skips the windows before step s unread, and sees exactly the batches an uninterrupted
run would.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace

import h5py
import numpy as np

from hpctrain.data.layout import Piece, split_pieces

BLOCK_BYTES = 16 << 20
GATHER_BYTES = 16 << 20  # images gathered by one tf.gather (gather_group)
ALIGN = 64  # bytes: TensorFlow shares (does not copy) numpy memory aligned to this (Eigen's max)


def shard_bounds(total: int, rank: int, size: int) -> tuple[int, int]:
    """Contiguous, equal-sized ranges; the last `total % size` samples are left out so every
    rank runs the same number of steps (a rank with more steps would hang the others)."""
    per_rank = total // size
    return rank * per_rank, (rank + 1) * per_rank


def rank_pieces(pieces: list[Piece], rank: int, size: int, limit: int = 0
                ) -> tuple[list[Piece], int]:
    """This rank's rows of the concatenated pieces (of the first `limit` rows if given), and
    the split's total after the limit."""
    total = sum(p.count for p in pieces)
    total = min(limit, total) if limit else total
    start, stop = shard_bounds(total, rank, size)
    if stop <= start:
        raise ValueError(f"{pieces[0].path if pieces else '?'}: {total} samples, too few for "
                         f"{size} ranks")
    mine, offset = [], 0
    for p in pieces:
        lo, hi = max(start, offset), min(stop, offset + p.count)
        if lo < hi:
            mine.append(replace(p, start=p.start + lo - offset, stop=p.start + hi - offset))
        offset += p.count
    return mine, total


def blocks_of(pieces: list[Piece], rows: int) -> list[Piece]:
    """Cut pieces into blocks of about `rows` rows whose inner boundaries are chunk-aligned."""
    out = []
    for p in pieces:
        step = max(p.chunk, rows // p.chunk * p.chunk)
        edges = [p.start, *range((p.start // step + 1) * step, p.stop, step), p.stop]
        out += [replace(p, start=a, stop=b) for a, b in zip(edges, edges[1:], strict=False)]
    return out


class _Files:
    """The open files of one reading thread; closed when the reading is done.

    Uncompressed images (the default of both stagings) are read with `os.preadv` at the
    chunks' byte offsets, which HDF5 reports once per chunk: the copy from the page cache (or
    the disk) runs without Python's GIL, so the training loop is never held up by it.
    Compressed images go through h5py, which holds the GIL while it decompresses."""

    def __init__(self) -> None:
        self.files: dict[str, h5py.File] = {}
        self.fds: dict[str, int] = {}
        self.offsets: dict[tuple[str, str], tuple[int, list[int]] | None] = {}

    def _layout(self, f: h5py.File, b: Piece) -> tuple[int, list[int]] | None:
        """(rows per chunk, byte offset of each chunk) of uncompressed images, else None."""
        key = (b.path, b.prefix)
        if key not in self.offsets:
            images = f[b.prefix + "images"]
            layout = None
            if images.dtype == np.uint8 and not images.compression and images.shape[0]:
                if images.chunks is None:
                    layout = (images.shape[0], [images.id.get_offset()])
                elif images.chunks[1:] == images.shape[1:]:
                    rows = images.chunks[0]
                    offsets = []
                    for start in range(0, images.shape[0], rows):
                        info = images.id.get_chunk_info_by_coord((start,) + (0,) * (
                            images.ndim - 1))
                        offsets.append(info.byte_offset)
                    layout = (rows, offsets)
            self.offsets[key] = layout
        return self.offsets[key]

    def read(self, blocks: list[Piece], shape: tuple[int, ...], out: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """The blocks' rows, into `out` if given (a reused buffer: fresh memory costs a page
        fault per 4 KiB on first touch, which made a window read 3-10x slower here)."""
        n = sum(b.count for b in blocks)
        images = np.empty((n, *shape), np.uint8) if out is None else out[:n]
        labels = np.empty((n,), np.int32)
        row_bytes = int(np.prod(shape))
        flat = images.reshape(n, row_bytes)
        at = 0
        for b in blocks:
            f = self.files.get(b.path)
            if f is None:
                f = self.files[b.path] = h5py.File(b.path, "r")
                self.fds[b.path] = os.open(b.path, os.O_RDONLY)
            layout = self._layout(f, b)
            if layout is None:
                f[b.prefix + "images"].read_direct(images, np.s_[b.start:b.stop],
                                                   np.s_[at:at + b.count])
            else:
                rows, offsets = layout
                row = b.start
                while row < b.stop:  # one pread per chunk (rows within a chunk are contiguous)
                    chunk, within = divmod(row, rows)
                    take = min(b.stop - row, rows - within)
                    _pread(self.fds[b.path], flat[at + row - b.start:][:take],
                           offsets[chunk] + within * row_bytes)
                    row += take
            labels[at:at + b.count] = f[b.prefix + "labels"][b.start:b.stop]
            at += b.count
        return images, labels

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        for fd in self.fds.values():
            os.close(fd)
        self.files.clear()
        self.fds.clear()


def _pread(fd: int, out: np.ndarray, offset: int) -> None:
    view = out.data.cast("B")
    while len(view):
        got = os.preadv(fd, [view], offset)
        if got <= 0:
            raise OSError(f"short read at byte {offset} (file truncated?)")
        view, offset = view[got:], offset + got


class WindowPool:
    """Window buffers handed to tf.data without a copy, each reused once nothing else holds it.

    from_generator shares the memory of a 64-byte aligned numpy array instead of copying it,
    and holds a reference to the array while any tensor made from it lives (a copied array
    gets none). Every buffer here is aligned, so no window is copied on its way into tf.data,
    and a buffer is handed out again only when its reference count is back to what it was
    when it was made: then no window of it is in the prefetch or being cut into batches. The
    pool grows to the number of windows alive at once (about four) and stays there.
    Reused memory also spares the page fault per 4 KiB that fresh memory costs on first touch
    (a window read was 3-10x slower into fresh memory here)."""

    def __init__(self, rows: int, shape: tuple[int, ...]) -> None:
        self.shape = (rows, *shape)
        self.buffers: list[np.ndarray] = []  # aligned views; .base is the allocation
        self.idle: list[int] = []  # each allocation's reference count when nothing uses it

    def take(self) -> np.ndarray:
        for view, idle in zip(self.buffers, self.idle, strict=True):
            if sys.getrefcount(view.base) == idle:
                return view
        nbytes = int(np.prod(self.shape))
        raw = np.empty(nbytes + ALIGN, np.uint8)
        start = -raw.ctypes.data % ALIGN
        self.buffers.append(raw[start:start + nbytes].reshape(self.shape))
        del raw
        self.idle.append(sys.getrefcount(self.buffers[-1].base))
        return self.buffers[-1]


@dataclass
class RankReader:
    pieces: list[Piece]  # this rank's rows
    total: int  # rows of the split (after any limit), over all ranks
    shape: tuple[int, ...]  # (H, W, C) as staged
    batch_size: int
    seed: int
    window_blocks: int  # blocks per shuffle window
    blocks: list[Piece]
    kept: tuple[np.ndarray, np.ndarray] | None = None  # the one window, when all fits in it

    @classmethod
    def open(cls, data: str, split: str, rank: int, size: int, batch_size: int,
             seed: int = 0, limit: int = 0, shuffle_mb: int = 128) -> RankReader:
        all_pieces = split_pieces(data, split)
        mine, total = rank_pieces(all_pieces, rank, size, limit)
        with h5py.File(mine[0].path, "r") as f:
            shape = tuple(f[mine[0].prefix + "images"].shape[1:])
        row_bytes = int(np.prod(shape))
        block_rows = max(1, BLOCK_BYTES // row_bytes)
        window = max(1, (shuffle_mb << 20) // BLOCK_BYTES)
        return cls(mine, total, shape, batch_size, seed, window, blocks_of(mine, block_rows))

    @property
    def rows(self) -> int:
        return sum(p.count for p in self.pieces)

    @property
    def steps(self) -> int:
        """Full batches per epoch (the remainder of each epoch is left out)."""
        return self.rows // self.batch_size

    def windows(self, epoch: int) -> list[tuple[list[Piece], np.ndarray]]:
        """Epoch `epoch`'s order: windows of blocks, each with a permutation of its rows."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.blocks))
        out = []
        for i in range(0, len(order), self.window_blocks):
            chosen = [self.blocks[j] for j in order[i:i + self.window_blocks]]
            out.append((chosen, rng.permutation(sum(b.count for b in chosen))))
        return out

    def window_pool(self) -> WindowPool:
        """Buffers that each hold any window (a random group of `window_blocks` blocks)."""
        largest = sorted((b.count for b in self.blocks), reverse=True)[:self.window_blocks]
        return WindowPool(sum(largest), self.shape)

    def epoch_windows(self, epoch: int, first_step: int = 0, pool: WindowPool | None = None
                      ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Epoch `epoch` from step `first_step`, as (images, labels, index) per window: each
        row of `index` (k, B) is the next batch's rows of `images`. The window is handed on
        as read, into a buffer of `pool` if given (reused once nothing holds it), else into
        fresh memory; a batch that straddles two windows comes as its own small item."""
        b, used, skip = self.batch_size, self.steps * self.batch_size, first_step * self.batch_size
        files, pos = _Files(), 0
        carry: tuple[np.ndarray, np.ndarray] | None = None
        whole = len(self.blocks) <= self.window_blocks  # one window: read once, kept
        try:
            for blocks, perm in self.windows(epoch):
                n = len(perm)
                lo, hi = max(0, skip - pos), min(n, used - pos)
                pos += n
                if hi <= lo:
                    if pos >= used:
                        break
                    continue
                if whole:
                    (images, labels), rows = self._kept(files), self._in_kept(blocks)[perm[lo:hi]]
                else:
                    images, labels = files.read(blocks, self.shape,
                                                pool.take() if pool else None)
                    rows = perm[lo:hi]
                if carry is not None:
                    need = b - len(carry[1])
                    head = (np.concatenate([carry[0], images[rows[:need]]]),
                            np.concatenate([carry[1], labels[rows[:need]]]))
                    rows = rows[need:]
                    if len(head[1]) < b:
                        carry = head
                        continue
                    yield head[0], head[1], np.arange(b, dtype=np.int32).reshape(1, b)
                k = len(rows) // b
                if k:
                    yield images, labels, rows[:k * b].astype(np.int32).reshape(k, b)
                rest = rows[k * b:]
                carry = (images[rest], labels[rest]) if len(rest) else None
        finally:
            files.close()

    def _kept(self, files: _Files) -> tuple[np.ndarray, np.ndarray]:
        """Every block of the rank, in their order, read on first use into aligned memory
        (shared with tf.data without a copy, and never written again)."""
        if self.kept is None:
            self.kept = files.read(self.blocks, self.shape,
                                   WindowPool(self.rows, self.shape).take())
        return self.kept

    def _in_kept(self, blocks: list[Piece]) -> np.ndarray:
        """Where the rows of `blocks`, in that order, are in the kept window."""
        ends = np.cumsum([block.count for block in self.blocks])
        start = {block: end - block.count for block, end in zip(self.blocks, ends, strict=True)}
        return np.concatenate([np.arange(start[k], start[k] + k.count) for k in blocks])

    def epoch_arrays(self, epoch: int, first_step: int = 0
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The same as whole batches' rows in order (for tests and tools)."""
        for images, labels, index in self.epoch_windows(epoch, first_step):
            yield images[index.ravel()], labels[index.ravel()]

    def dataset(self, tf, first_epoch: int = 0, first_step: int = 0,
                epochs: int | None = None, augment=None, threads: int = 1):
        """Endless (or `epochs`) shuffled batches from `first_epoch`, step `first_step`.
        `augment(images, labels, epoch, step)` runs on whole batches in the tf.data graph,
        on `threads` batches at once (the order kept).

        Drop an iterator of it before the interpreter exits (`del it`; Keras' fit drops its
        own): one still alive at interpreter shutdown hung the process there in 15 of 15 tries
        (TensorFlow's threads wait for Python's GIL, which finalization never gives back).

        One generator runs through all the epochs, and the prefetch after it reads the next
        window (across epoch boundaries too) while the current one is cut into batches,
        gathered a group at a time (_gathered), as the in-memory pipeline does."""
        b, shape = self.batch_size, self.shape
        last = first_epoch + epochs if epochs is not None else np.iinfo(np.int64).max
        spec = (tf.TensorSpec((None, *shape), tf.uint8), tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((None, b), tf.int32), tf.TensorSpec((), tf.int64),
                tf.TensorSpec((), tf.int64))

        def windows():
            epoch, pool = first_epoch, self.window_pool()
            while epoch < last:
                step = first_step if epoch == first_epoch else 0
                for x, y, index in self.epoch_windows(epoch, step, pool):
                    yield x, y, index, epoch, step  # shared with tf.data, not copied
                    step += len(index)
                epoch += 1

        group = gather_group(self.shape, b)
        ds = tf.data.Dataset.from_generator(windows, output_signature=spec).prefetch(2)
        return _augmented(tf, ds.flat_map(
            lambda x, y, index, epoch, step: _gathered(tf, x, y, index, epoch, step, group)),
            augment, threads)

    def in_order(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every row of this rank in order, in batches (the last one may be short): for
        evaluation. Reads a window at a time."""
        files = _Files()
        try:
            for i in range(0, len(self.blocks), self.window_blocks):
                images, labels = files.read(self.blocks[i:i + self.window_blocks], self.shape)
                for j in range(0, len(labels), self.batch_size):
                    yield images[j:j + self.batch_size], labels[j:j + self.batch_size]
        finally:
            files.close()


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
        return _gathered(tf, images, labels, index, epoch, tf.constant(0, tf.int64), group)

    ds = tf.data.Dataset.range(first_epoch, last).flat_map(one_epoch)
    return _augmented(tf, ds, augment, threads)


def gather_group(shape: tuple[int, ...], batch_size: int) -> int:
    """Batches gathered by one op: as many as fit in GATHER_BYTES, at least one. Small images
    are limited by tf.data's cost per element, not by the copy: one gather per batch of
    28x28 ran at 0.8 of one gather per 16 MiB group here (bench/input_pipeline.py)."""
    return max(1, GATHER_BYTES // (int(np.prod(shape)) * batch_size))


def _gathered(tf, images, labels, index, epoch, first_step, group: int):
    """Batches `index` (k, B) of rows of `images` and `labels`, as (images, labels, epoch,
    step) elements: one gather per `group` batches, then split into batches."""
    k = tf.shape(index, out_type=tf.int64)[0]
    ds = tf.data.Dataset.from_tensor_slices((index, first_step + tf.range(k)))

    def gather(i, s):
        return tf.gather(images, i), tf.gather(labels, i), tf.fill(tf.shape(s), epoch), s

    return ds.map(gather) if group == 1 else ds.batch(group).map(gather).unbatch()


def _augmented(tf, ds, augment, threads: int = 1):
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
