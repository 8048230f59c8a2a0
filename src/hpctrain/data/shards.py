"""A staged image-folder directory: HDF5 shards per split, and the manifest that lists them.

    OUT/manifest.json                  classes, per-shard counts, bytes and sha256, the resize
                                       policy, the source and its fingerprint
    OUT/train-00000-of-00016.h5        images (n, S, S, 3) uint8, labels (n,) int32,
    ...                                paths (n,) source paths; attrs: plan, split, shard
    OUT/test-00000-of-00002.h5         (the evaluation split: the source's val/ or test/)

A shard appears under its final name only when complete (written under a temporary name and
renamed); the manifest appears last, when every shard is there. Images are chunked in slabs
of about 4 MiB along N, so a reader's large reads are whole chunks.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from hpctrain.atomic import atomic_path, write_json
from hpctrain.validation import StagingError

MANIFEST = "manifest.json"
FORMAT = "hpctrain-imagefolder/1"
CHUNK_BYTES = 4 << 20


def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.h5"


def chunk_rows(image_bytes: int, capacity: int) -> int:
    return max(1, min(capacity, round(CHUNK_BYTES / image_bytes)))


class ShardWriter:
    """Write one shard image by image, a chunk at a time, under a temporary name; `finish`
    trims it to the images actually written (unreadable ones are skipped) and renames it."""

    def __init__(self, path: Path, capacity: int, shape: tuple[int, int, int],
                 compression: str | None, attrs: dict):
        self.path, self.capacity, self.attrs = path, max(1, capacity), attrs
        self._atomic = atomic_path(path)
        self.tmp = self._atomic.__enter__()
        self.file = h5py.File(self.tmp, "w")
        rows = chunk_rows(int(np.prod(shape)), self.capacity)
        self.images = self.file.create_dataset(
            "images", shape=(self.capacity, *shape), maxshape=(self.capacity, *shape),
            dtype=np.uint8, chunks=(rows, *shape), compression=compression,
            fillvalue=None, fill_time="never")  # every kept row is written: no fill pass
        # Two chunk buffers: one fills while the other is written by a thread (h5py releases
        # the GIL while HDF5 writes, so the writing overlaps the next images' decoding). HDF5
        # itself is not thread-safe: while a write may be running, this object makes no other
        # HDF5 call (`_wait` first), and staging closes shards in the decoding thread.
        self.compressed = compression is not None
        self._buffers = [np.empty((rows, *shape), np.uint8) for _ in range(2)]
        self.buffer = self._buffers[0]
        self._writing: Future | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="shard-write")
        self.labels: list[int] = []
        self.paths: list[str] = []
        self.filled = 0  # images in the buffer
        self.count = 0  # images written or buffered

    def add(self, image: np.ndarray, label: int, path: str) -> None:
        self.buffer[self.filled] = image
        self.filled += 1
        self.count += 1
        self.labels.append(label)
        self.paths.append(path)
        if self.filled == len(self.buffer):
            self._flush()

    def _flush(self) -> None:
        """The buffer as the next chunk, written in the writer thread while the other buffer
        fills; an error of that write is raised here at the next chunk, or by `close`.
        Uncompressed, a chunk goes into the file as it is (`write_direct_chunk`: one write,
        where h5py's selection path cost ~5 ms per 4 MiB chunk, a fifth of staging's time
        beyond decoding); the rows past the last image of a short final chunk are zeroed
        (outside the data set once `close` trims it, but in the file's bytes, which the
        manifest's sha256 covers)."""
        if not self.filled:
            return
        start, end, full = self.count - self.filled, self.count, self.buffer
        if not self.compressed:
            full[self.filled:] = 0
        self._wait()  # the other buffer's write: done before that buffer is filled again
        self._writing = self._writer.submit(self._write_chunk, full, start, end)
        self.buffer = self._buffers[1] if full is self._buffers[0] else self._buffers[0]
        self.filled = 0

    def _write_chunk(self, chunk: np.ndarray, start: int, end: int) -> None:
        if not self.compressed:
            self.images.id.write_direct_chunk((start,) + (0,) * (chunk.ndim - 1), chunk)
        else:
            self.images[start:end] = chunk[:end - start]

    def _wait(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def finish(self) -> None:
        self.close()
        self.seal()

    def close(self) -> None:
        """Everything into the temporary file, closed; not yet durable or in place."""
        self._flush()
        self._wait()
        self._writer.shutdown()
        self.images.resize(self.count, axis=0)
        self.file.create_dataset("labels", data=np.asarray(self.labels, np.int32))
        self.file.create_dataset("paths", data=np.asarray(self.paths, dtype=object),
                                 dtype=h5py.string_dtype())
        for key, value in {**self.attrs, "count": self.count}.items():
            self.file.attrs[key] = value
        self.file.close()

    def seal(self) -> None:
        """After `close`: fsync the temporary file and rename it onto the shard's name (the
        temporary file is removed if that fails). Mostly waiting on the disk: staging runs it
        in a thread while the next shard is decoded."""
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        self._writer.shutdown(wait=True)  # the chunk being written, if any, before closing
        self.file.close()
        self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)


def complete_shard(path: Path, plan: str) -> dict | None:
    """The attributes of `path` if it is a complete shard of this staging plan, else None
    (missing, from another plan, or unreadable: then it is staged again)."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            n = f["images"].shape[0]
            if attrs.get("plan") != plan or attrs.get("count") != n or f["labels"].shape != (n,):
                return None
            return attrs
    except (OSError, KeyError):
        return None


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files a killed writer of this shard left behind (see atomic.atomic_path)."""
    for stale in path.parent.glob(f".{path.stem}.tmp*{path.suffix}"):
        stale.unlink(missing_ok=True)


def write_manifest(out: Path, manifest: dict) -> None:
    write_json(out / MANIFEST, manifest)


def load_manifest(out: str | Path) -> dict:
    """The manifest of a staged directory, checked for the shards it lists (names and sizes;
    contents are checked by sha256 when copied, see local_copy.py)."""
    out = Path(out)
    path = out / MANIFEST
    if not path.is_file():
        partial = ([p for p in out.glob("*.h5") if not p.name.startswith(".")]
                   if out.is_dir() else [])
        hint = (f"; it holds {len(partial)} shard(s) of an unfinished staging: rerun the same "
                "`hpctrain stage imagefolder` command to finish it") if partial else ""
        raise StagingError(f"{out}: no {MANIFEST} (not a staged image folder){hint}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StagingError(f"{path}: unreadable ({e})") from None
    if manifest.get("format") != FORMAT:
        raise StagingError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    subset = manifest.get("node_local_subset")  # a node-local copy holds only what it needs
    for split in ("train", "test"):
        for shard in manifest["splits"][split]["shards"]:
            f = out / shard["file"]
            if subset is not None and shard["file"] not in subset:
                continue
            if not f.is_file():
                raise StagingError(f"{out}: shard {shard['file']} listed in {MANIFEST} is "
                                   "missing")
            if f.stat().st_size != shard["bytes"]:
                raise StagingError(f"{f}: {f.stat().st_size} bytes, {MANIFEST} says "
                                   f"{shard['bytes']} (changed or truncated)")
    return manifest
