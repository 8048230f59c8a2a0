"""scripts/make_imagefolder.py: an ImageNet-layout tree made of the real Fashion-MNIST images,
with the variety of a real tree (sizes, colour modes, PNGs, broken files)."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FASHION_DIR, REPO

SCRIPT = REPO / "scripts" / "make_imagefolder.py"


def _idx(name: str) -> np.ndarray:
    raw = gzip.decompress((FASHION_DIR / f"{name}.gz").read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _make(out: Path, *args: str) -> str:
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tree") / "fmnist"
    _make(out, "--train", "300", "--val", "60", "--unreadable", "2", "--workers", "2")
    return out


def test_layout_counts_and_labels(tree):
    classes = sorted(p.name for p in (tree / "train").iterdir())
    assert classes == sorted(["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                              "Shirt", "Sneaker", "Bag", "Ankle_boot"])
    assert not tree.with_name(tree.name + ".partial").exists()
    sources = {"train": (_idx("train-images-idx3-ubyte"), _idx("train-labels-idx1-ubyte")),
               "val": (_idx("t10k-images-idx3-ubyte"), _idx("t10k-labels-idx1-ubyte"))}
    names = ["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle_boot"]
    for split, want in (("train", 300), ("val", 60)):
        files = [p for p in (tree / split).rglob("fmnist_*")]
        assert len(files) == want
        per_class = [len(list((tree / split / c).glob("fmnist_*"))) for c in names]
        assert per_class == [want // 10] * 10  # balanced
        images, labels = sources[split]
        for path in files[::7]:  # the right image under the right class
            index = int(path.stem.rsplit("_", 1)[1])
            assert names[labels[index]] == path.parent.name
            small = np.asarray(Image.open(path).convert("L").resize((28, 28), Image.BILINEAR),
                               np.float32)
            corr = np.corrcoef(small.ravel(), images[index].astype(np.float32).ravel())[0, 1]
            assert abs(corr) > 0.8, (path, corr)  # tinted images are inverted: white ground


def test_variety_of_a_real_tree(tree):
    modes, formats, shorter = set(), set(), []
    for path in (tree / "train").rglob("fmnist_*"):
        with Image.open(path) as im:
            modes.add(im.mode)
            formats.add((path.suffix, im.format))
            shorter.append(min(im.size))
    assert {"RGB", "L", "CMYK", "P"} <= modes
    assert {(".JPEG", "JPEG"), (".JPEG", "PNG"), (".png", "PNG")} <= formats
    assert min(shorter) >= 40 and max(shorter) <= 160 and len(set(shorter)) > 50
    broken = sorted((tree / "train").rglob("broken_*"))
    assert len(broken) == 2
    for path in broken:
        with pytest.raises(OSError), Image.open(path) as im:  # unreadable, as in real trees
            im.load()


def test_same_seed_same_tree(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _make(a, "--train", "20", "--val", "10", "--workers", "1")
    _make(b, "--train", "20", "--val", "10", "--workers", "2")

    def digest(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*") if p.is_file()}

    assert digest(a) == digest(b) and len(digest(a)) == 20 + 10 + 2 * 5


def test_photo_sized_jpegs_with_grain(tmp_path):
    """The benchmark's tree: ImageNet-sized shorter sides, one JPEG quality, pixel noise that
    makes the files (their entropy) larger than the same images without it."""
    import io

    sized = {}
    for grain in ("0", "6"):
        out = tmp_path / f"grain{grain}"
        _make(out, "--train", "20", "--val", "10", "--unreadable", "0", "--workers", "1",
              "--short-side", "333-375", "--quality", "90", "--grain", grain)
        jpegs = [p for p in out.rglob("*.JPEG") if Image.open(p).format == "JPEG"]
        assert len(jpegs) >= 20
        reference = io.BytesIO()
        Image.new("RGB", (8, 8)).save(reference, "JPEG", quality=90)
        q90 = Image.open(reference).quantization
        for p in jpegs:
            img = Image.open(p)
            assert 333 <= min(img.size) <= 375 and max(img.size) <= 500, img.size
            assert img.quantization[0] == q90[0]
        sized[grain] = sum(p.stat().st_size for p in jpegs) / len(jpegs)
    assert sized["6"] > 1.5 * sized["0"], sized
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x"),
                          "--short-side", "375-333"], capture_output=True, text=True)
    assert res.returncode == 2 and "expected 0 < LO <= HI" in res.stderr
