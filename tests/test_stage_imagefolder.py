"""`hpctrain stage imagefolder` on a real image tree (scripts/make_imagefolder.py): shards and
manifest, every colour mode as RGB, unreadable files, a kill midway and the rerun, 2 MPI ranks,
and one-line errors for bad trees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import MPI_ENV, VENV_BIN, hpctrain, make_tree
from hpctrain.atomic import file_sha256
from hpctrain.data.imagefolder import load_image

pytestmark = pytest.mark.usefixtures("mpirun_available")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "fmnist", 400, 100)


@pytest.fixture(scope="module")
def staged(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("staged") / "fmnist-24"
    hpctrain("stage", "imagefolder", "--source", str(tree), "--out", str(out), "--size", "24",
             "--shards", "4", "--workers", "2", "--max-unreadable", "0.02", check=True)
    return out


def shards(out: Path) -> list[Path]:
    """Complete shards (pathlib's glob also matches the hidden temporary files)."""
    return sorted(p for p in out.glob("*.h5") if not p.name.startswith("."))


def shard_contents(out: Path) -> dict[str, tuple]:
    """Per shard: (images, labels, paths), for comparing stagings (HDF5 files carry times)."""
    result = {}
    for path in shards(out):
        with h5py.File(path, "r") as f:
            result[path.name] = (f["images"][:], f["labels"][:],
                                 [p.decode() for p in f["paths"][:]])
    return result


def test_manifest_and_shards(tree, staged):
    m = json.loads((staged / "manifest.json").read_text())
    classes = sorted(p.name for p in (tree / "train").iterdir())
    assert m["class_names"] == classes and m["num_classes"] == 10
    assert m["image_shape"] == [24, 24, 3] and m["policy"] == "center-crop"
    assert m["splits"]["train"]["count"] == 400 and m["splits"]["test"]["count"] == 100
    assert m["splits"]["test"]["source_dir"] == "val"
    assert len(m["splits"]["train"]["shards"]) == 4 and len(m["splits"]["test"]["shards"]) == 1
    assert len(m["unreadable"]) == 4  # 2 per split, named by path
    assert all(u["path"].split("/")[-1].startswith("broken_") for u in m["unreadable"])
    seen = []
    for split in ("train", "test"):
        for s in m["splits"][split]["shards"]:
            path = staged / s["file"]
            assert file_sha256(path) == s["sha256"] and path.stat().st_size == s["bytes"]
            with h5py.File(path, "r") as f:
                images, labels = f["images"], f["labels"][:]
                assert images.dtype == np.uint8 and images.shape == (s["count"], 24, 24, 3)
                assert images.chunks[0] >= 1 and images.compression is None
                paths = [p.decode() for p in f["paths"][:]]
                # the label is the class folder's index; the pixels are load_image's
                for i in (0, len(paths) // 2, len(paths) - 1):
                    assert classes[labels[i]] == paths[i].split("/")[1]
                    np.testing.assert_array_equal(images[i], load_image(tree / paths[i], 24))
                seen += paths
    assert len(seen) == len(set(seen)) == 500
    # every shard mixes the classes (images are spread over shards in a seeded random order)
    with h5py.File(staged / m["splits"]["train"]["shards"][0]["file"], "r") as f:
        assert len(set(f["labels"][:].tolist())) == 10


def test_every_colour_mode_becomes_rgb(tree):
    by_kind: dict[str, Path] = {}
    for path in sorted((tree / "train").rglob("*")):
        if path.is_file() and not path.name.startswith("broken_"):
            with Image.open(path) as img:
                kind = f"{img.format}-{img.mode}-{path.suffix}"
            by_kind.setdefault(kind, path)
    assert {"JPEG-L-.JPEG", "JPEG-CMYK-.JPEG", "PNG-P-.JPEG", "PNG-RGB-.JPEG",
            "JPEG-RGB-.JPEG"} <= set(by_kind), sorted(by_kind)
    for kind, path in by_kind.items():
        image = load_image(path, 32)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8, kind
        assert image.std() > 1, kind  # a picture, not a flat colour
        if kind.startswith("JPEG-L"):
            assert (image[..., 0] == image[..., 1]).all()
        with Image.open(path) as img:  # the same picture as Pillow's own RGB conversion
            reference = np.asarray(img.convert("RGB").resize((32, 32)), np.float32)
        if kind.startswith("JPEG-RGB") or kind.startswith("PNG"):
            assert abs(image.astype(np.float32) - reference).mean() < 25, kind


def test_unreadable_over_threshold_fails_then_rerun_finishes(tree, tmp_path):
    out = tmp_path / "out"
    res = hpctrain("stage", "imagefolder", "--source", str(tree), "--out", str(out),
                   "--size", "16", "--shards", "3", "--workers", "1")
    assert res.returncode == 2, res.stderr
    error = res.stderr.strip().splitlines()[-1]
    assert "4 of 504 images unreadable" in error and "--max-unreadable 0.1 %" in error
    assert not (out / "manifest.json").exists()
    listed = (out / "unreadable.txt").read_text().splitlines()
    assert len(listed) == 4 and all("broken_" in line for line in listed)
    assert "broken_" in res.stdout  # each one named in the log too
    inodes = {p.name: p.stat().st_ino for p in shards(out)}
    assert len(inodes) == 4
    res = hpctrain("stage", "imagefolder", "--source", str(tree), "--out", str(out),
                   "--size", "16", "--shards", "3", "--max-unreadable", "0.01", check=True)
    assert "0 shard(s) written, 4 already complete" in res.stdout
    assert {p.name: p.stat().st_ino for p in shards(out)} == inodes
    assert (out / "manifest.json").is_file() and not (out / "unreadable.txt").exists()


def test_killed_midway_then_rerun_completes(tree, tmp_path):
    out, reference = tmp_path / "out", tmp_path / "reference"
    args = ["stage", "imagefolder", "--source", str(tree), "--size", "256", "--shards", "25",
            "--workers", "1", "--max-unreadable", "0.02"]
    proc = subprocess.Popen([str(VENV_BIN / "hpctrain"), *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while len(shards(out)) < 3:  # wait for three complete shards
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "staging made no progress"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name for p in shards(out)}
    assert not (out / "manifest.json").exists()
    assert 3 <= len(done_before) < 31  # of 25 train + 6 test shards
    res = hpctrain(*args, "--out", str(out), check=True)
    assert f"{len(done_before)} already complete" in res.stdout
    assert not list(out.glob(".*tmp*")), "a killed writer's temporary file was left"
    hpctrain(*args, "--out", str(reference), check=True)
    got, want = shard_contents(out), shard_contents(reference)
    assert got.keys() == want.keys() and len(got) == 31
    for name in want:
        np.testing.assert_array_equal(got[name][0], want[name][0])
        np.testing.assert_array_equal(got[name][1], want[name][1])
        assert got[name][2] == want[name][2]
    m = json.loads((out / "manifest.json").read_text())
    assert m["splits"]["train"]["count"] == 400


@pytest.mark.mpi
def test_two_mpi_ranks_write_their_own_shards(tree, staged, tmp_path):
    out = tmp_path / "mpi"
    argv = ["mpirun", "-np", "2", "--oversubscribe",
            str(VENV_BIN / "hpctrain"), "stage", "imagefolder", "--source", str(tree),
            "--out", str(out), "--size", "24", "--shards", "4", "--workers", "1",
            "--max-unreadable", "0.02"]
    res = subprocess.run(argv, env={**os.environ, **MPI_ENV}, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    log = res.stdout + res.stderr
    assert "[rank 0] staging 3 of 5 shards" in log and "[rank 1] staging 2 of 5 shards" in log
    assert "2 rank(s) x 1 worker(s)" in res.stdout
    got, want = shard_contents(out), shard_contents(staged)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name][0], want[name][0])
    a = json.loads((out / "manifest.json").read_text())
    b = json.loads((staged / "manifest.json").read_text())
    assert a["plan"] == b["plan"] and a["splits"]["train"]["count"] == 400


@pytest.mark.parametrize("layout, message", [
    ({"val/Coat/a.JPEG"}, "no train/ folder"),
    ({"train/Coat/a.JPEG"}, "no val/ (or test/) folder"),
    ({"train/Coat/a.JPEG", "val/b.JPEG"}, "1 images lie directly in it"),
    ({"train/Coat/a.JPEG", "val/Hat/b.JPEG"}, "class folder(s) Hat are not in train/"),
])
def test_bad_trees_fail_in_one_line(tmp_path, layout, message):
    for rel in layout:
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40)).save(tmp_path / "tree" / rel, "JPEG")
    res = hpctrain("stage", "imagefolder", "--source", str(tmp_path / "tree"), "--out",
                   str(tmp_path / "out"), "--size", "16")
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_size_is_checked(tree, tmp_path):
    res = hpctrain("stage", "imagefolder", "--source", str(tree), "--out", str(tmp_path),
                   "--size", "4")
    assert res.returncode == 2 and "--size 4: expected 8-4096 pixels" in res.stderr


