"""The same training command outside sbatch: `horovodrun -np 2` on an interactive node (plain
`hpctrain train` as one rank: test_recipe.py), every model of the zoo on 2 ranks, and the
bad-input path of `hpctrain train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import hpctrain, read_report, write_config
from hpctrain.train.models import MODELS

pytestmark = pytest.mark.mpi


@pytest.mark.slow(reason="sets up the one launch of 2-rank runs (conftest.one_launch): ten "
                  "models, the trained CNN, the long jobs' reference, bfloat16 and the seeds")
def test_horovodrun_two_ranks(cnn_two_ranks, mpirun_available):
    report = read_report(cnn_two_ranks[1])
    assert report["ranks"] == 2 and report["ranks_in_sync"]["ok"] is True
    assert report["slurm"]["job_id"] is None
    assert report["test_accuracy"] > 0.5
    assert report["global_batch_size"] == 128
    # each epoch's row ends after its evaluation on one clock with the process start, so a
    # time to accuracy can count everything from the start (benchmark 4)
    rows = [json.loads(line) for line in
            (cnn_two_ranks[1] / "metrics.jsonl").read_text().splitlines()]
    ends = [r["end_unix_s"] for r in rows]
    assert report["started_unix"] + report["startup_s"] < ends[0] and ends == sorted(ends)
    assert ends[-1] - report["started_unix"] <= report["total_s"]
    # the ends span at least the training between them (two clocks: 10 ms of slack)
    assert ends[-1] - ends[0] >= rows[-1]["elapsed_s"] - rows[0]["elapsed_s"] - 0.01


def test_train_bad_config_fails_before_tensorflow(tmp_path, fmnist_h5):
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, optimiser="adam")
    res = hpctrain("train", "--config", str(config), timeout=60)
    assert res.returncode == 2
    assert "unknown key(s) optimiser" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_every_model_on_two_ranks_in_one_launch(one_launch):
    """Each model of the zoo but ResNet-50 through the whole recipe on 2 Horovod ranks, one
    after another in one launch (conftest.one_launch; a few steps each). The ranks end
    identical, BatchNorm statistics included (averaged over the ranks). ResNet-50 takes its
    steps at 224x224 through the ImageNet config, in a process of its own
    (test_imagefolder_jobs.py)."""
    for model in (m for m in MODELS if m != "resnet50"):
        report = one_launch.report(model)
        assert report["model"] == model and report["ranks"] == 2, model
        assert report["status"] == "completed" and report["ranks_in_sync"]["ok"] is True, model
        assert report["pictures"] is None  # pictures: false
    # each rank's process ends with os._exit, past the exit handlers by which TensorFlow's
    # autograph would remove its converted functions' files: end_process removed them
    assert sorted(one_launch.autograph) == ["autograph-rank0", "autograph-rank1"]
    for rank, files in one_launch.autograph.items():
        assert len(files) > 10, rank  # the zoo's training steps were converted
        assert not [f for f in files if Path(f).exists()], rank
