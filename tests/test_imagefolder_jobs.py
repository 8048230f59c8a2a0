"""The image-tree path as jobs on the embedded cluster: `--chain stage,train,report` stages a
real tree with one MPI rank per node, each node copies the shards its ranks read to its
node-local scratch, and the ranks, started by mpirun, train on their node's copy."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, RESNET50_224, hpctrain, make_tree, read_report, write_config


@pytest.mark.slow(reason="three chained jobs: staging on 2 ranks, then a 2-node training "
                  "whose rank 0 also writes Horovod's timeline, then the report")
@pytest.mark.slurm
def test_image_tree_chain_with_node_local_copies(slurm_cluster, tmp_path):
    """The mpirun launcher's 2-node job too (srun starts the long jobs and the studies,
    horovodrun the end-to-end job: test_e2e_slurm.py), with the profile given by path, and
    Horovod's timeline (`timeline: true` sets HOROVOD_TIMELINE before hvd.init; its writer
    thread spins on rank 0 until the process ends, so only a short run has it)."""
    tree = make_tree(tmp_path / "tree", 400, 100)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    profile = tmp_path / "site.yaml"
    embedded = (REPO / "env" / "clusters" / "embedded.yaml").read_text()
    profile.write_text(embedded.replace("scratch: null\n", f"scratch: '{scratch}'\n"))
    staged = tmp_path / "staged"
    config = write_config(tmp_path / "exp.yaml", staged, model="cnn", batch_size=32,
                          crop=20, augment=True)
    run_dir = tmp_path / "run"
    res = hpctrain("submit", "--profile", str(profile), "--config", str(config), "--nodes", "2",
                   "--chain", "stage,train,report", "--stage-dataset", "imagefolder",
                   "--stage-source", str(tree), "--stage-options",
                   "--size 24 --shards 4 --max-unreadable 0.02", "--run-dir", str(run_dir),
                   "--launcher", "mpirun", "--wait", "timeline=true",
                   env={"SLURM_CONF": str(slurm_cluster.slurm_conf)}, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = json.loads((run_dir / "submission.json").read_text())["jobs"]
    stage_log = (run_dir / f"slurm-{jobs['stage']}-stage.out").read_text()
    # two MPI ranks (srun --mpi=pmix, one per node), each writing its own shards
    assert "[rank 0] staging 3 of 5 shards" in stage_log
    assert "[rank 1] staging 2 of 5 shards" in stage_log
    manifest = json.loads((staged / "manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == 400 and len(manifest["unreadable"]) == 4
    train_log = (run_dir / f"slurm-{jobs['train']}.out").read_text()
    report = read_report(run_dir)
    nodes = report["rank_nodes"]  # whichever 2 nodes Slurm gave the job (not always node1-2)
    assert len(set(nodes)) == 2
    # each node copied only what its rank reads: half of the training shards + the test shard
    assert all(f"{node}: 3 file(s)" in train_log for node in nodes), train_log
    used = json.loads((run_dir / "config.json").read_text())["data"]
    assert used == f"{scratch}/hpctrain-{jobs['train']}/{{node}}/staged"
    assert report["status"] == "completed" and report["ranks_in_sync"]["ok"] is True
    assert report["launcher"] == "mpirun" and report["ranks"] == report["nodes"] == 2
    assert report["dataset"]["test_count"] == 100 and report["dataset"]["num_classes"] == 10
    assert list(scratch.iterdir()) == []  # the copies are removed when the job ends
    assert "NEGOTIATE_ALLREDUCE" in (run_dir / "timeline.json").read_text()


@pytest.mark.slow(reason="ResNet-50's training and evaluation graphs traced at 224x224 "
                  "(~20 s of CPU)")
@pytest.mark.mpi
def test_resnet50_at_224_through_the_imagenet_config(staged_256, tmp_path):
    """The ImageNet config as shipped, as one `hpctrain train` process: ResNet-50 steps on
    random 224x224 crops of images staged at 256 and is evaluated on the centre crop. One
    rank: tracing ResNet-50 is most of the cost, and every rank pays it; ranks staying
    identical with BatchNorm is shown on the zoo's BatchNorm models (conftest.one_launch)."""
    run_dir = tmp_path / "run"
    hpctrain("train", "--config", str(REPO / "jobs" / "configs" / "imagenet_resnet50.yaml"),
             "--run-dir", str(run_dir), *RESNET50_224, f"data={staged_256}", check=True)
    report = read_report(run_dir)
    assert report["status"] == "completed" and report["model"] == "resnet50"
    assert report["ranks"] == 1 and report["ranks_in_sync"]["ok"] is True
    assert report["dataset"]["input_shape"] == [224, 224, 3]
    assert report["images_per_s"]["mean"] > 0
    assert report["dataset"]["staged_shape"] == [256, 256, 3]
    assert report["dataset"]["num_classes"] == 10 and report["test_accuracy"] is not None