def test_local_copy_takes_a_nodes_share_and_refuses_a_corrupt_shard(staged, tmp_path):
    from hpctrain.data.local_copy import copy_for_node, files_for_ranks
    from hpctrain.validation import StagingError

    m = json.loads((staged / "manifest.json").read_text())
    # 2 nodes x 1 rank: node 0 reads train shards 0-1 and the first half of the test shard
    names = files_for_ranks(str(staged), range(0, 1), 2, {})
    assert names == ["test-00000-of-00001.h5", "train-00000-of-00004.h5",
                     "train-00001-of-00004.h5"]
    dest = copy_for_node(str(staged), str(tmp_path / "scratch"), "node1", 0, 2, 1, {},
                         log=lambda _: None)
    assert dest == tmp_path / "scratch" / "node1" / staged.name
    copied = json.loads((dest / "manifest.json").read_text())
    assert copied["node_local_subset"] == names and copied["splits"] == m["splits"]
    assert sorted(p.name for p in shards(dest)) == names
    # with a limit, every rank reads the first shard
    assert files_for_ranks(str(staged), range(1, 2), 2, {"train": 50, "test": 10}) == [
        "test-00000-of-00001.h5", "train-00000-of-00004.h5"]
    # a shard that no longer matches its sha256 is refused and leaves nothing behind
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in staged.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    shard = bad / "train-00002-of-00004.h5"
    raw = bytearray(shard.read_bytes())
    raw[-100] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(StagingError, match="sha256 .* differs from the manifest"):
        copy_for_node(str(bad), str(tmp_path / "scratch2"), "node2", 1, 2, 1, {},
                      log=lambda _: None)
    assert not (tmp_path / "scratch2" / "node2" / "bad" / shard.name).exists()


