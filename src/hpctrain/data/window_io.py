"""A shuffle window's rows from staged HDF5 files, into reused buffers that tf.data shares.

    files = WindowFiles()
    images, labels = files.read(blocks, shape, pool.take())            # in file order
    images, labels = files.scatter(blocks, perm, lo, hi, shape, ...)   # in batch order
    files.close()

Uncompressed images are read with `os.preadv` at the chunks' byte offsets (the copy runs
without Python's GIL); compressed ones through h5py. The reading order and the windows are
the reader's (reader.py); this module only moves bytes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import h5py
import numpy as np

from hpctrain.data.layout import Piece

ALIGN = 64  # bytes: TensorFlow shares (does not copy) numpy memory aligned to this (Eigen's max)


class WindowFiles:
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
            f = self._open(b.path)
            layout = self._layout(f, b)
            if layout is None:
                f[b.prefix + "images"].read_direct(images, np.s_[b.start:b.stop],
                                                   np.s_[at:at + b.count])
            else:
                for i, take, offset in _runs(b, layout, row_bytes):
                    _preadv(self.fds[b.path], [flat[at + i:at + i + take]], offset)
            labels[at:at + b.count] = f[b.prefix + "labels"][b.start:b.stop]
            at += b.count
        return images, labels

    def scatter(self, blocks: list[Piece], perm: np.ndarray, lo: int, hi: int,
                shape: tuple[int, ...], out: np.ndarray | None = None,
                head: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Rows `perm[lo:hi]` of the window `blocks` (numbered in block order), in that order,
        after the rows of `head` if given: the same rows `read(...)[perm[lo:hi]]` gives, read
        straight into their places (one preadv per chunk, each row into its own slot; rows
        the window does not use go to a scratch row) instead of read and then gathered."""
        c = len(head[1]) if head is not None else 0
        m = c + hi - lo
        where = np.full(len(perm), -1, np.int64)  # window row -> its place in the output
        where[perm[lo:hi]] = c + np.arange(hi - lo)
        images = np.empty((m, *shape), np.uint8) if out is None else out[:m]
        labels = np.empty((m,), np.int32)
        if head is not None:
            images[:c], labels[:c] = head
        row_bytes = int(np.prod(shape))
        flat, scratch = images.reshape(m, row_bytes), np.empty(row_bytes, np.uint8)
        at = 0
        for b in blocks:
            f = self._open(b.path)
            dest = where[at:at + b.count]
            used = dest >= 0
            layout = self._layout(f, b)
            if layout is None:
                images[dest[used]] = f[b.prefix + "images"][b.start:b.stop][used]
            else:
                for i, take, offset in _runs(b, layout, row_bytes):
                    _preadv(self.fds[b.path], [flat[d] if d >= 0 else scratch
                                               for d in dest[i:i + take]], offset)
            labels[dest[used]] = f[b.prefix + "labels"][b.start:b.stop][used]
            at += b.count
        return images, labels

    def _open(self, path: str) -> h5py.File:
        f = self.files.get(path)
        if f is None:
            f = self.files[path] = h5py.File(path, "r")
            self.fds[path] = os.open(path, os.O_RDONLY)
        return f

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        for fd in self.fds.values():
            os.close(fd)
        self.files.clear()
        self.fds.clear()


def _runs(b: Piece, layout: tuple[int, list[int]], row_bytes: int
          ) -> Iterator[tuple[int, int, int]]:
    """The block's rows as runs that are contiguous in the file, one per chunk it touches:
    (first row, counted from the block's start; rows; byte offset in the file)."""
    rows, offsets = layout
    row = b.start
    while row < b.stop:
        chunk, within = divmod(row, rows)
        take = min(b.stop - row, rows - within)
        yield row - b.start, take, offsets[chunk] + within * row_bytes
        row += take


def _preadv(fd: int, rows: list[np.ndarray], offset: int) -> None:
    """Consecutive bytes of the file from `offset` into `rows`, in order."""
    views = [row.data.cast("B") for row in rows]
    limit, i = min(1024, os.sysconf("SC_IOV_MAX")), 0
    while i < len(views):
        got = os.preadv(fd, views[i:i + limit], offset)
        if got <= 0:
            raise OSError(f"short read at byte {offset} (file truncated?)")
        offset += got
        while i < len(views) and got >= len(views[i]):
            got -= len(views[i])
            i += 1
        if got:  # a short read ended inside this row: the rest of it next
            views[i] = views[i][got:]


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
