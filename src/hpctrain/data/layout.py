"""What a staged data set is, and the checks every reader and submitter runs on it. Two
layouts, read by the same reader (reader.py) as a list of `Piece`s per split:

A single HDF5 file (MNIST family, stage_mnist.py):

    train/images  (N, H, W, C) uint8, chunked along N     train/labels  (N,) uint8
    test/images   (M, H, W, C) uint8                      test/labels   (M,) uint8
    attributes: dataset, class_names (JSON), num_classes, source, source_sha256 (JSON),
                train_count, test_count, staged_by

A directory of HDF5 shards plus manifest.json (image folders, shards.py and
stage_imagefolder.py): `images`/`labels` in every shard, the manifest lists them per split.

`check_staged` runs before anything is queued or any rank starts, so a wrong or truncated file
fails with one line instead of a hang in a collective.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hpctrain.validation import InputError


class StagingError(InputError):
    """Bad staging input or a bad staged file; the message is one line naming the problem."""


def check_h5(path: str | Path, expect: dict[str, int] | None = None) -> dict:
    """Open a staged file and check its layout; returns its attributes."""
    if not Path(path).is_file():
        raise StagingError(f"{path}: no such data file (stage it with `hpctrain stage`)")
    try:
        with h5py.File(path, "r") as f:
            for split in ("train", "test"):
                if f"{split}/images" not in f or f"{split}/labels" not in f:
                    raise StagingError(f"{path}: missing {split}/images or {split}/labels")
                img, lbl = f[f"{split}/images"], f[f"{split}/labels"]
                if img.ndim != 4 or img.dtype != np.uint8 or img.shape[0] != lbl.shape[0]:
                    raise StagingError(f"{path}: {split} has images {img.shape} {img.dtype}, "
                                       f"labels {lbl.shape}")
                if expect and img.shape[0] != expect[split]:
                    raise StagingError(f"{path}: {split} holds {img.shape[0]} samples, "
                                       f"expected {expect[split]}")
            return dict(f.attrs)
    except OSError as e:
        raise StagingError(f"{path}: not a readable HDF5 file ({e})") from None


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of one HDF5 file's `{prefix}images` and `{prefix}labels`."""
    path: str
    prefix: str  # "train/" or "test/" in a single file; "" in a shard
    start: int
    stop: int
    chunk: int  # rows per HDF5 chunk of the images: reads are aligned to it

    @property
    def count(self) -> int:
        return self.stop - self.start


def check_staged(path: str | Path) -> dict:
    """Check a staged file or shard directory; returns its description (see `describe`, which
    for a directory loads, and so checks, the manifest and its shards)."""
    if not Path(path).is_dir():
        check_h5(path)
    return describe(str(path))


def split_pieces(path: str, split: str) -> list[Piece]:
    """Every row of `split` ("train" or "test") as pieces, in order."""
    if not Path(path).exists():
        raise StagingError(f"{path}: no such staged file or directory")
    if Path(path).is_dir():
        from hpctrain.data.shards import load_manifest

        manifest = load_manifest(path)
        rows = int(manifest.get("chunk_rows", 1))
        return [Piece(str(Path(path) / s["file"]), "", 0, s["count"], min(rows, s["count"]))
                for s in manifest["splits"][split]["shards"] if s["count"]]
    with h5py.File(path, "r") as f:
        images = f[f"{split}/images"]
        return [Piece(str(path), f"{split}/", 0, images.shape[0],
                      (images.chunks or (1024,))[0])]


def describe(path: str) -> dict:
    if Path(path).is_dir():
        from hpctrain.atomic import file_sha256
        from hpctrain.data.shards import MANIFEST, load_manifest

        m = load_manifest(path)
        return {
            "dataset": f"imagefolder ({Path(m['source']).name})",
            "class_names": m["class_names"],
            "num_classes": int(m["num_classes"]),
            "input_shape": tuple(m["image_shape"]),
            "train_count": int(m["splits"]["train"]["count"]),
            "test_count": int(m["splits"]["test"]["count"]),
            "source_sha256": {MANIFEST: file_sha256(Path(path) / MANIFEST)},
        }
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
