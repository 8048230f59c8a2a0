"""An ImageNet-layout image tree: find its images and classes, decode one image to S x S RGB.

    SOURCE/train/<class>/<image>      every class folder of train/ is a class (sorted: index)
    SOURCE/val/<class>/<image>        (or test/) the evaluation split, same class folder names

Real ImageNet's val/ comes flat (50,000 files and a label list): sort it into class folders
first, as everyone does (e.g. the `valprep.sh` script that PyTorch's ImageNet example links).

Decoding (`load_image`) turns every input into an (S, S, 3) uint8 array the same way:
grayscale, palette, CMYK, 16-bit and alpha images become RGB (alpha composited onto white),
the EXIF orientation is applied, and the file's format is taken from its bytes, not its name
(PNGs called .JPEG occur in ImageNet). Resize policies:

    center-crop   shorter side to S, then the central S x S (the usual ImageNet evaluation
                  policy; train with crops of S, or stage larger and random-crop)
    stretch       the whole image to S x S, aspect ratio not kept

Both are one Pillow `resize` with a source box; JPEGs are first decoded at a reduced scale
(`Image.draft`) when they are at least twice S, which is what makes large JPEGs cheap.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpctrain.validation import StagingError

POLICIES = ("center-crop", "stretch")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm"}
EVAL_DIRS = ("val", "test")  # the first one present is the evaluation split


@dataclass(frozen=True)
class Tree:
    root: Path
    classes: list[str]  # sorted class folder names of train/; the index is the label
    files: dict[str, list[tuple[str, int]]]  # split -> [(path relative to root, label)]
    source_dirs: dict[str, str]  # split ("train", "test") -> folder ("train", "val")
    fingerprint: str  # sha256 over every (relative path, size): changes if the tree does


def scan(root: str | Path) -> Tree:
    """Walk the tree once (names and sizes only; nothing is opened). Errors are one line."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise StagingError(f"{root}: no such directory (expected train/<class>/*.JPEG)")
    if not (root / "train").is_dir():
        raise StagingError(f"{root}: no train/ folder (expected train/<class>/*.JPEG)")
    eval_dir = next((d for d in EVAL_DIRS if (root / d).is_dir()), None)
    if eval_dir is None:
        raise StagingError(f"{root}: no val/ (or test/) folder next to train/")
    classes = _class_dirs(root / "train")
    if not classes:
        raise StagingError(f"{root}/train: no class folders (expected train/<class>/*.JPEG)")
    index = {name: i for i, name in enumerate(classes)}
    digest = hashlib.sha256()
    files: dict[str, list[tuple[str, int]]] = {}
    for split, folder in (("train", "train"), ("test", eval_dir)):
        split_classes = _class_dirs(root / folder)
        loose = [e.name for e in os.scandir(root / folder) if e.is_file()
                 and Path(e.name).suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise StagingError(f"{root / folder}: {len(loose)} images lie directly in it "
                               f"(e.g. {loose[0]}); sort them into class folders first "
                               "(for ImageNet's flat val/: valprep.sh)")
        unknown = sorted(set(split_classes) - set(index))
        if unknown:
            raise StagingError(f"{root / folder}: class folder(s) {', '.join(unknown[:5])} "
                               "are not in train/")
        items = []
        for name in split_classes:
            entries = sorted((e for e in os.scandir(root / folder / name)
                              if e.is_file() and not e.name.startswith(".")
                              and Path(e.name).suffix.lower() in IMAGE_SUFFIXES),
                             key=lambda e: e.name)
            for e in entries:
                rel = f"{folder}/{name}/{e.name}"
                digest.update(f"{rel}\0{e.stat().st_size}\n".encode())
                items.append((rel, index[name]))
        if not items:
            raise StagingError(f"{root / folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files[split] = items
    return Tree(root, classes, files, {"train": "train", "test": eval_dir}, digest.hexdigest())


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def load_image(path: str | Path, size: int, policy: str = "center-crop") -> np.ndarray:
    """Decode one image file to (size, size, 3) uint8. Raises OSError (or ValueError) for a
    file Pillow cannot decode, including a truncated one."""
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data", palette transparency
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (size * 2, size * 2))  # decode at 1/2..1/8 scale if large
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _as_rgb(img)
            w, h = img.size
            if policy == "center-crop":
                side = min(w, h)
                left, top = (w - side) / 2, (h - side) / 2
                box = (left, top, left + side, top + side)
            else:
                box = (0, 0, w, h)
            out = img.resize((size, size), Image.Resampling.BILINEAR, box=box,
                             reducing_gap=None if max(w, h) < 3 * size else 3.0)
            return np.asarray(out, dtype=np.uint8)


def _as_rgb(img):
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):  # 16/32-bit: scale to 8 bits
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info or img.mode in ("RGBA", "LA", "PA", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK (Pillow undoes Adobe's inverted CMYK), YCbCr
