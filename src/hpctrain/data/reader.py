"""Read a rank's share of a staged data set (layout.py) as tf.data batches, streaming.

    reader = RankReader.open(data, "train", rank, size, batch_size=128, seed=seed + rank)
    ds = reader.dataset(tf, first_epoch=0, augment=...)   # endless shuffled batches
    for images, labels in RankReader.open(data, "test", rank, size, 512).in_order(): ...

Each rank gets a contiguous, equal-sized range of the split (the last `total % size` samples
are left out, so every rank runs the same number of steps); over shards, that is whole shards
when their number is a multiple of the ranks. The range is cut into blocks of whole HDF5 chunks
(~16 MiB); an epoch visits the blocks in a random order, a window of several blocks at a time
(the shuffle buffer, `shuffle_mb`), draws a permutation of its rows and reads it into a
reused buffer (`os.preadv` at the chunks' offsets, without the GIL; h5py for compressed data).
Large images (`SCATTER_BYTES` a row and more, such as 224x224x3) are read straight into batch
order: each chunk's rows are scattered to their places by one preadv, so batches are slices
of the window and no image is copied again before augmentation (a gather after the read made
the reader move every image twice where the in-memory pipeline moves it once). Smaller ones
are read in file order and tf.data gathers whole batches from the window. The only Python
work is per window or per chunk, never per sample's bytes; tf.data then augments whole
batches on the fly (augment.py) and prefetches (window_io.py moves the bytes, batches.py
builds the graph side). Files are opened in the thread that reads them, inside the rank's
process. Memory per rank: about four windows (the buffers of a WindowPool: the one being
read, the prefetched ones, the one being cut into batches).

When the rank's whole share fits in one window (a 28x28 data set: 23 MiB a rank of 2), it is
read once and kept: every epoch is then the same one window, in a new order, as the
in-memory pipeline's is (reading it again each epoch was most of what the reader lost to that
pipeline there: bench/input_pipeline.py), and tf.data gathers its batches with the in-memory
pipeline's own graph, only the order coming from the reader, one small array an epoch.

Epoch e's order is a pure function of (seed, e): a run resumed at epoch e, step s computes the
order, skips the windows before step s unread, and sees exactly the batches an uninterrupted
run would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import h5py
import numpy as np

from hpctrain.data.batches import augmented, gather_group, gathered, sliced
from hpctrain.data.layout import Piece, split_pieces
from hpctrain.data.window_io import WindowFiles, WindowPool

BLOCK_BYTES = 16 << 20
SCATTER_BYTES = 4096  # rows this large are read straight into batch order (WindowFiles.scatter)


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

    @property
    def whole(self) -> bool:
        """Every block fits in one window: it is read once and kept."""
        return len(self.blocks) <= self.window_blocks

    @property
    def ordered(self) -> bool:
        """Windows are read straight into batch order (large rows, more than one window)."""
        return int(np.prod(self.shape)) >= SCATTER_BYTES and not self.whole

    def window_pool(self) -> WindowPool:
        """Buffers that each hold any window (a random group of `window_blocks` blocks), and
        the rows of a batch begun in the window before."""
        largest = sorted((b.count for b in self.blocks), reverse=True)[:self.window_blocks]
        return WindowPool(sum(largest) + self.batch_size, self.shape)

    def epoch_windows(self, epoch: int, first_step: int = 0, pool: WindowPool | None = None
                      ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Epoch `epoch` from step `first_step`, as (images, labels, index) per window: each
        row of `index` (k, B) is the next batch's rows of `images`; or, when `ordered`,
        index None and images already k whole batches in order. The window is handed on as
        read, into a buffer of `pool` if given (reused once nothing holds it), else into
        fresh memory; a batch that straddles two windows comes as its own small item (when
        ordered, at the head of the next window's)."""
        b, used, skip = self.batch_size, self.steps * self.batch_size, first_step * self.batch_size
        files, pos = WindowFiles(), 0
        carry: tuple[np.ndarray, np.ndarray] | None = None
        whole, ordered = self.whole, self.ordered
        try:
            for blocks, perm in self.windows(epoch):
                n = len(perm)
                lo, hi = max(0, skip - pos), min(n, used - pos)
                pos += n
                if hi <= lo:
                    if pos >= used:
                        break
                    continue
                if ordered:
                    images, labels = files.scatter(blocks, perm, lo, hi, self.shape,
                                                   pool.take() if pool else None, carry)
                    k = len(labels) // b
                    if k:
                        yield images[:k * b], labels[:k * b], None
                    rest = slice(k * b, len(labels))
                    carry = (images[rest].copy(), labels[rest].copy()) if len(labels) > k * b \
                        else None
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

    def _kept(self, files: WindowFiles) -> tuple[np.ndarray, np.ndarray]:
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
        b = self.batch_size
        for images, labels, index in self.epoch_windows(epoch, first_step):
            if index is None:
                for i in range(0, len(labels), b):
                    yield images[i:i + b], labels[i:i + b]
            else:
                yield images[index.ravel()], labels[index.ravel()]

    def dataset(self, tf, first_epoch: int = 0, first_step: int = 0,
                epochs: int | None = None, augment=None, threads: int = 1, group: int = 0):
        """Endless (or `epochs`) shuffled batches from `first_epoch`, step `first_step`.
        `augment(images, labels, epoch, step)` runs on whole batches in the tf.data graph,
        on `threads` batches at once (the order kept). `group`: batches per gather from a
        window not in batch order (default: batches.gather_group's ~16 MiB).

        Drop an iterator of it before the interpreter exits (`del it`; Keras' fit drops its
        own): one still alive at interpreter shutdown hung the process there in 15 of 15 tries
        (TensorFlow's threads wait for Python's GIL, which finalization never gives back).

        A kept window (`whole`) is gathered as the in-memory pipeline's arrays are
        (`_kept_batches`). Otherwise one generator runs through all the epochs, and the
        prefetch after it reads the next window (across epoch boundaries too) while the
        current one is cut into batches: sliced when the window is in batch order (`ordered`),
        else gathered a group at a time as the in-memory pipeline does (batches.py)."""
        b, shape, ordered = self.batch_size, self.shape, self.ordered
        group = group or gather_group(shape, b)
        last = first_epoch + epochs if epochs is not None else np.iinfo(np.int64).max
        if self.whole:
            return augmented(tf, self._kept_batches(tf, first_epoch, first_step, last, group),
                             augment, threads)
        spec = (tf.TensorSpec((None, *shape), tf.uint8), tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((None, b), tf.int32), tf.TensorSpec((), tf.int64),
                tf.TensorSpec((), tf.int64))
        no_index = np.zeros((0, b), np.int32)

        def windows():
            epoch, pool = first_epoch, self.window_pool()
            while epoch < last:
                step = first_step if epoch == first_epoch else 0
                for x, y, index in self.epoch_windows(epoch, step, pool):
                    # shared with tf.data, not copied
                    yield x, y, no_index if index is None else index, epoch, step
                    step += len(y) // b if index is None else len(index)
                epoch += 1

        def batches(x, y, index, epoch, step):
            if ordered:  # whole batches in order: slices of the window
                return sliced(tf, x, y, epoch, step, b)
            return gathered(tf, x, y, index, epoch, step, group)

        ds = tf.data.Dataset.from_generator(windows, output_signature=spec).prefetch(2)
        return augmented(tf, ds.flat_map(batches), augment, threads)

    def _kept_batches(self, tf, first_epoch: int, first_step: int, last: int, group: int):
        """The kept window's batches: read now, then the same graph as the in-memory pipeline
        (batches.memory_batches), but for where each epoch's order comes from (the reader's,
        `epoch_windows`, a small array per epoch, drawn one epoch ahead), so both sides do
        the same work. (Through the generator, the window was shared without a copy. Which
        of the two pipelines is faster at 28x28 has changed from one process to the next:
        bench/input_pipeline.py.)"""
        files = WindowFiles()
        try:
            images, labels = (tf.convert_to_tensor(a) for a in self._kept(files))
        finally:
            files.close()
        b = self.batch_size

        def order(epoch, step):  # (k, B) rows of the kept window: epoch `epoch` from `step`
            index = [i for _, _, i in self.epoch_windows(int(epoch), int(step)) if i is not None]
            # int64 as the in-memory pipeline's, so both gather alike (int32 ran ~4 % slower)
            return index[0].astype(np.int64) if index else np.zeros((0, b), np.int64)

        def with_order(epoch):
            step = tf.where(epoch == first_epoch, tf.constant(first_step, tf.int64),
                            tf.constant(0, tf.int64))
            index = tf.numpy_function(order, [epoch, step], tf.int64, stateful=False)
            index.set_shape((None, b))
            return epoch, step, index

        def one_epoch(epoch, step, index):
            return gathered(tf, images, labels, index, epoch, step, group)

        # the next epoch's order (~1 ms of Python) is drawn while this one's batches go,
        # not in line at the epoch's start
        orders = tf.data.Dataset.range(first_epoch, last).map(with_order).prefetch(1)
        return orders.flat_map(one_epoch)

    def in_order(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every row of this rank in order, in batches (the last one may be short): for
        evaluation. Reads a window at a time."""
        files = WindowFiles()
        try:
            for i in range(0, len(self.blocks), self.window_blocks):
                images, labels = files.read(self.blocks[i:i + self.window_blocks], self.shape)
                for j in range(0, len(labels), self.batch_size):
                    yield images[j:j + self.batch_size], labels[j:j + self.batch_size]
        finally:
            files.close()
