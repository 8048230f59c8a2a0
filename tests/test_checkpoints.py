"""Verified checkpoints: each one's files listed with size and sha256 in a manifest written
last; on resume a damaged newest checkpoint is moved aside (never deleted) and the next
older one is used, on real ranks, to the same weights as a run never stopped; with none
left, one line and a final exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import LONG, check_tensorboard, hpctrain, on_ranks, read_report
from hpctrain.train import checkpoint


def _fake(directory: Path, epoch: int, payload: bytes = b"weights" * 100,
          manifest: bool = True) -> Path:
    """A checkpoint directory as save() leaves it, without TensorFlow."""
    path = directory / checkpoint.name(epoch)
    path.mkdir(parents=True)
    (path / "ckpt.index").write_bytes(b"index")
    (path / "ckpt.data-00000-of-00001").write_bytes(payload)
    (path / checkpoint.STATE).write_text(json.dumps({"epoch": epoch, "step": 0}))
    if manifest:
        checkpoint.write_manifest(path)
    return path


def _cut(path: Path, keep: float = 1 / 3) -> None:
    """What a node dying during a flush, or a quota hit, leaves: the data file cut short."""
    (data,) = path.glob("ckpt.data-*")
    data.write_bytes(data.read_bytes()[:int(data.stat().st_size * keep)])


def test_verify_names_what_is_wrong(tmp_path):
    good = _fake(tmp_path, 1)
    assert checkpoint.verify(good) is None
    manifest = json.loads((good / checkpoint.MANIFEST).read_text())
    assert set(manifest["files"]) == {"ckpt.index", "ckpt.data-00000-of-00001", "state.json"}
    short = _fake(tmp_path, 2)
    _cut(short)
    assert checkpoint.verify(short) == \
        "ckpt.data-00000-of-00001 is 233 bytes, the manifest says 700"
    flipped = _fake(tmp_path, 3)
    data = flipped / "ckpt.data-00000-of-00001"
    data.write_bytes(b"X" + data.read_bytes()[1:])  # same size, other bytes
    assert checkpoint.verify(flipped) == \
        "ckpt.data-00000-of-00001 does not match its sha256 in the manifest"
    gone = _fake(tmp_path, 4)
    (gone / "ckpt.index").unlink()
    assert checkpoint.verify(gone) == "ckpt.index missing"
    garbled = _fake(tmp_path, 5)
    (garbled / checkpoint.MANIFEST).write_text("{not json")
    assert checkpoint.verify(garbled).startswith("unreadable manifest or state")
    # written before manifests existed: loading it is then the only check
    assert checkpoint.verify(_fake(tmp_path, 6, manifest=False)) is None


def test_newest_valid_reads_only_and_move_aside_keeps_everything(tmp_path):
    _fake(tmp_path, 1)
    _cut(_fake(tmp_path, 2))
    found, bad = checkpoint.newest_valid(tmp_path)
    assert found is not None and found[:2] == (1, 0)
    assert [(p.name, why.split(" is ")[0]) for p, why in bad] == [
        ("epoch-0002", "ckpt.data-00000-of-00001")]
    assert (tmp_path / "epoch-0002").is_dir()  # nothing moved by a reader
    first = checkpoint.move_aside(tmp_path / "epoch-0002", "cut short")
    assert first == tmp_path / "skipped" / "epoch-0002"
    assert (first / "why.txt").read_text() == "cut short\n"
    assert (first / "ckpt.data-00000-of-00001").stat().st_size == 233  # kept as it was
    _fake(tmp_path, 2)  # the same name damaged again later: both kept
    assert checkpoint.move_aside(tmp_path / "epoch-0002", "again").name == "epoch-0002.2"
    assert [c[:2] for c in checkpoint.complete(tmp_path)] == [(1, 0)]


@pytest.mark.slow(reason="the first user of the shared 2-rank launch: sets it up")
@pytest.mark.mpi
def test_damaged_newest_checkpoint_falls_back_on_real_ranks(one_launch, tmp_path):
    """The long jobs' uninterrupted reference (5 epochs on 2 ranks, the last two checkpoints
    kept) with its newest checkpoint cut to a third: `--resume` on 2 ranks moves it aside
    with one line, resumes from epoch 4 on both ranks and ends with the reference's weights.
    Then with every checkpoint damaged: one line, exit 4, nothing deleted, and report.json
    says failed instead of the completed it held."""
    reference = read_report(one_launch.dirs["long-reference"])
    run = tmp_path / "run"
    shutil.copytree(one_launch.dirs["long-reference"], run)
    config = one_launch.configs["long-reference"]
    assert [c[0] for c in checkpoint.complete(run / "checkpoints")] == [4, 5]
    _cut(run / "checkpoints" / "epoch-0005")
    res = on_ranks(config, run, resume=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("checkpoint epoch-0005 skipped (ckpt.data-00000-of-00001 is ") == 1
    report = read_report(run)
    assert report["status"] == "completed" and report["epochs_completed"] == LONG["epochs"]
    assert report["segments"][-1]["first_epoch"] == 5  # from epoch 4's checkpoint
    assert report["ranks_in_sync"]["weight_sha256"] == reference["ranks_in_sync"][
        "weight_sha256"]
    (skipped,) = report["checkpoints_skipped"]
    assert skipped["checkpoint"] == "epoch-0005" and "the manifest says" in skipped["reason"]
    assert (run / "checkpoints" / "skipped" / "epoch-0005" / "why.txt").is_file()
    assert "checkpoint epoch-0005 skipped on resume" in (run / "report.md").read_text()
    # TensorBoard: the resumed segment's epoch 5 replaces the one written before, once
    assert [s for s, _ in check_tensorboard(run)["test/accuracy"]] == [1, 2, 3, 4, 5]

    for path in (run / "checkpoints").glob("epoch-*"):  # the new epoch 5 and epoch 4
        _cut(path, keep=0.5)
    res = hpctrain("train", "--run-dir", str(run), "--resume")
    assert res.returncode == 4, res.stdout[-3000:] + res.stderr[-3000:]
    errors = [line for line in res.stdout.splitlines() if "error: no usable checkpoint" in line]
    assert len(errors) == 1 and "epoch-0005: ckpt.data" in errors[0], res.stdout[-2000:]
    assert sorted(p.name for p in (run / "checkpoints" / "skipped").iterdir()) == [
        "epoch-0004", "epoch-0005", "epoch-0005.2"]
    assert not list((run / "checkpoints").glob("epoch-*"))
    after = read_report(run)
    assert after["status"] == "failed" and "no usable checkpoint" in after["error"]