def test_stale_copies_are_removed_only_where_their_job_no_longer_runs(tmp_path):
    """<scratch>/hpctrain-<job>/<node>: a node's copy goes once its job runs elsewhere or
    not at all; this job's copy, other nodes' copies and live jobs' copies stay."""
    from hpctrain.data.local_copy import remove_stale

    for job, node in [("7", "node2"), ("7", "node1"), ("8", "node2"), ("9", "node2"),
                      ("10", "node2")]:
        (tmp_path / f"hpctrain-{job}" / node).mkdir(parents=True)
        (tmp_path / f"hpctrain-{job}" / node / "data.h5").write_bytes(b"x" * 10)
    live = {("8", "node2")}  # job 8 still runs on node2; 7 runs on node1 only; 9 is gone
    removed = remove_stale(tmp_path, "node2", keep=tmp_path / "hpctrain-10",
                           runs_here=lambda job, node: (job, node) in live,
                           log=lambda _: None)
    assert removed == [tmp_path / "hpctrain-7" / "node2", tmp_path / "hpctrain-9" / "node2"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*")) == [
        "hpctrain-10/node2", "hpctrain-7/node1", "hpctrain-8/node2"]  # 9's emptied dir gone


def test_submit_checks_stage_options_before_queueing(tree, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"experiment: x\ndata: {tmp_path / 'out'}\nmodel: cnn\n")
    res = hpctrain("submit", "--config", str(config), "--chain", "stage,train",
                   "--stage-dataset", "imagefolder", "--stage-source", str(tree),
                   "--stage-options", "--size 32 --shardz 4", "--dry-run")
    assert res.returncode == 2 and "unrecognized arguments: --shardz 4" in res.stderr
    res = hpctrain("submit", "--config", str(config), "--chain", "stage,train",
                   "--stage-dataset", "imagefolder", "--stage-source", str(tree),
                   "--stage-options", f"--size 32 --out {tmp_path}", "--dry-run")
    assert res.returncode == 2 and "--out is the config's data" in res.stderr


