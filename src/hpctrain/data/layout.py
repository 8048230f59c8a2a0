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

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hpctrain.atomic import file_sha256, write_json
from hpctrain.data.shards import MANIFEST, load_manifest
from hpctrain.experiment import NODE, ConfigError, TrainConfig, data_on
from hpctrain.validation import StagingError


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


SAMPLE_BLOCKS, BLOCK = 8, 64 << 10
FINGERPRINT_FILE = "data_fingerprint.json"  # in a run directory: its data's fingerprint


def fingerprint(path: str | Path) -> dict[str, str]:
    """What a run records of its data, to notice a file replaced or rewritten between its
    segments: for every file of the staged data (the HDF5 file, or a shard directory's
    manifest and shards), its size and a sha256 over SAMPLE_BLOCKS blocks spread through it.
    Cheap at any size (a staged ImageNet is ~150 GB; hashing it all on every resume is not),
    the same on a node-local copy as on the original, and different when a file is replaced
    or rewritten, though not for every single changed byte."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    out = {}
    for f in files:
        size = f.stat().st_size
        h = hashlib.sha256(str(size).encode())
        with open(f, "rb") as fh:
            for i in range(SAMPLE_BLOCKS):
                fh.seek(max(0, size - BLOCK) * i // max(1, SAMPLE_BLOCKS - 1))
                h.update(fh.read(BLOCK))
        out[f.name] = f"{size}:{h.hexdigest()[:16]}"
    return out


def fingerprint_change(before: dict[str, str], now: dict[str, str]) -> str | None:
    """None when nothing changed; otherwise the first change, in a few words."""
    for name in sorted(set(before) | set(now)):
        if name not in now:
            return f"{name} is gone"
        if name not in before:
            return f"{name} is new"
        if before[name] != now[name]:
            (b_size, _), (n_size, _) = before[name].split(":"), now[name].split(":")
            return f"{name} changed ({int(b_size):,} -> {int(n_size):,} bytes)" \
                if b_size != n_size else f"{name} changed (same size, other bytes)"
    return None


def record_fingerprint(run_dir: Path, data: str | Path,
                       now: dict[str, str] | None = None) -> str | None:
    """Store the data's fingerprint (`now`, if already taken) in the run directory; when it
    replaces a different one, what changed."""
    record, now = run_dir / FINGERPRINT_FILE, now or fingerprint(data)
    before = json.loads(record.read_text()) if record.is_file() else None
    if before != now:
        write_json(record, now)
    return fingerprint_change(before, now) if before is not None else None


def check_data(cfg: TrainConfig, node_name: str = "") -> None:
    """Make `cfg.data` absolute (relative paths are taken from the cwd) and check the staged
    file before anything is queued or started; synthetic configs have no file. A path with
    `{node}` (a node-local copy) is checked where it will be read: on `node_name`."""
    if cfg.synthetic:
        return
    cfg.data = str(Path(cfg.data).expanduser().resolve())
    if NODE in cfg.data and not node_name:
        return  # rendered into a job script; each rank checks its node's copy
    info = check_staged(data_on(cfg, node_name))
    height, width = info["input_shape"][:2]
    if cfg.crop > min(height, width):
        raise ConfigError(f"crop {cfg.crop} is larger than the staged images "
                          f"({height}x{width}) of {cfg.data}")
