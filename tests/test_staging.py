"""Staging round trips on real Fashion-MNIST and on small .npz files, and bad input."""

from __future__ import annotations

import gzip
import hashlib
import json

import h5py
import numpy as np
import pytest

from conftest import FASHION_DIR, hpctrain
from hpctrain.data.stage_mnist import check_h5, read_idx, stage
from hpctrain.validation import StagingError


def test_fashion_mnist_round_trip(fmnist_h5):
    with h5py.File(fmnist_h5) as f:
        assert f["train/images"].shape == (60000, 28, 28, 1)
        assert f["test/images"].shape == (10000, 28, 28, 1)
        assert f["train/images"].dtype == np.uint8
        assert f["train/images"].chunks[0] < 60000  # chunked along N
        for split in ("train", "test"):
            labels = f[f"{split}/labels"][:]
            assert set(np.unique(labels)) == set(range(10))
        hashes = json.loads(f.attrs["source_sha256"])
        names = json.loads(f.attrs["class_names"])
        first = f["train/images"][:5, ..., 0]
        last_label = int(f["test/labels"][-1])
    assert names[9] == "Ankle boot"
    assert len(hashes) == 4
    for name, digest in hashes.items():
        assert hashlib.sha256((FASHION_DIR / name).read_bytes()).hexdigest() == digest
    raw = read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(first, raw[:5])
    assert last_label == read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")[-1]


def test_uncompressed_idx_dir(tmp_path):
    src = tmp_path / "idx"
    src.mkdir()
    for p in FASHION_DIR.glob("*.gz"):  # the original MNIST site's names use a dot
        (src / p.name[:-3].replace("-idx", ".idx")).write_bytes(gzip.decompress(p.read_bytes()))
    summary = stage("fashion-mnist", src, tmp_path / "out.h5")
    assert summary["counts"] == {"train": 60000, "test": 10000}


def _npz(path, n_train=50, n_test=20, shape=(28, 28), labels_max=9):
    rng = np.random.default_rng(0)
    np.savez(path,
             x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
             y_train=rng.integers(0, labels_max + 1, n_train, dtype=np.uint8),
             x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
             y_test=rng.integers(0, labels_max + 1, n_test, dtype=np.uint8))
    return path


def test_npz_round_trip(tmp_path):
    src = _npz(tmp_path / "mnist.npz")
    out = tmp_path / "mnist.h5"
    res = hpctrain("stage", "mnist", "--source", str(src), "--out", str(out), check=True)
    assert "50 train + 20 test" in res.stdout
    ref = np.load(src)
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["train/images"][..., 0], ref["x_train"])
        np.testing.assert_array_equal(f["test/labels"][:], ref["y_test"])
        assert json.loads(f.attrs["class_names"])[3] == "3"
        assert f.attrs["source_format"] == "npz"
    assert check_h5(out)["train_count"] == 50


def _npz_with(path, **changes):
    """A valid mnist.npz with some arrays replaced."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 50, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 20, dtype=np.uint8)}
    np.savez(path, **{**arrays, **changes})
    return path


def _corrupt_npz(tmp_path):
    """Flip bytes inside the compressed-or-stored data of one member: a CRC error on read."""
    path = _npz(tmp_path / "c.npz")
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 3
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
    path.write_bytes(bytes(raw))
    return path


def _truncated_idx(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    for p in FASHION_DIR.glob("*.gz"):
        (d / p.name).write_bytes(p.read_bytes())
    raw = gzip.decompress((d / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw[:-7]))
    return d


BAD_SOURCES = {
    "missing source": (lambda t: t / "nope", "no such file or directory"),
    "empty directory": (lambda t: (t / "e").mkdir() or t / "e", "missing train-images"),
    "wrong-shaped npz": (lambda t: _npz(t / "w.npz", shape=(32, 32)), "expected (N, 28, 28)"),
    "labels out of range": (lambda t: _npz(t / "l.npz", labels_max=12), "labels outside 0-9"),
    "npz missing arrays": (lambda t: np.savez(t / "m.npz", x=np.zeros(3)) or t / "m.npz",
                           "missing arrays"),
    "not an npz": (lambda t: (t / "x.npz").write_text("hello") and t / "x.npz",
                   "cannot read as .npz"),
    "truncated idx": (_truncated_idx, "bytes but header"),
    # images scaled to [0, 1] would become all zeros, label 1.9 would become 1: refused
    "float images": (lambda t: _npz_with(t / "f.npz", x_train=np.random.default_rng(1).random(
        (50, 28, 28), dtype=np.float32)), "train images have dtype float32"),
    "float labels": (lambda t: _npz_with(t / "g.npz", y_test=np.full(20, 1.9)),
                     "test labels have dtype float64"),
    "object arrays": (lambda t: _npz_with(t / "o.npz", x_train=np.array(
        [np.zeros((28, 28), np.uint8)] * 49 + [None], dtype=object)), "cannot read x_train"),
    "corrupt member": (_corrupt_npz, "cannot read"),
}


@pytest.mark.parametrize("case", BAD_SOURCES)
def test_bad_source_one_line_error_nothing_left(tmp_path, case):
    make, message = BAD_SOURCES[case]
    src = make(tmp_path)
    out_dir = tmp_path / "out"
    res = hpctrain("stage", "mnist", "--source", str(src), "--out", str(out_dir / "x.h5"))
    assert res.returncode == 2
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    with pytest.raises(StagingError):
        stage("mnist", src, tmp_path / "y.h5")
    assert not (tmp_path / "y.h5").exists()


def test_check_h5_rejects_non_hdf5(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(StagingError, match="not a readable HDF5"):
        check_h5(bad)
    with pytest.raises(StagingError, match="no such data file"):
        check_h5(tmp_path / "missing.h5")
