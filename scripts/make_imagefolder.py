"""Make an ImageNet-layout image tree from the real Fashion-MNIST files.

    python scripts/make_imagefolder.py --out data/fmnist-tree                  # all 70,000
    python scripts/make_imagefolder.py --out /tmp/tree --train 500 --val 100   # a small tree
    python scripts/make_imagefolder.py --out data/bench-jpeg-tree --train 600 --val 120 \
        --short-side 333-375 --quality 90-90 --grain 6   # ImageNet-sized photos' JPEGs

Layout, as ImageNet's: `train/<class>/<name>.JPEG` and `val/<class>/<name>.JPEG`, class names
as folder names ("T-shirt-top", "Trouser", ..., "Ankle_boot"). The test split becomes `val`,
so accuracy on it means what Fashion-MNIST test accuracy means (and the workshops' figures
apply). Like a real tree it is not uniform:

- sizes: each 28x28 image is upscaled (bicubic) to a random shorter side of 40-160 px
  (`--short-side`) and an aspect ratio of 3:4 to 4:3; JPEG quality 75-95 (`--quality`);
  `--grain` adds pixel noise, the fine texture of a photograph that an upscaled 28x28 image
  lacks (it makes a JPEG's entropy, and so its decoding time, closer to a photo's);
- colour: most are RGB JPEGs, tinted with a random colour; some are grayscale JPEGs, some
  CMYK JPEGs, some palette PNGs, some PNGs under a `.JPEG` name, some plain `.png` files;
- a few unreadable files (random bytes, or a JPEG cut short) under `.JPEG` names, per split.

File names carry the index in the source split (`fmnist_train_00042.JPEG`). Every image is a
pure function of (--seed, split, index), and the tree is written under
`<out>.partial` and renamed when complete, so an interrupted run leaves no half tree at `out`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import struct
import sys
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_DIRS = ["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
              "Sneaker", "Bag", "Ankle_boot"]
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# share of each kind among readable images (the rest: tinted RGB JPEGs)
KINDS = (("gray_jpeg", 0.08), ("cmyk_jpeg", 0.02), ("palette_png", 0.02),
         ("png_named_jpeg", 0.02), ("png", 0.03))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file, gzipped or not."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            raw = candidate.read_bytes()
            raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            ndim = raw[3]
            dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise SystemExit(f"make_imagefolder: {path}[.gz] not found (apt install "
                     "dataset-fashion-mnist, or --source DIR)")


def kind_of(rng: np.random.Generator) -> str:
    u = rng.random()
    for kind, share in KINDS:
        if u < share:
            return kind
        u -= share
    return "rgb_jpeg"


@dataclass(frozen=True)
class Look:
    """How the images are drawn: shorter side and JPEG quality ranges (inclusive), grain."""
    short_side: tuple[int, int] = (40, 160)
    quality: tuple[int, int] = (75, 95)
    grain: float = 0.0  # standard deviation of the pixel noise, in 0-255 units


AS_BEFORE = Look()  # the default tree's look

def render(image: np.ndarray, rng: np.random.Generator, look: Look = AS_BEFORE
           ) -> tuple[bytes, str, str]:
    """(file bytes, extension, kind) of one 28x28 uint8 image."""
    short = int(rng.integers(look.short_side[0], look.short_side[1] + 1))
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w, h = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
    gray = Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC)
    kind = kind_of(rng)
    if kind == "gray_jpeg":
        img = gray
    else:  # a random tint: white stays white, the garment takes a colour
        tint = rng.uniform(0.35, 1.0, size=3)
        g = np.asarray(gray, np.float32)[..., None] / 255.0
        rgb = 255.0 * (1.0 - g * (1.0 - tint))
        img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    if look.grain:
        pixels = np.asarray(img, np.float32)
        pixels += rng.normal(0.0, look.grain, pixels.shape).astype(np.float32)
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    quality = int(rng.integers(look.quality[0], look.quality[1] + 1))
    if kind == "cmyk_jpeg":
        img.convert("CMYK").save(out, "JPEG", quality=quality)
    elif kind == "palette_png":
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(out, "PNG")
    elif kind in ("png_named_jpeg", "png"):
        img.save(out, "PNG")
    else:
        img.save(out, "JPEG", quality=quality)
    return out.getvalue(), ".png" if kind == "png" else ".JPEG", kind


def unreadable(rng: np.random.Generator, index: int) -> bytes:
    if index % 2:
        return rng.integers(0, 256, int(rng.integers(100, 2000)), dtype=np.uint8).tobytes()
    out = io.BytesIO()  # a JPEG cut short: the header parses, the data does not
    Image.new("RGB", (64, 64), (200, 10, 10)).save(out, "JPEG")
    return out.getvalue()[:150]


def _write_chunk(args) -> dict[str, int]:
    root, split, seed, look, images, labels, indices = args
    counts: dict[str, int] = {}
    for image, label, index in zip(images, labels, indices, strict=True):
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
        data, ext, kind = render(image, rng, look)
        name = f"fmnist_{split}_{index:05d}{ext}"
        (Path(root) / split / CLASS_DIRS[int(label)] / name).write_bytes(data)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def pick(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` indices balanced over the classes (all of them for 0), in index order."""
    if count <= 0 or count >= len(labels):
        return np.arange(len(labels))
    per_class = [np.flatnonzero(labels == c) for c in range(len(CLASS_DIRS))]
    want = [count // len(per_class) + (c < count % len(per_class))
            for c in range(len(per_class))]
    chosen = [rng.choice(idx, size=min(n, len(idx)), replace=False)
              for idx, n in zip(per_class, want, strict=True)]
    return np.sort(np.concatenate(chosen))