def test_a_failed_seal_stops_staging_and_leaves_no_temporary_file(tree, tmp_path, monkeypatch):
    """Shards are sealed (fsync, rename, sha256) in a thread while the next one is decoded:
    a disk error there still ends the staging with that error, at the next shard, before the
    manifest, and takes its temporary file with it; every other shard written is sealed
    complete (a rerun keeps them)."""
    from hpctrain import atomic
    from hpctrain.data.stage_imagefolder import Options, stage_imagefolder

    calls, real_fsync = [], os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    out = tmp_path / "out"
    opts = Options(source=tree, out=out, size=16, shards=4, max_unreadable=0.02)
    with pytest.raises(OSError, match="Input/output error"):
        stage_imagefolder(opts, log=lambda *a, **k: None)
    assert 2 <= len(calls) < 8 and len(shards(out)) == len(calls) - 1
    assert not list(out.glob(".*tmp*")) and not (out / "manifest.json").exists()
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    res = hpctrain("stage", "imagefolder", "--source", str(tree), "--out", str(out), "--size",
                   "16", "--shards", "4", "--max-unreadable", "0.02", check=True)
    assert f"{len(calls) - 1} already complete" in res.stdout


@pytest.mark.parametrize("compression", [None, "lzf"])
def test_chunks_written_behind_read_back_exactly(tmp_path, compression):
    """A shard's chunks are written by a thread while the next chunk fills (two buffers in
    turn): every image lands in its own row, a short last chunk and a trimmed capacity
    included, compressed or not."""
    from hpctrain.data.shards import ShardWriter, chunk_rows

    shape = (64, 64, 3)
    rows = chunk_rows(int(np.prod(shape)), 1 << 20)
    n = 3 * rows + 5  # three full chunks and a short one; capacity one more (one unreadable)
    images = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
    path = tmp_path / "train-00000-of-00001.h5"
    w = ShardWriter(path, n + 1, shape, compression, {"plan": "p"})
    for i, image in enumerate(images):
        w.add(image, i % 7, f"img{i}")
    w.finish()
    with h5py.File(path, "r") as f:
        assert f["images"].chunks[0] == rows and f.attrs["count"] == n
        np.testing.assert_array_equal(f["images"][:], images)
        np.testing.assert_array_equal(f["labels"][:], np.arange(n) % 7)
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_failed_chunk_write_stops_staging_and_leaves_no_temporary_file(tree, tmp_path,
                                                                         monkeypatch):
    """A chunk's write fails in the writer thread (a full disk): the staging ends with that
    error, before the manifest, with no temporary file; every other shard written is sealed
    complete, and the rerun keeps them."""
    from hpctrain.data.shards import ShardWriter
    from hpctrain.data.stage_imagefolder import Options, stage_imagefolder

    calls, real_write = [], ShardWriter._write_chunk

    def write_chunk(self, chunk, start, end):
        calls.append(start)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_write(self, chunk, start, end)

    monkeypatch.setattr(ShardWriter, "_write_chunk", write_chunk)
    out = tmp_path / "out"
    opts = Options(source=tree, out=out, size=16, shards=4, max_unreadable=0.02)
    with pytest.raises(OSError, match="No space left on device"):
        stage_imagefolder(opts, log=lambda *a, **k: None)
    assert len(calls) == 3 and len(shards(out)) == 2  # a shard is one chunk at 16 px
    assert not list(out.glob(".*tmp*")) and not (out / "manifest.json").exists()
    monkeypatch.setattr(ShardWriter, "_write_chunk", real_write)
    res = hpctrain("stage", "imagefolder", "--source", str(tree), "--out", str(out), "--size",
                   "16", "--shards", "4", "--max-unreadable", "0.02", check=True)
    assert f"{len(calls) - 1} already complete" in res.stdout
