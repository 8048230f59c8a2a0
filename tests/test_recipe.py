"""The training recipe on real Horovod ranks (`horovodrun -np 2`): exact resume of a killed
run, its pictures and `hpctrain predict`, mixed precision and XLA switches on CPU with the
ranks-in-sync check, seeds, and stopping at a target accuracy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from conftest import TINY_2RANK as TINY
from conftest import (
    horovodrun,
    horovodrun_command,
    hpctrain,
    read_report,
    write_config,
)

pytestmark = pytest.mark.mpi


def _ok(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]


def _kill_ranks(run_dir) -> int:
    """SIGKILL every rank training into run_dir (as a node failure would)."""
    killed = 0
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if cmd and os.path.basename(cmd[0]).startswith("python") and str(run_dir) in cmd:
            proc.send_signal(signal.SIGKILL)
            killed += 1
    return killed


@pytest.mark.slow(reason="a killed and a resumed 2-rank run, the pictures drawn again and "
                  "predict: five TensorFlow processes at least")
def test_killed_run_resumes_exactly(cnn_two_ranks, fmnist_h5, tmp_path):
    config, whole = cnn_two_ranks
    broken = tmp_path / "broken"
    argv, env = horovodrun_command(config, broken, *TINY)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (broken / "checkpoints" / "epoch-0001" / "state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint after epoch 1"
        time.sleep(0.1)
    assert _kill_ranks(broken) == 2
    assert proc.wait(timeout=120) != 0
    assert not (broken / "report.json").exists() or read_report(broken)["status"] != "completed"
    done = sorted(p.name for p in (broken / "checkpoints").glob("epoch-*"))
    assert done and done[-1] < "epoch-0003", done

    res = hpctrain("train", "--config", str(config), "--run-dir", str(broken), *TINY)
    assert res.returncode == 2 and "pass --resume" in res.stderr  # no silent overwrite
    _ok(horovodrun(config, broken, *TINY, resume=True))
    a, b = read_report(whole), read_report(broken)
    assert b["status"] == "completed" and b["epochs_completed"] == 3
    assert [s["first_epoch"] for s in b["segments"]] == [1, int(done[-1][-4:]) + 1]
    rows = [json.loads(line) for line in (broken / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # every epoch once
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.003
    # Data order and dropout masks are functions of (seed, epoch): the resumed run is exact.
    assert a["ranks_in_sync"]["weight_sha256"] == b["ranks_in_sync"]["weight_sha256"]
    _check_pictures(whole, broken, fmnist_h5, tmp_path)


def _check_pictures(whole, resumed, h5, tmp_path):
    """The report's pictures from 2 real ranks (sharing the runs above), drawn again by
    `hpctrain report` when missing, and `hpctrain predict` with the run's checkpoint."""
    r = read_report(whole)
    files = r["pictures"]["files"]
    assert set(files) == {"curves", "confusion", "mistakes", "correct"}
    md = (whole / "report.md").read_text()
    for name in files.values():
        assert (whole / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in md
    counts = r["pictures"]["confusion"]  # gathered from both ranks: the whole test set
    assert sum(map(sum, counts)) == 500
    trace = sum(counts[i][i] for i in range(len(counts)))
    assert abs(trace / 500 - r["test_accuracy"]) <= 0.002  # the evaluation's own predictions
    assert read_report(resumed)["pictures"]["files"]["curves"] == "curves.png"
    # missing pictures are drawn again from the checkpoint
    for name in files.values():
        (whole / name).unlink()
    res = hpctrain("report", str(whole))
    _ok(res)
    assert "pictures drawn again" in res.stderr and (whole / "confusion.png").is_file()
    assert read_report(whole)["pictures"]["confusion"] == counts
    # predict: a test image exported as PNG gets what the staged image gets
    import h5py
    import numpy as np
    from PIL import Image

    with h5py.File(h5, "r") as f:
        images, labels = f["test/images"][:20], f["test/labels"][:20]
        names = [n.decode() if isinstance(n, bytes) else n
                 for n in json.loads(f.attrs["class_names"])]
    chosen = None
    for i in range(20):  # the first test image the run classifies correctly
        out = hpctrain("predict", "--run", str(whole), "--h5", str(h5), "--index", str(i))
        _ok(out)
        if out.stdout.split("1. ")[1].startswith(names[labels[i]] + " "):
            chosen, staged_line = i, out.stdout
            break
    assert chosen is not None, "none of the first 20 test images classified correctly"
    png = tmp_path / "a shoe, maybe.png"
    Image.fromarray(np.asarray(images[chosen])[..., 0]).save(png)
    out = hpctrain("predict", "--run", str(whole), str(png), "--top", "3")
    _ok(out)
    assert out.stdout.split(": ", 1)[1].strip() == \
        staged_line.split(": ", 1)[1].split("  (true")[0].strip()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = hpctrain("predict", "--run", str(whole), str(png), str(bad))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "broken.png" in out.stderr
    assert out.stdout == ""  # nothing classified when one input is bad


@pytest.mark.slow(
    reason="float16 runs on TensorFlow's own CPU kernels (oneDNN's are far slower), two epochs")
@pytest.mark.parametrize("overrides", [
    ["precision=mixed_float16", "optimizer=sgd", "lr_schedule=cosine", "epochs=2"],
    ["precision=mixed_bfloat16", "xla=true", "optimizer=adam", "lr_schedule=step",
     "lr_decay_epochs=[1]", "epochs=2", "train_limit=1000"],  # bfloat16 is slow on CPUs
], ids=["float16-loss-scaling-sgd-cosine", "bfloat16-xla-adam-step"])
def test_mixed_precision_ranks_in_sync(fmnist_h5, tmp_path, overrides):
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, learning_rate=0.01)
    _ok(horovodrun(config, tmp_path / "run", *TINY, *overrides))
    r = read_report(tmp_path / "run")
    assert r["ranks_in_sync"]["ok"] is True and r["ranks"] == 2
    assert r["training"]["precision"] == overrides[0].split("=")[1]
    assert r["test_accuracy"] > 0.3  # chance is 0.1; two short epochs
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert rows[-1]["lr"] < rows[0]["lr"]  # the schedule decayed after the warm-up