def make(source: Path, out: Path, counts: dict[str, int], n_unreadable: int, seed: int,
         workers: int, look: Look = AS_BEFORE) -> dict:
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    summary: dict = {"out": str(out), "splits": {}}
    for split, (img_name, lbl_name) in SPLITS.items():
        images, labels = read_idx(source / img_name), read_idx(source / lbl_name)
        chosen = pick(labels, counts[split], np.random.default_rng([seed, 7]))
        for name in CLASS_DIRS:
            (partial / split / name).mkdir(parents=True, exist_ok=True)
        step = 500
        jobs = [(str(partial), split, seed, look, images[chosen[i:i + step]],
                 labels[chosen[i:i + step]], chosen[i:i + step])
                for i in range(0, len(chosen), step)]
        kinds: dict[str, int] = {}
        with Pool(workers) as pool:
            for result in pool.imap_unordered(_write_chunk, jobs):
                for k, v in result.items():
                    kinds[k] = kinds.get(k, 0) + v
        rng = np.random.default_rng([seed, 9, 0 if split == "train" else 1])
        for i in range(n_unreadable):
            cls = CLASS_DIRS[i % len(CLASS_DIRS)]
            (partial / split / cls / f"broken_{split}_{i:03d}.JPEG").write_bytes(
                unreadable(rng, i))
        summary["splits"][split] = {"images": len(chosen), "unreadable": n_unreadable,
                                    "kinds": dict(sorted(kinds.items()))}
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return summary


def span(text: str) -> tuple[int, int]:
    """"LO-HI" (or one number) as an inclusive range of positive integers."""
    lo, _, hi = text.partition("-")
    try:
        pair = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LO-HI, e.g. 40-160") from None
    if not 0 < pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 < LO <= HI")
    return pair


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--source", type=Path, default=FASHION_DIR,
                   help="directory of the Fashion-MNIST IDX files (gzipped or not)")
    p.add_argument("--out", type=Path, required=True, help="tree to write (replaced)")
    p.add_argument("--train", type=int, default=0,
                   help="training images, balanced over classes (0: all 60,000)")
    p.add_argument("--val", type=int, default=0,
                   help="validation images from the test split (0: all 10,000)")
    p.add_argument("--unreadable", type=int, default=5, help="broken files per split")
    p.add_argument("--short-side", type=span, default=Look.short_side, metavar="LO-HI",
                   help="range of each image's shorter side in px (default 40-160)")
    p.add_argument("--quality", type=span, default=Look.quality, metavar="LO-HI",
                   help="range of the JPEG quality (default 75-95)")
    p.add_argument("--grain", type=float, default=0.0,
                   help="pixel noise, standard deviation in 0-255 units (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    look = Look(args.short_side, args.quality, args.grain)
    summary = make(args.source, args.out, {"train": args.train, "val": args.val},
                   args.unreadable, args.seed, max(1, args.workers), look)
    for split, s in summary["splits"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in s["kinds"].items())
        print(f"{split}: {s['images']} images ({kinds}) + {s['unreadable']} unreadable")
    print(f"tree: {summary['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
