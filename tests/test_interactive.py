"""The same training command outside sbatch: `horovodrun -np 2` on an interactive node (plain
`hpctrain train` as one rank: test_recipe.py), every model of the zoo on 2 ranks, and the
bad-input path of `hpctrain train`."""

from __future__ import annotations

import subprocess

import pytest

from conftest import (
    REPO,
    VENV_BIN,
    horovodrun_launcher,
    hpctrain,
    read_report,
    write_config,
)
from hpctrain.train.models import MODELS

pytestmark = pytest.mark.mpi


def test_horovodrun_two_ranks(cnn_two_ranks, mpirun_available):
    report = read_report(cnn_two_ranks[1])
    assert report["ranks"] == 2 and report["ranks_in_sync"]["ok"] is True
    assert report["slurm"]["job_id"] is None
    assert report["test_accuracy"] > 0.5
    assert report["global_batch_size"] == 128


def test_train_bad_config_fails_before_tensorflow(tmp_path, fmnist_h5):
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, optimiser="adam")
    res = hpctrain("train", "--config", str(config), timeout=60)
    assert res.returncode == 2
    assert "unknown key(s) optimiser" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


# The ImageNet model's step alone takes ~17 s to trace: it runs on 2 ranks once, at 224x224
# (test_imagefolder_jobs.py), not here again.
ELSEWHERE = {"resnet50": "test_imagefolder_jobs.py::test_resnet50_at_224_on_two_ranks"}


@pytest.mark.slow(
    reason="ten models' graphs built, traced and stepped on 2 ranks, one after another")
def test_every_model_on_two_ranks_in_one_launch(fmnist_h5, tmp_path):
    """Each model of the zoo through the whole recipe on 2 Horovod ranks (tests/zoo_ranks.py:
    one launch, the models one after another; a few steps each). The ranks end identical,
    BatchNorm statistics included (averaged over the ranks). What each model reaches is
    measured once, on the whole data: results/accuracy (`make accuracy`)."""
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, batch_size=32)
    launcher, env = horovodrun_launcher(np=2)
    res = subprocess.run(
        [*launcher, str(VENV_BIN / "python"), str(REPO / "tests" / "zoo_ranks.py"),
         str(config), str(tmp_path / "zoo"), "--skip", ",".join(ELSEWHERE),
         "train_limit=512", "test_limit=256", "resnet20:batch_size=8",
         "resnet20:train_limit=64", "resnet20:test_limit=32"],
        env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for model in MODELS:
        if model in ELSEWHERE:
            continue
        report = read_report(tmp_path / "zoo" / model)
        assert report["model"] == model and report["ranks"] == 2, model
        assert report["status"] == "completed" and report["ranks_in_sync"]["ok"] is True, model
        assert report["pictures"] is None  # pictures: false
    assert not (tmp_path / "zoo" / "resnet50").exists()