@pytest.mark.slow(reason="three single-rank runs, two of them with the same seed")
def test_single_rank_and_same_seed_same_weights(fmnist_h5, tmp_path):
    """Plain `hpctrain train` as one rank (a laptop, a login node); run again with the same
    seed it ends with the same weights, with another seed not."""
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, model="mlp5_dropout", epochs=2)
    digests = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        res = hpctrain("train", "--config", str(config), "--run-dir", str(tmp_path / name),
                       *TINY, f"seed={seed}")
        _ok(res)
        digests.append(read_report(tmp_path / name)["ranks_in_sync"]["weight_sha256"][0])
    assert digests[0] == digests[1] != digests[2]
    assert "report:" in res.stdout
    report = read_report(tmp_path / "a")
    assert report["ranks"] == 1 and report["launcher"] == "none"
    # one rank outside Slurm uses every CPU it may run on (not 1 thread)
    assert report["threads_per_rank"] == len(os.sched_getaffinity(0))
    assert report["epochs_completed"] == 2
    assert report["images_per_s"]["basis"] == "epochs 2..N"


def test_stops_at_target_accuracy(fmnist_h5, tmp_path):
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, model="mlp5", epochs=20,
                          target_accuracy=0.7)
    _ok(hpctrain("train", "--config", str(config), "--run-dir", str(tmp_path / "run"),
                 "train_limit=6000", "test_limit=1000"))
    r = read_report(tmp_path / "run")
    assert r["target_accuracy"] == {"target": 0.7, "reached": True}
    assert r["epochs_completed"] < 20 and r["test_accuracy"] >= 0.7
    assert r["time_to_accuracy_s"]["0.70"] is not None
    # Resuming a run that already reached its target trains nothing more.
    _ok(hpctrain("train", "--run-dir", str(tmp_path / "run"), "--resume"))
    assert read_report(tmp_path / "run")["epochs_completed"] == r["epochs_completed"]
