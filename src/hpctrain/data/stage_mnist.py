"""Stage MNIST-format data (four IDX files, gzipped or not, or a Keras `mnist.npz`) into HDF5.

    hpctrain stage fashion-mnist --source /usr/share/datasets/fashion-mnist --out data/fmnist.h5
    hpctrain stage mnist --source ~/Downloads/mnist.npz --out data/mnist.h5

Layout of the output: `train/images` (N, 28, 28, 1) uint8, `train/labels` (N,) uint8, the same
under `test/`, chunked along N; attributes record the source files' sha256, counts and class
names. The file is written under a temporary name, validated, then renamed: a failed staging
leaves nothing behind.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hpctrain import __version__
from hpctrain.atomic import atomic_path, file_sha256
from hpctrain.data.layout import check_h5
from hpctrain.validation import StagingError

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
}
IDX_FILES = {  # split -> (images stem, labels stem); both `-idx3-ubyte` and `.idx3-ubyte` occur
    "train": ("train-images", "train-labels"),
    "test": ("t10k-images", "t10k-labels"),
}
NPZ_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
IMAGE_SHAPE = (28, 28)
CHUNK_SAMPLES = 1024


@dataclass
class Split:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) uint8


# ---- IDX -------------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a uint8 array, checking header against size."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise StagingError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00":
        raise StagingError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise StagingError(f"{path}: IDX data type 0x{dtype_code:02x} is not unsigned byte")
    if len(raw) < 4 + 4 * ndim:
        raise StagingError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    expected = int(np.prod(dims)) + 4 + 4 * ndim
    if len(raw) != expected:
        raise StagingError(f"{path}: {len(raw)} bytes but header {dims} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_idx(source: Path, stem: str, kind: str) -> Path:
    candidates = [source / f"{stem}{sep}{kind}-ubyte{gz}"
                  for sep in ("-", ".") for gz in ("", ".gz")]
    found = [c for c in candidates if c.is_file()]
    if not found:
        raise StagingError(f"{source}: missing {stem}-{kind}-ubyte[.gz]")
    return found[0]


def load_idx_dir(source: Path) -> tuple[dict[str, Split], dict[str, str]]:
    splits, hashes = {}, {}
    for split, (img_stem, lbl_stem) in IDX_FILES.items():
        img_path = find_idx(source, img_stem, "idx3")
        lbl_path = find_idx(source, lbl_stem, "idx1")
        splits[split] = Split(read_idx(img_path), read_idx(lbl_path))
        hashes[img_path.name] = file_sha256(img_path)
        hashes[lbl_path.name] = file_sha256(lbl_path)
    return splits, hashes


# ---- npz -------------------------------------------------------------------------------------
def load_npz(source: Path) -> tuple[dict[str, Split], dict[str, str]]:
    try:
        npz = np.load(source, allow_pickle=False)
    except Exception as e:  # zipfile / pickle / value errors all mean "not a usable npz"
        raise StagingError(f"{source}: cannot read as .npz ({type(e).__name__}: {e})") from None
    with npz:
        missing = [k for pair in NPZ_KEYS.values() for k in pair if k not in npz.files]
        if missing:
            raise StagingError(f"{source}: missing arrays {missing} (has {sorted(npz.files)})")
        splits = {}
        for split, (x, y) in NPZ_KEYS.items():
            try:
                splits[split] = Split(np.asarray(npz[x]), np.asarray(npz[y]))
            except Exception as e:  # object arrays (pickle refused), corrupt members
                raise StagingError(f"{source}: cannot read {x}/{y} "
                                   f"({type(e).__name__}: {' '.join(str(e).split())})"
                                   ) from None
    return splits, {source.name: file_sha256(source)}


# ---- validation and writing --------------------------------------------------------------------
def validate(splits: dict[str, Split], origin: str) -> None:
    for name, s in splits.items():
        if s.images.ndim == 4 and s.images.shape[-1] == 1:
            s.images = s.images[..., 0]
        if s.images.ndim != 3 or s.images.shape[1:] != IMAGE_SHAPE:
            raise StagingError(f"{origin}: {name} images have shape {s.images.shape}, "
                               f"expected (N, 28, 28)")
        if s.labels.ndim != 1:
            raise StagingError(f"{origin}: {name} labels have shape {s.labels.shape}, "
                               f"expected (N,)")
        if len(s.images) != len(s.labels):
            raise StagingError(f"{origin}: {name} has {len(s.images)} images "
                               f"but {len(s.labels)} labels")
        if len(s.images) == 0:
            raise StagingError(f"{origin}: {name} split is empty")
        s.images = _as_uint8(s.images, f"{origin}: {name} images", 255)
        s.labels = _as_uint8(s.labels, f"{origin}: {name} labels", 9)


def _as_uint8(a: np.ndarray, what: str, top: int) -> np.ndarray:
    """Integer arrays whose values lie in [0, top], as uint8; anything else is refused:
    a float image in [0, 1] would silently become all zeros, a label 1.9 would become 1."""
    if a.dtype.kind not in "iu":
        raise StagingError(f"{what} have dtype {a.dtype}: expected integers 0-{top} "
                           "(uint8 pixels, integer class labels)")
    if a.size and (a.min() < 0 or a.max() > top):
        raise StagingError(f"{what} outside 0-{top} (min {a.min()}, max {a.max()})")
    return a.astype(np.uint8, copy=False)


def write_h5(out: Path, splits: dict[str, Split], attrs: dict, compression: str | None) -> None:
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, s in splits.items():
                n = len(s.images)
                chunk = min(CHUNK_SAMPLES, n)
                g = f.create_group(name)
                g.create_dataset("images", data=s.images[..., None], chunks=(chunk, 28, 28, 1),
                                 compression=compression)
                g.create_dataset("labels", data=s.labels, chunks=(chunk,),
                                 compression=compression)
                g.attrs["count"] = n
            for k, v in attrs.items():
                f.attrs[k] = v
        check_h5(tmp, expect={k: len(s.labels) for k, s in splits.items()})


def stage(dataset: str, source: Path, out: Path, compression: str | None = None) -> dict:
    """Stage `source` (IDX directory or .npz) as `dataset` into `out`; returns a summary."""
    source = Path(source)
    if dataset not in CLASS_NAMES:
        raise StagingError(f"unknown dataset {dataset!r}; choose from {sorted(CLASS_NAMES)}")
    if source.is_dir():
        splits, hashes, fmt = *load_idx_dir(source), "idx"
    elif source.is_file() and source.suffix == ".npz":
        splits, hashes, fmt = *load_npz(source), "npz"
    elif source.exists():
        raise StagingError(f"{source}: expected a directory of IDX files or a .npz file")
    else:
        raise StagingError(f"{source}: no such file or directory")
    validate(splits, str(source))
    counts = {k: len(s.labels) for k, s in splits.items()}
    attrs = {
        "dataset": dataset,
        "source": str(source.resolve()),
        "source_format": fmt,
        "source_sha256": json.dumps(hashes, sort_keys=True),
        "train_count": counts["train"],
        "test_count": counts["test"],
        "class_names": json.dumps(CLASS_NAMES[dataset]),
        "num_classes": 10,
        "staged_by": f"hpctrain {__version__}",
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_h5(out, splits, attrs, compression)
    return {"out": str(out), "counts": counts, "sha256": hashes,
            "bytes": os.path.getsize(out), "format": fmt}
