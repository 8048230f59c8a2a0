"""The training recipe on real Horovod ranks (`mpirun -np 2`): exact resume of a killed
run, its pictures and `hpctrain predict`, mixed precision and XLA switches on CPU with the
ranks-in-sync check, seeds, and one rank stopping at a target accuracy."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import psutil
import pytest

from conftest import (
    MIXED,
    SEEDS,
    check_tensorboard,
    cut_checkpoint,
    hpctrain,
    on_ranks,
    ranks_command,
    read_report,
    write_config,
)
from conftest import TINY_2RANK as TINY
from hpctrain.train import checkpoint

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
                  "predict")
def test_killed_run_with_a_damaged_checkpoint_resumes_exactly(cnn_two_ranks, fmnist_h5,
                                                              capsys, tmp_path):
    """The workshop CNN's 2-rank run killed after epoch 2 (every rank SIGKILLed, as a node
    failure would) with its newest checkpoint cut to a third (what a node dying during a
    flush, or a quota hit, leaves): `--resume` moves epoch 2 aside with one line, resumes
    from epoch 1 on both ranks and ends with the weights of the run nobody stopped. Then,
    with every checkpoint damaged: one line, exit 4, nothing deleted, and report.json says
    failed instead of the completed it held."""
    config, whole = cnn_two_ranks
    broken = tmp_path / "broken"
    argv, env = ranks_command(config, broken, *TINY)
    # rank 1 sleeps 0.1 s a step (the other waits in the allreduce: numerics untouched), so
    # that the kill lands in epoch 3 on any machine of this kind
    env.update(HPCTRAIN_TEST_SLOW_RANK="1:0.1", HOROVOD_CYCLE_TIME="50")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (broken / "checkpoints" / "epoch-0002" / checkpoint.MANIFEST).exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint after epoch 2"
        time.sleep(0.1)
    assert _kill_ranks(broken) == 2
    assert proc.wait(timeout=120) != 0
    assert not (broken / "report.json").exists() or read_report(broken)["status"] != "completed"
    assert [c[0] for c in checkpoint.complete(broken / "checkpoints")] == [1, 2]
    cut_checkpoint(broken / "checkpoints" / "epoch-0002")

    res = hpctrain("train", "--config", str(config), "--run-dir", str(broken), *TINY)
    assert res.returncode == 2 and "pass --resume" in res.stderr  # no silent overwrite
    res = on_ranks(config, broken, *TINY, resume=True)
    _ok(res)
    assert res.stdout.count("checkpoint epoch-0002 skipped (ckpt.data-00000-of-00001 is ") == 1
    a, b = read_report(whole), read_report(broken)
    assert b["status"] == "completed" and b["epochs_completed"] == 3
    assert [s["first_epoch"] for s in b["segments"]] == [1, 2]  # from epoch 1's checkpoint
    rows = [json.loads(line) for line in (broken / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # every epoch once
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.003
    # Data order and dropout masks are functions of (seed, epoch): the resumed run is exact.
    assert a["ranks_in_sync"]["weight_sha256"] == b["ranks_in_sync"]["weight_sha256"]
    (skipped,) = b["checkpoints_skipped"]
    assert skipped["checkpoint"] == "epoch-0002" and "the manifest says" in skipped["reason"]
    assert (broken / "checkpoints" / "skipped" / "epoch-0002" / "why.txt").is_file()
    assert "checkpoint epoch-0002 skipped on resume" in (broken / "report.md").read_text()
    # TensorBoard: the killed segment's epochs and the resumed one's, each epoch once
    assert [s for s, _ in check_tensorboard(broken)["test/accuracy"]] == [1, 2, 3]
    _check_pictures(whole, broken, fmnist_h5, capsys, tmp_path)

    for path in (broken / "checkpoints").glob("epoch-*"):  # the new epochs 2 and 3
        cut_checkpoint(path, keep=0.5)
    res = hpctrain("train", "--run-dir", str(broken), "--resume")
    assert res.returncode == 4, res.stdout[-3000:] + res.stderr[-3000:]
    errors = [line for line in res.stdout.splitlines() if "error: no usable checkpoint" in line]
    assert len(errors) == 1 and "epoch-0003: ckpt.data" in errors[0], res.stdout[-2000:]
    assert sorted(p.name for p in (broken / "checkpoints" / "skipped").iterdir()) == [
        "epoch-0002", "epoch-0002.2", "epoch-0003"]
    assert not list((broken / "checkpoints").glob("epoch-*"))
    after = read_report(broken)
    assert after["status"] == "failed" and "no usable checkpoint" in after["error"]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`hpctrain ARGV` in this process, where TensorFlow is loaded already (a second process
    would spend seconds starting it): exit code, stdout, stderr."""
    from hpctrain.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _check_pictures(whole, resumed, h5, capsys, tmp_path):
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
    code, out, err = _cli(capsys, "report", str(whole))
    assert code == 0, out[-3000:] + err[-3000:]
    assert "pictures drawn again" in err and (whole / "confusion.png").is_file()
    assert out.rstrip().endswith(f"tensorboard: tensorboard --logdir {whole}")
    assert read_report(whole)["pictures"]["confusion"] == counts
    # predict, in one call: 20 staged test images, and the same images exported as PNG files
    # get the same classes and probabilities (read and prepared as the run's data was staged)
    import h5py
    import numpy as np
    from PIL import Image

    with h5py.File(h5, "r") as f:
        images, labels = f["test/images"][:20], f["test/labels"][:20]
        names = [n.decode() if isinstance(n, bytes) else n
                 for n in json.loads(f.attrs["class_names"])]
    pngs = [tmp_path / f"a shoe, maybe {i}.png" for i in range(20)]
    for image, png in zip(images, pngs, strict=True):
        Image.fromarray(np.asarray(image)[..., 0]).save(png)
    code, out, err = _cli(capsys, "predict", "--run", str(whole), *map(str, pngs), "--top", "3",
                          "--h5", str(h5), "--index", *map(str, range(20)))  # staged first
    assert code == 0, out[-3000:] + err[-3000:]
    lines = out.splitlines()
    assert len(lines) == 40
    ranked = [re.findall(r"(\d)\. (.+?) (\d\.\d{4})", line.split(": ", 1)[1]) for line in lines]
    assert all(len(r) == 3 for r in ranked), lines
    for i in range(20):
        assert lines[i].startswith(f"{h5}[test {i}]: ") and lines[i].endswith(
            f"(true: {names[labels[i]]})")
        assert lines[20 + i].startswith(f"{pngs[i]}: ")
        assert [c for _, c, _ in ranked[i]] == [c for _, c, _ in ranked[20 + i]], i
        assert all(abs(float(a[2]) - float(b[2])) <= 2e-4
                   for a, b in zip(ranked[i], ranked[20 + i], strict=True)), i
    assert any(ranked[i][0][1] == names[labels[i]] for i in range(20))  # not all wrong
    png = pngs[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = hpctrain("predict", "--run", str(whole), str(png), str(bad))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "broken.png" in out.stderr
    assert out.stdout == ""  # nothing classified when one input is bad


@pytest.mark.parametrize("name", MIXED)
def test_mixed_precision_ranks_in_sync(one_launch, name):
    """bfloat16 with XLA (in the shared launch, after float32 runs), two epochs on 2 ranks.
    (float16 with loss scaling: the end-to-end Slurm job, test_e2e_slurm.py.)"""
    run_dir, r = one_launch.dirs[name], one_launch.report(name)
    assert r["ranks_in_sync"]["ok"] is True and r["ranks"] == 2
    assert r["training"]["precision"] == MIXED[name][0].split("=")[1]
    assert r["test_accuracy"] > 0.3  # chance is 0.1; two short epochs
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert rows[-1]["lr"] < rows[0]["lr"]  # the schedule decayed after the warm-up


def test_same_seed_same_weights(one_launch):
    """Runs with seed 1 before and after a dozen other runs in the same processes end with
    the same weights; seed 2 does not."""
    digests = {name: one_launch.report(name)["ranks_in_sync"]["weight_sha256"]
               for name in SEEDS}
    assert digests["seed-1a"] == digests["seed-1b"] != digests["seed-2"]


def test_one_rank_stops_at_target_accuracy(fmnist_h5, tmp_path):
    """Plain `hpctrain train` as one rank (a laptop, a login node), until a target accuracy."""
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, model="mlp5", epochs=20,
                          target_accuracy=0.7)
    res = hpctrain("train", "--config", str(config), "--run-dir", str(tmp_path / "run"),
                   "train_limit=6000", "test_limit=1000")
    _ok(res)
    assert "report:" in res.stdout
    r = read_report(tmp_path / "run")
    assert r["ranks"] == 1 and r["launcher"] == "none"
    # one rank outside Slurm uses every CPU it may run on (not 1 thread)
    assert r["threads_per_rank"] == len(os.sched_getaffinity(0))
    assert r["target_accuracy"] == {"target": 0.7, "reached": True}
    assert r["epochs_completed"] < 20 and r["test_accuracy"] >= 0.7
    assert r["time_to_accuracy_s"]["0.70"] is not None
    assert r["images_per_s"]["basis"] == (
        "epochs 2..N" if r["epochs_completed"] > 1 else "epoch 1, tenths 2..10")
    # Resuming a run that already reached its target trains nothing more.
    _ok(hpctrain("train", "--run-dir", str(tmp_path / "run"), "--resume"))
    assert read_report(tmp_path / "run")["epochs_completed"] == r["epochs_completed"]
