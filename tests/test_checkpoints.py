"""Verified checkpoints: each one's files listed with size and sha256 in a manifest written
last; on resume a damaged newest checkpoint is moved aside (never deleted) and the next
older one is used; with none left, one line and a final exit code. On real ranks, after a
killed run: test_recipe.py."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import cut_checkpoint
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


def test_verify_names_what_is_wrong(tmp_path):
    good = _fake(tmp_path, 1)
    assert checkpoint.verify(good) is None
    manifest = json.loads((good / checkpoint.MANIFEST).read_text())
    assert set(manifest["files"]) == {"ckpt.index", "ckpt.data-00000-of-00001", "state.json"}
    short = _fake(tmp_path, 2)
    cut_checkpoint(short)
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
    cut_checkpoint(_fake(tmp_path, 2))
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
