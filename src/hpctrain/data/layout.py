"""The layout of a staged HDF5 file, and the checks every reader and submitter runs on it.

    train/images  (N, H, W, C) uint8, chunked along N     train/labels  (N,) uint8
    test/images   (M, H, W, C) uint8                      test/labels   (M,) uint8
    attributes: dataset, class_names (JSON), num_classes, source, source_sha256 (JSON),
                train_count, test_count, staged_by

`check_h5` runs before anything is queued or any rank starts, so a wrong or truncated file
fails with one line instead of a hang in a collective.
"""

from __future__ import annotations

import json
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
