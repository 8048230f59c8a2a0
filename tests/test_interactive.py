"""The same training command outside sbatch: `horovodrun -np 2` on an interactive node, and
plain `hpctrain train` as one rank. Also the bad-input path of `hpctrain train`."""

from __future__ import annotations

import json
import os

import pytest

from conftest import SHORT, horovodrun, hpctrain, read_report, write_config
from hpctrain.train.models import MODELS

pytestmark = pytest.mark.mpi


def test_horovodrun_two_ranks(fmnist_h5, tmp_path, mpirun_available):
    config = write_config(tmp_path / "exp.yaml", fmnist_h5)
    run_dir = tmp_path / "run"
    res = horovodrun(config, run_dir, *SHORT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["ranks"] == 2 and report["ranks_in_sync"]["ok"] is True
    assert report["slurm"]["job_id"] is None
    assert report["test_accuracy"] > 0.5
    assert report["global_batch_size"] == 128


def test_plain_single_rank(fmnist_h5, tmp_path):
    config = write_config(tmp_path / "exp.yaml", fmnist_h5)
    res = hpctrain("train", "--config", str(config), "--run-dir", str(tmp_path / "run"),
                   "train_limit=2000", "test_limit=500", "epochs=2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["ranks"] == 1 and report["launcher"] == "none"
    # one rank outside Slurm uses every CPU it may run on (not 1 thread)
    assert report["threads_per_rank"] == len(os.sched_getaffinity(0))
    assert report["epochs_completed"] == 2
    assert report["images_per_s"]["basis"] == "epochs 2..N"
    assert "report:" in res.stdout


def test_train_bad_config_fails_before_tensorflow(tmp_path, fmnist_h5):
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, optimiser="adam")
    res = hpctrain("train", "--config", str(config), timeout=60)
    assert res.returncode == 2
    assert "unknown key(s) optimiser" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("model", MODELS)
def test_every_model_under_horovodrun(model, fmnist_h5, tmp_path):
    """Each model of the zoo on 2 Horovod ranks as on an interactive node (tiny data)."""
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, model=model, batch_size=32)
    res = horovodrun(config, tmp_path / "run", "train_limit=512", "test_limit=256")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = read_report(tmp_path / "run")
    assert report["model"] == model and report["ranks"] == 2
    assert report["ranks_in_sync"]["ok"] is True
