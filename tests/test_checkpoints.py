"""Verified checkpoints: each one's files listed with size and sha256 in a manifest written
last; on resume a damaged newest checkpoint is moved aside (never deleted) and the next
older one is used; with none left, one line and a final exit code (on real ranks, after a
killed run: test_recipe.py). A full disk stops a run with one line and loses nothing."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import VENV_BIN, cut_checkpoint, write_config
from hpctrain.atomic import no_space
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


def test_no_space_is_told_apart_from_other_errors():
    full = OSError(errno.ENOSPC, "No space left on device", "/scratch/run/report.json")
    assert no_space(full) == "/scratch/run/report.json"
    tf_like = RuntimeError("{{function_node SaveV2}} /a b/ckpt_temp/part-0; No space left on "
                           "device [Op:SaveV2]")  # TensorFlow's: the path is not parsed
    assert no_space(tf_like) == ""
    try:
        try:
            raise full
        except OSError as e:
            raise RuntimeError("callback failed") from e
    except RuntimeError as wrapped:
        assert no_space(wrapped) == "/scratch/run/report.json"  # found through the cause
    assert no_space(OSError(errno.EACCES, "Permission denied", "/x")) is None
    assert no_space(ValueError("bad")) is None and no_space(None) is None


def test_one_writer_per_run_directory(tmp_path):
    from hpctrain.environment import JobEnvironment
    from hpctrain.train import run_lock

    env = JobEnvironment(job_id="123", node_name="node1")
    assert run_lock.hold(tmp_path / "run", env)  # held until this process ends
    with pytest.raises(run_lock.RunInUse, match=rf"run is in use by pid {os.getpid()} on "
                       rf"\S+, Slurm job 123, since .*: wait for that run to end"):
        run_lock.hold(tmp_path / "run", env)  # a second open file: refused like a process
    assert run_lock.holder(tmp_path / "nothing") == "another process"


def test_fingerprint_sees_a_replaced_file_not_a_copy(tmp_path):
    from hpctrain.data.layout import SAMPLE_BLOCKS, fingerprint, fingerprint_change

    data = tmp_path / "a.h5"
    data.write_bytes(np.random.default_rng(0).bytes(3 << 20))
    copy = tmp_path / "node local" / "a.h5"
    copy.parent.mkdir()
    shutil.copyfile(data, copy)
    before = fingerprint(data)
    assert fingerprint(copy) == before  # a node-local copy is the same data
    raw = bytearray(data.read_bytes())
    raw[len(raw) // (SAMPLE_BLOCKS - 1)] ^= 1  # a byte inside the second sampled block
    data.write_bytes(bytes(raw))
    assert fingerprint_change(before, fingerprint(data)) == \
        "a.h5 changed (same size, other bytes)"
    data.write_bytes(bytes(raw) + b"more")
    assert fingerprint_change(before, fingerprint(data)) == \
        "a.h5 changed (3,145,728 -> 3,145,732 bytes)"
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    (shards / "train-00000.h5").write_bytes(b"x")
    was = fingerprint(shards)
    (shards / "train-00000.h5").unlink()
    (shards / "train-00001.h5").write_bytes(b"x")
    assert fingerprint_change(was, fingerprint(shards)) == "train-00000.h5 is gone"
    assert fingerprint_change(was, was) is None


@pytest.mark.slow(reason="three hpctrain processes, the first paced so that its epoch 2 "
                  "outlasts a second run's refusal and the filling of the disk")
@pytest.mark.mpi
def test_full_disk_stops_with_one_line_and_a_rerun_resumes(fmnist_h5, tmp_path):
    """The run directory on a small real file system (tmpfs), filled by someone else after
    epoch 1: epoch 2's checkpoint finds no space. The run stops with one line naming the path
    and the space, exit 5; epoch 1's checkpoint survives, nothing half-written is left, and
    report.json says failed. Meanwhile a second run pointed at the directory is refused,
    naming the one that writes it (after a SIGKILL the directory is free again: test_recipe.py's
    killed run resumes in it). With space freed but the data rewritten, `--resume` refuses in
    one line; `--resume --accept-new-data` finishes the run."""
    disk = tmp_path / "small disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"a tmpfs is needed (root): {mounted.stderr}"
    try:
        run = disk / "run"
        data = tmp_path / "data" / fmnist_h5.name  # its own copy: it is changed below
        data.parent.mkdir()
        shutil.copyfile(fmnist_h5, data)
        config = write_config(tmp_path / "exp.yaml", data, model="mlp5", epochs=3,
                              train_limit=1024, test_limit=256)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1",
               # 16 steps of 0.3 s: epoch 2 outlasts what the test does meanwhile on any
               # machine of this kind (the resumed run goes at full speed)
               "HPCTRAIN_TEST_SLOW_RANK": "0:0.3"}
        proc = subprocess.Popen([str(VENV_BIN / "hpctrain"), "train", "--config", str(config),
                                 "--run-dir", str(run)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        first = run / "checkpoints" / "epoch-0001"
        deadline = time.time() + 300
        while not (first / checkpoint.MANIFEST).is_file():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        # one writer per run directory: a second run pointed at it is refused, naming it
        second = subprocess.run([str(VENV_BIN / "hpctrain"), "train", "--run-dir", str(run),
                                 "--resume"], env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert f"{run} is in use by pid {proc.pid} on " in second.stderr
        filler = disk / "someone else's file"
        # all but 64 KB: room for metrics and events, not for a checkpoint (~1.5 MB)
        filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - (64 << 10)))
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 5, out[-3000:] + err[-3000:]
        lines = [line for line in out.splitlines() if "no space left" in line]
        assert len(lines) == 1 and f"no space left on the file system of {run}" in lines[0]
        assert "free; the newest checkpoint takes" in lines[0] and "--resume" in lines[0]
        assert "Traceback" not in err
        assert [c[0] for c in checkpoint.complete(run / "checkpoints")] == [1]
        assert checkpoint.verify(first) is None
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch-0001"]
        report = json.loads((run / "report.json").read_text())
        assert report["status"] == "failed" and "no space left" in report["error"]

        filler.unlink()
        # the data rewritten meanwhile (a dataset added): a resume refuses it with one line
        # before anything starts, unless told to accept it
        import h5py

        with h5py.File(data, "r+") as f:
            f.create_dataset("added later", data=np.zeros(1 << 18, np.uint8))
        resume = [str(VENV_BIN / "hpctrain"), "train", "--run-dir", str(run), "--resume"]
        res = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert f"the data changed since {run} started: {data.name} changed (" in res.stderr
        assert "--accept-new-data" in res.stderr
        res = subprocess.run([*resume, "--accept-new-data"], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert "the data changed since the run started" in res.stdout
        report = json.loads((run / "report.json").read_text())
        assert report["status"] == "completed" and report["epochs_completed"] == 3
        assert [s["first_epoch"] for s in report["segments"]] == [1, 2]
        rows = (run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]  # every epoch once
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
