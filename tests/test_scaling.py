"""Scaling studies: the statistics on known inputs, straggler detection, the cost model, and
a tiny real study on the embedded Slurm cluster."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, hpctrain, read_report
from hpctrain.experiment import ConfigError, TrainConfig, load_config
from hpctrain.progress import wait_until
from hpctrain.report.statistics import t95, t_quantile
from hpctrain.report.step_times import per_rank, step_time_summary, stragglers
from hpctrain.scaling.aggregate import scaling_mode, summarize
from hpctrain.scaling.plan import plan_points


def _run(ranks: int, nodes: int, ips: float, **extra) -> dict:
    row = {"run_dir": f"r{ranks}-{ips}", "status": "completed", "nodes": nodes, "ranks": ranks,
           "global_batch": 128, "batch_per_rank": 128 // ranks, "images_per_s": ips,
           "images_per_s_ci95": 5.0, "images_per_epoch": 12000, "eval_s_per_epoch": 2.0,
           "target_accuracy": 0.85, "time_to_target_s": 100.0, "startup_s": 8.0,
           "test_accuracy": 0.86, "stragglers": "", "launch_s": 1.0, "teardown_s": 0.5,
           "job_s": 120.0}
    for part in ("input_s", "compute_s", "allreduce_s", "other_s", "step_s"):
        row[part] = 0.01
    return {**row, **extra}


def test_speedup_efficiency_interval_and_node_hours_on_known_inputs():
    runs = pd.DataFrame([_run(1, 1, 100.0), _run(1, 1, 110.0),
                         _run(4, 2, 300.0, time_to_target_s=40.0),
                         _run(4, 2, 340.0, time_to_target_s=50.0),
                         _run(4, 2, 1.0, status="failed")])  # left out
    s = summarize(runs)
    assert list(s["ranks"]) == [1, 4] and list(s["repeats"]) == [2, 2]
    # mean over repeats and a Student-t interval over the repeats (n=2: t=12.706)
    assert s["images_per_s"].tolist() == pytest.approx([105.0, 320.0])
    assert s.loc[0, "images_per_s_ci95"] == pytest.approx(t95(1) * math.sqrt(50.0) / math.sqrt(2))
    assert s.loc[1, "speedup"] == pytest.approx(320.0 / 105.0)
    assert s.loc[1, "efficiency"] == pytest.approx(320.0 / 105.0 / 4)
    rel = math.hypot(s.loc[0, "images_per_s_ci95"] / 105.0, s.loc[1, "images_per_s_ci95"] / 320.0)
    assert s.loc[1, "speedup_ci95"] == pytest.approx(320.0 / 105.0 * rel)
    # node-hours: nodes x (epoch + evaluation) and nodes x (startup + time to target)
    assert s.loc[0, "node_hours_per_epoch"] == pytest.approx(1 * (12000 / 105.0 + 2.0) / 3600)
    assert s.loc[1, "node_hours_per_epoch"] == pytest.approx(2 * (12000 / 320.0 + 2.0) / 3600)
    assert s.loc[1, "node_hours_to_target"] == pytest.approx(2 * (8.0 + 45.0) / 3600)
    assert scaling_mode(s) == "strong"
    # one repeat: the run's own interval, said so
    one = summarize(pd.DataFrame([_run(1, 1, 100.0), _run(2, 2, 150.0)]))
    assert one.loc[1, "images_per_s_ci95"] == 5.0 and one.loc[1, "interval"] == \
        "over epochs of 1 run"
    # runs with no interval at all (one measured epoch): no speedup interval, no error
    none = summarize(pd.DataFrame([_run(1, 1, 100.0, images_per_s_ci95=None),
                                   _run(2, 2, 150.0, images_per_s_ci95=None)],
                                  dtype=object))
    assert none.loc[1, "speedup"] == pytest.approx(1.5)
    assert math.isnan(none.loc[1, "speedup_ci95"])


def test_failed_points_listed_a_failed_base_gives_no_efficiency_and_hours_add_up():
    from hpctrain.scaling.study_report import render

    runs = pd.DataFrame([_run(2, 1, 200.0, node_hours=0.1, gpu_hours=0.2, cpus_per_node=2,
                              threads_per_rank=1),
                         _run(4, 2, 300.0, node_hours=0.3, gpu_hours=0.6, cpus_per_node=2,
                              threads_per_rank=2)])
    failed = [{"run_dir": "runs/n1-r1-rep0", "nodes": 1, "ranks": 1,
               "why": "failed: rank 0 on node1 killed by signal 9"}]
    # the 1-rank base failed: no speedup or efficiency against the 2-rank point instead
    s = summarize(runs, base=(1, 1))
    assert s["efficiency"].isna().all() and s["speedup"].isna().all()
    assert s["images_per_s"].tolist() == [200.0, 300.0]
    # 2 ranks x 2 threads on a 2-core node: oversubscribed; 2 x 1 is not
    assert s["oversubscribed"].tolist() == [False, True]
    md = render(s, runs.assign(experiment="e", model="m", dataset="d", synthetic=False),
                title="t", mode="strong", command="c", note="", pictures={},
                failed=failed, base_point=(1, 1))
    assert "- runs/n1-r1-rep0 (1 node(s), 1 rank(s)): failed: rank 0 on node1 killed" in md
    assert "**The base point (1 node(s), 1 rank(s)) has no completed run" in md
    assert "| 4 (*) |" in md and "| - | - % |" in md
    assert "**0.4 node-hours, 0.8 GPU-hours for the whole study**" in md
    # with the base there, the usual speedup
    ok = summarize(runs, base=(1, 2))
    assert ok.loc[1, "efficiency"] == pytest.approx(300.0 / 200.0 / 2)
    assert summarize(runs, shared_host=True)["oversubscribed"].tolist() == [False, True]


def test_weak_and_strong_points():
    cfg = TrainConfig(experiment="e", data="d.h5", batch_size=64, learning_rate=0.01)
    strong = plan_points(cfg, (1, 2, 4), 2, "strong")
    assert [(p.ranks, p.batch_size) for p in strong] == [(2, 64), (4, 32), (8, 16)]
    # the scaled rate (per-rank rate x ranks) stays that of the smallest point
    assert {round(p.learning_rate * p.ranks, 12) for p in strong} == {0.02}
    weak = plan_points(cfg, (1, 2, 4), 1, "weak")
    assert [(p.ranks, p.batch_size, p.learning_rate) for p in weak] == \
        [(1, 64, 0.01), (2, 64, 0.01), (4, 64, 0.01)]
    with pytest.raises(ConfigError, match="does not divide"):
        plan_points(TrainConfig(experiment="e", data="d", batch_size=100), (1, 3), 1, "strong")


def test_ranks_within_a_node_then_nodes_against_one_base():
    from hpctrain.scaling.plan import extends
    from hpctrain.scaling.study import Study
    from hpctrain.slurm.request import Request

    cfg = TrainConfig(experiment="e", data="d.h5", batch_size=256, learning_rate=0.1)
    # 8 GPUs a node: 1, 2, 4 and 8 on one node, then 2 and 4 nodes; strong from 1 rank
    points = plan_points(cfg, (1, 2, 4), 8, "strong", within_node=(1, 2, 4))
    assert [(p.nodes, p.ranks, p.batch_size) for p in points] == [
        (1, 1, 256), (1, 2, 128), (1, 4, 64), (1, 8, 32), (2, 16, 16), (4, 32, 8)]
    assert len({p.name for p in points}) == 6
    with pytest.raises(ConfigError, match="below --ntasks-per-node 8"):
        plan_points(cfg, (1, 2), 8, "weak", within_node=(2, 8))
    with pytest.raises(ConfigError, match="must start at 1"):
        plan_points(cfg, (2, 4), 8, "weak", within_node=(1,))
    study = Study(Request(config="c.yaml"), (1, 2), 4, "weak", within_node=(1, 2), name="s")
    assert "--within-node 1,2" in study.command() and study.plan()["within_node"] == [1, 2]
    # a study may gain within-node points; in strong mode not a new smallest one
    more = Study(Request(config="c.yaml"), (1, 2), 4, "strong", within_node=(2,), name="s")
    assert extends(more.plan(), Study(Request(config="c.yaml"), (1, 2), 4, "strong",
                                      within_node=(2, 3), name="s").plan())
    assert not extends(more.plan(), Study(Request(config="c.yaml"), (1, 2), 4, "strong",
                                          within_node=(1, 2), name="s").plan())
    # nor, in strong mode, a 1-rank base below a study whose smallest point was a full node
    full = Study(Request(config="c.yaml"), (1, 2), 4, "strong", name="s").plan()
    assert not extends(full, Study(Request(config="c.yaml"), (1, 2), 4, "strong",
                                   within_node=(1,), name="s").plan())
    assert extends(full, Study(Request(config="c.yaml"), (1, 2, 4), 4, "strong",
                               name="s").plan())


def _epoch(parts_by_rank: list[tuple[float, float, float, float]], first: bool = False) -> dict:
    ranks = []
    for rank, (i, c, a, o) in enumerate(parts_by_rank):
        step = i + c + a + o
        entry = {"input_s": i, "compute_s": c, "allreduce_s": a, "other_s": o, "step_s": step}
        ranks.append({"rank": rank, "node": f"node{rank // 2 + 1}", "steps": 10, **entry,
                      "mean": entry, "step_p90_s": step})
    return {"rank_steps": ranks, "first_in_segment": first}


def test_a_slow_rank_and_a_slow_node_are_named():
    fast, slow = (0.002, 0.100, 0.060, 0.005), (0.002, 0.160, 0.001, 0.005)
    epochs = [_epoch([slow, slow, slow, slow], first=True),  # graph building: left out
              _epoch([fast, fast, fast, slow]), _epoch([fast, fast, fast, slow])]
    summary = step_time_summary(epochs)
    assert [(s["rank"], s["node"], s["cause"]) for s in summary["stragglers"]] == \
        [(3, "node2", "compute")]
    assert summary["stragglers"][0]["ratio"] == pytest.approx(0.162 / 0.102)
    assert summary["slow_nodes"] == []  # rank 2 on node2 is fast
    starved = (0.070, 0.100, 0.001, 0.005)  # waits for its input: a slow file system
    both = step_time_summary([_epoch([fast, fast, starved, starved])])
    assert [s["cause"] for s in both["stragglers"]] == ["input", "input"]
    assert both["slow_nodes"] == ["node2"]
    assert stragglers(per_rank([_epoch([fast, fast, fast, fast])])) == []


# The tiny study: the shipped synthetic config (its model swapped for the workshops'
# BatchNorm CNN, a third of ResNet-20's tracing) on 1 and 2 nodes, gradients accumulated over
# 2 batches, and rank 1 of the 2-node job made slow on purpose (the test hook sleeps in its
# compute every step: train/step_timing.py). Synthetic data: each rank draws its own
# batches, so BatchNorm statistics differ per rank until hpctrain averages them, and the
# ranks-in-sync check proves it does.
STUDY = ["--config", str(REPO / "jobs/configs/synthetic_resnet20.yaml:short"), "--nodes", "1,2",
         "--mode", "weak", "--name", "tiny"]
STUDY_OVERRIDES = ["synthetic_steps=8", "model=cnn_bn", "accumulate_steps=2"]


@pytest.fixture(scope="module")
def tiny_study(slurm_cluster, tmp_path_factory) -> tuple[Path, dict]:
    """(study directory, environment) of the tiny study, run once for the tests below."""
    results = tmp_path_factory.mktemp("study")
    # rank 1 slowed (the straggler test); the other waits for it at a 50 ms Horovod cycle
    # rather than the 1 ms default, burning less CPU in the wait (as the long Slurm jobs do)
    env = {"SLURM_CONF": str(slurm_cluster.slurm_conf), "HPCTRAIN_RESULTS": str(results),
           "HPCTRAIN_TEST_SLOW_RANK": "1:0.15", "HOROVOD_CYCLE_TIME": "50"}
    dry = hpctrain("study", *STUDY, *STUDY_OVERRIDES, "--dry-run", env=env, check=True)
    assert dry.stdout.count("#SBATCH --nodes=") == 2 and not (results / "studies").exists()
    res = hpctrain("study", *STUDY, *STUDY_OVERRIDES, env=env, check=True, timeout=600)
    study = results / "studies" / "tiny"
    assert f"tensorboard: tensorboard --logdir {study}" in res.stdout
    return study, env


@pytest.mark.slow(
    reason="a study's two Slurm jobs (1 and 2 nodes), its resume, report and projection")
@pytest.mark.slurm
def test_tiny_study_on_the_embedded_cluster(tiny_study, tmp_path):
    study, env = tiny_study
    summary = pd.read_csv(study / "summary.csv")
    assert summary["ranks"].tolist() == [1, 2] and summary["global_batch"].tolist() == [32, 64]
    runs = pd.read_csv(study / "runs.csv")
    # weak scaling: the 2-rank point's efficiency is its throughput over twice the 1-rank's
    ips = runs.groupby("ranks")["images_per_s"].mean()
    # (both CSVs hold 6 significant digits)
    assert summary["images_per_s"].tolist() == pytest.approx([ips[1], ips[2]], rel=1e-5)
    assert summary["efficiency"].iloc[1] == pytest.approx(ips[2] / ips[1] / 2, rel=1e-5)
    assert (runs["status"] == "completed").all() and runs["job_s"].notna().all()
    assert runs["ranks_in_sync"].all()  # BatchNorm statistics averaged across 2 nodes too
    for run in (study / "runs").iterdir():  # the shipped synthetic config, through sbatch
        report = read_report(run)
        assert report["dataset"]["dataset"] == "synthetic" and report["test_accuracy"] is None
        assert report["launcher"] == "srun" and report["slurm"]["job_id"]
    readme = (study / "README.md").read_text()
    assert "weak scaling" in readme and "node-h per epoch" in readme
    assert "embedded Slurm cluster" in readme  # what the efficiency means here, said
    assert "## Hardware and backend" in readme and "no GPU" in readme and " controller, " in \
        readme and runs["hardware"].notna().all()
    for png in ("throughput.png", "efficiency.png", "breakdown.png"):
        assert (study / png).read_bytes()[:4] == b"\x89PNG"
    # `tensorboard --logdir <study>` overlays its runs, one per point, named by their point
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    board = EventMultiplexer().AddRunsFromDirectory(str(study))
    board.Reload()
    assert sorted(board.Runs()) == sorted(f"runs/{run.name}/tensorboard"
                                          for run in (study / "runs").iterdir())
    # resumed: nothing is rerun
    again = hpctrain("study", *STUDY, *STUDY_OVERRIDES, env=env, check=True)
    assert "0 run(s) to submit" in again.stdout
    assert json.loads((study / "plan.json").read_text())["mode"] == "weak"
    # the same tables from the run directories, as for runs submitted by hand
    out = tmp_path / "by-hand"
    hpctrain("report", *sorted(str(p) for p in (study / "runs").iterdir()), "--out", str(out),
             env=env, check=True)
    assert pd.read_csv(out / "summary.csv")["ranks"].tolist() == [1, 2]
    # the projection takes the study's compute time and model size
    proj = hpctrain("project", "--study", str(study), "--gpus", "1,8", "--network",
                    "25Gb/s", "--out", str(tmp_path / "projection.md"), env=env, check=True)
    assert "| 8 | 2 |" in proj.stdout and "cnn_bn" in proj.stdout
    # and the study's own points, measured next to projected, in a table and a picture
    assert "## The study's own points, measured and projected" in proj.stdout
    assert re.search(r"^\| 2 \| 2 \| 1 \| [\d,]+ \| [\d,]+ \| \d+ % \| \d+ % \| [+-]\d+ pts \|$",
                     proj.stdout, re.M), proj.stdout
    assert (tmp_path / "projection.png").read_bytes()[:4] == b"\x89PNG"
    # another plan under the same name is refused
    other = hpctrain("study", *STUDY[:-4], "--mode", "strong", "--name", "tiny", env=env)
    assert other.returncode == 2 and "another plan" in other.stderr
    # a point that fails on purpose: the study gains 3 nodes, whose job is cancelled at once;
    # the report lists it with why, and the efficiency column still starts at the base
    grown = [*STUDY[:3], "1,2,3", *STUDY[4:], *STUDY_OVERRIDES]
    hpctrain("study", *grown, "--no-wait", env=env, check=True)
    three = study / "runs" / "n3-r3-rep0"
    job = json.loads((three / "submission.json").read_text())["job_id"]
    subprocess.run(["scancel", job], env={**os.environ, **env}, check=True)
    wait_until(lambda: not subprocess.run(["squeue", "-h", "-j", job], env={**os.environ, **env},
                                          capture_output=True, text=True).stdout.strip(),
               120, "the cancelled job to leave the queue")
    report = hpctrain("study", *grown, "--report-only", env=env)
    assert report.returncode == 1 and "1 failed" in report.stdout, report.stdout + report.stderr
    readme = (study / "README.md").read_text()
    # why: "no report.json" if the job was cancelled before its ranks began, else the
    # status its ranks wrote when the cancellation reached them
    assert "## Failed points" in readme and \
        "- runs/n3-r3-rep0 (3 node(s), 3 rank(s)): " in readme.replace(str(study) + "/", ""), \
        readme
    summary = pd.read_csv(study / "summary.csv")
    assert summary["ranks"].tolist() == [1, 2] and summary["efficiency"].iloc[0] == 1.0


@pytest.mark.slurm
def test_straggler_named_and_accumulation_in_sync_on_real_ranks(tiny_study):
    """The study's 2-node job: rank 1 slowed on purpose is named, with its cause; 2 batches
    accumulated per step on 2 ranks, global batch and learning rate scaled to match, and the
    ranks end identical."""
    study, _ = tiny_study
    (run_dir,) = (run for run in (study / "runs").iterdir()
                  if (run / "report.json").is_file() and read_report(run).get("ranks") == 2)
    report = read_report(run_dir)
    assert report["ranks_in_sync"]["ok"] and report["images_per_s"]["mean"] > 0
    assert report["global_batch_size"] == 16 * 2 * 2 and report["accumulate_steps"] == 2
    assert report["learning_rate_scaled"] == pytest.approx(0.05 * 4)
    # under the hook every rank times every step: the fast rank's median rests on as many
    # steps as the slowed one's (sampling one step in 10 left it one, and a slow machine's
    # noise in that one step hid the straggler)
    timed = [r["steps"] for r in report["step_times"]["ranks"]]
    assert len(timed) == 2 and timed[0] == timed[1] >= 4, report["step_times"]
    slow = report["step_times"]["stragglers"]
    assert [s["rank"] for s in slow] == [1] and slow[0]["cause"] == "compute", \
        report["step_times"]
    assert "**rank 1 on" in (run_dir / "report.md").read_text()


def test_measured_points_next_to_the_projection_on_known_inputs(tmp_path):
    """A weak study (per-rank batch fixed) and a strong one (it shrinks: compute with it),
    each point at its own ranks per node, efficiency as the study defines it."""
    from hpctrain.scaling.costmodel import Horovod, Network, Workload
    from hpctrain.scaling.projection import Calibration, against_measured, render_against

    cal = Calibration("known", Workload(0.1, 4e6, 64))
    net, hvd = Network(1e9), Horovod()
    for mode, batches in (("weak", (64, 64, 64)), ("strong", (64, 32, 16))):
        d = tmp_path / mode
        d.mkdir()
        pd.DataFrame({"nodes": [1, 1, 2], "ranks": [1, 2, 4], "batch_per_rank": batches,
                      "images_per_s": [640.0, 1200.0, 2000.0],
                      "efficiency": [1.0, 0.9375, 0.78125],
                      "oversubscribed": [False, False, True]}).to_csv(d / "summary.csv")
        rows = against_measured(d, cal, net, hvd)
        assert [(r["ranks"], r["per_node"]) for r in rows] == [(1, 1), (2, 2), (4, 2)]
        assert rows[0]["projected"] == pytest.approx(1.0) and rows[0]["difference_pp"] == 0
        for r in rows:  # images/s: ranks x per-rank batch / the simulated step
            assert r["difference_pp"] == pytest.approx(100 * (r["projected"] - r["measured"]))
        base = rows[0]["projected_images_per_s"]
        assert rows[2]["projected"] == pytest.approx(rows[2]["projected_images_per_s"] / base
                                                     / 4)
        table = render_against(rows)
        assert "| 2 | 4 (*) | 2 |" in table and "core sharing" in table
    # strong: a quarter of the batch takes a quarter of the compute, so 4 ranks at batch 16
    # go well past one rank at 64 (without the scaling they would equal it)
    strong = against_measured(tmp_path / "strong", cal, net, hvd)
    assert strong[2]["projected_images_per_s"] > 2 * strong[0]["projected_images_per_s"]


def test_study_refuses_bad_input_before_queueing(tmp_path):
    env = {"HPCTRAIN_RESULTS": str(tmp_path)}
    cfg = str(REPO / "jobs/configs/synthetic_resnet20.yaml")
    bad = hpctrain("study", "--config", cfg, "--nodes", "1,x", env=env)
    assert bad.returncode == 2 and "--nodes" in bad.stderr
    odd = hpctrain("study", "--config", cfg, "--nodes", "1,3", "batch_size=64", env=env)
    assert odd.returncode == 2 and "does not divide" in odd.stderr
    assert not Path(tmp_path / "studies").exists()


def test_a_study_counts_the_looks_at_its_verdicts():
    """Each time a study is run again with more --repeats than its last look, the seeds it
    had were read: one look more (its intervals widen for it); resuming or re-rendering with
    the same or fewer repeats is not a look."""
    from hpctrain.scaling.plan import extends, looks_after

    assert looks_after({}, 3, 0) == [3]  # a new study
    assert looks_after({"looks": [3]}, 3, 1) == [3]  # resumed after a failure
    assert looks_after({"looks": [3]}, 7, 3) == [3, 7]
    assert looks_after({"looks": [3, 7]}, 5, 7) == [3, 7]
    assert looks_after({"mode": "batch"}, 7, 3) == [3, 7]  # a plan from before looks were kept
    assert looks_after({"mode": "batch"}, 3, 3) == [3]
    plan = {"config": "c.yaml", "overrides": [], "tasks_per_node": 1, "mode": "batch",
            "profile": None, "nodes": [2], "global_batches": [64, 1024]}
    assert extends({**plan, "looks": [3]}, plan) and extends(plan, {**plan, "looks": [3, 7]})


def test_a_study_can_gain_points_but_not_change():
    from hpctrain.scaling.plan import extends

    old = {"config": "c.yaml", "overrides": [], "tasks_per_node": 1, "mode": "strong",
           "profile": None, "nodes": [1, 2]}
    assert extends(old, old)
    assert extends(old, {**old, "nodes": [1, 2, 4]})  # a point added
    assert not extends(old, {**old, "nodes": [1, 4]})  # a point dropped
    assert not extends(old, {**old, "nodes": [2, 4]})  # strong: the base sets the batch
    assert extends({**old, "mode": "weak"}, {**old, "mode": "weak", "nodes": [2, 1, 8]})
    assert not extends(old, {**old, "overrides": ["epochs=2"]})
    batch = {**old, "mode": "batch", "nodes": [2], "global_batches": [128, 2048]}
    assert extends(batch, {**batch, "global_batches": [128, 1024, 2048]})
    assert not extends(batch, {**batch, "global_batches": [128]})
    # one node count to a grid would rename every point: a new study
    assert not extends(batch, {**batch, "nodes": [2, 4]})
    grid = {**batch, "nodes": [1, 2]}
    assert extends(grid, {**grid, "nodes": [1, 2, 4]})


def test_nodes_by_global_batch_grid_points():
    from hpctrain.scaling.plan import batch_points
    from hpctrain.scaling.study import Study

    cfg = TrainConfig(experiment="e", data="d.h5", batch_size=64, learning_rate=0.01,
                      warmup_epochs=1)
    points = batch_points(cfg, (1, 2), 1, (128, 256))
    # every global batch on every node count: fewer accumulated batches on more nodes, the
    # same per-rank batch and rate (the scaled rate follows the global batch, not the nodes)
    assert [(p.nodes, p.ranks, p.accumulate_steps, p.warmup_epochs) for p in points] == [
        (1, 1, 2, 1.0), (1, 1, 2, 0.0), (1, 1, 4, 1.0), (1, 1, 4, 0.0),
        (2, 2, 1, 1.0), (2, 2, 1, 0.0), (2, 2, 2, 1.0), (2, 2, 2, 0.0)]
    assert [p.name for p in points[:2]] == ["n1-g128-warmup1", "n1-g128-warmup0"]
    assert len({p.name for p in points}) == len(points)
    # one node count keeps the names studies already have
    assert [p.name for p in batch_points(cfg, (2,), 1, (128,))] == ["g128-warmup1",
                                                                      "g128-warmup0"]
    with pytest.raises(ConfigError, match="not: 64 on 2 node"):
        batch_points(cfg, (1, 2), 1, (64, 256))
    with pytest.raises(ConfigError, match="--global-batches"):
        Study(request=None, nodes=(1, 2), mode="batch").points(cfg)  # type: ignore[arg-type]


def test_grid_report_lists_each_node_count_and_the_failed_points(tmp_path):
    from hpctrain.scaling.batch_report import write_batch_study

    rows = []
    for nodes, ips in ((1, 1000.0), (2, 1800.0)):
        for g, acc in ((128, 0.90), (512, 0.89), (2048, 0.70 if nodes == 1 else 0.72)):
            rows.append(_run(nodes, nodes, ips * (1 + g / 4096), global_batch=g,
                             warmup_epochs=1.0, accumulate_steps=g // (64 * nodes),
                             learning_rate_scaled=0.01 * g / 64, test_accuracy=acc,
                             run_dir=str(tmp_path / f"runs/n{nodes}-g{g}-warmup1-rep0"),
                             model="cnn", dataset="fashion-mnist", epochs=3, train_s=60.0,
                             node_hours=nodes * 60 / 3600))
    failed = [{"run_dir": str(tmp_path / "runs/n2-g4096-warmup1-rep0"), "nodes": None,
               "ranks": None, "why": "FAILED: out of memory"}]
    got = write_batch_study(tmp_path, pd.DataFrame(rows), title="grid", command="hpctrain "
                            "study ...", failed=failed)
    assert got["points"] == 6 and got["failed"] == 1
    text = (tmp_path / "README.md").read_text()
    assert "- n2-g4096-warmup1-rep0: FAILED: out of memory" in text
    assert "| 2 | 2 | 512 | 1 | 4 | 0.08 | 23.4375 | 0.8900 | 2,025 | 60 | 0.0333 | 1 |" in text
    assert "on 1 node(s), with a warm-up of 1 epoch(s): accuracy within 1 point(s) of " \
           "global batch 128 (0.9000) up to global batch 512; 2048 reaches 0.7000" in text
    assert "on 2 node(s), with a warm-up of 1 epoch(s)" in text
    assert (tmp_path / "accuracy_vs_batch.png").stat().st_size > 10_000


def test_accuracy_vs_batch_read_in_words():
    from hpctrain.scaling.batch_report import reading

    s = pd.DataFrame({"global_batch": [128, 128, 512, 512, 2048, 2048],
                      "warmup_epochs": [0.0, 1.0] * 3,
                      "test_accuracy": [0.90, 0.899, 0.88, 0.895, 0.10, 0.60]})
    no, warm = reading(s)
    assert "without warm-up" in no and "up to global batch 128; 512 reaches 0.8800" in no
    assert "up to global batch 512; 2048 reaches 0.6000" in warm


def test_layer_profile_found_by_parameter_count():
    """Runs recorded before the zoo's `cnn` became the workshop CNN ran today's `cnn64`:
    their parameter count finds its layers."""
    from hpctrain.scaling.projection import layer_profile

    old = layer_profile("cnn64")
    assert old is not None and layer_profile("cnn")["parameters"] != old["parameters"]
    assert layer_profile("cnn", old["parameters"]) == old
    assert layer_profile("cnn", 12345) is None  # nothing of that size: spread evenly


def test_job_times_are_kept_with_the_run_and_a_reused_job_id_is_ignored(tmp_path):
    """A study re-aggregated after its cluster's accounting was reset keeps the job
    overheads it had, and never takes another job's times for its own."""
    from hpctrain.scaling.aggregate import job_overhead
    from hpctrain.scaling.study_report import JOB_TIMES, load_runs

    src = REPO / "results" / "studies" / "fmnist_cnn-strong" / "runs" / "n1-r1-rep0"
    run = tmp_path / "run"
    run.mkdir()
    report = json.loads((src / "report.json").read_text())
    (run / "report.json").write_text(json.dumps(report))
    job_id, started = str(report["slurm"]["job_id"]), report["started_unix"]
    mine = {"submit": started - 2, "start": int(started) - 1,
            "end": int(started + report["total_s"]) + 2}
    other = {"submit": started + 900, "start": started + 901, "end": started + 960}
    assert job_overhead(report, other)["job_s"] is None  # the id, reused later
    assert load_runs([run], {job_id: other})["job_s"].isna().all()
    assert not (run / JOB_TIMES).exists()
    assert load_runs([run], {job_id: mine})["job_s"].iloc[0] == mine["end"] - mine["start"]
    assert json.loads((run / JOB_TIMES).read_text()) == mine
    # accounting forgot the job, or holds another under its id: the kept record wins
    for jobs in ({}, {job_id: other}):
        row = load_runs([run], jobs).iloc[0]
        assert row["job_s"] == mine["end"] - mine["start"] and row["launch_s"] > 0


def test_variant_points_and_requests(tmp_path):
    """--mode variants: one point per config variant (base: the file's own keys), no batch
    or rate overrides of its own, each repeat its own seed; bad plans refused before any
    job."""
    import yaml

    from hpctrain.scaling.plan import variant_changes, variant_points
    from hpctrain.scaling.study import Study, _point_request
    from hpctrain.slurm.job_options import JobOptions
    from hpctrain.slurm.request import Request

    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({
        "experiment": "r", "data": "d.h5", "model": "softmax", "batch_size": 32, "seed": 7,
        "weight_decay": 0.0001, "variants": {"no_weight_decay": {"weight_decay": 0.0},
                                             "big": {"batch_size": 64}}}))
    points = variant_points(str(config), (2,), 1, ("base", "no_weight_decay", "big"))
    assert [(p.name, p.nodes, p.ranks, p.overrides()) for p in points] == [
        ("base", 2, 2, ()), ("no_weight_decay", 2, 2, ()), ("big", 2, 2, ())]
    req = Request(config=str(config), overrides=("epochs=2",), job=JobOptions())
    study = Study(req, (2,), mode="variants", repeats=2, name="ablation",
                  variants=("base", "no_weight_decay", "big"))
    first = _point_request(study, points[0], tmp_path / "base-rep0", 0)
    second = _point_request(study, points[2], tmp_path / "big-rep1", 1)
    assert first.config == str(config) and first.overrides == ("epochs=2", "seed=7")
    assert second.config == f"{config}:big" and second.overrides == ("epochs=2", "seed=8")
    assert first.job.given["nodes"] == 2
    assert variant_changes(str(config), ["base", "no_weight_decay"]) == {
        "base": "the config as written", "no_weight_decay": "weight_decay=0.0"}
    assert study.plan()["variants"] == ["base", "no_weight_decay", "big"]
    assert "--variants base,no_weight_decay,big" in study.command()
    for nodes, variants, match in (((2,), ("base",), "at least two"),
                                   ((1, 2), ("base", "big"), "one --nodes"),
                                   ((2,), ("base", "missing"), "no variant 'missing'")):
        with pytest.raises(ConfigError, match=match):
            variant_points(str(config), nodes, 1, variants)
    with pytest.raises(ConfigError, match="the file alone"):
        variant_points(f"{config}:big", (2,), 1, ("base", "big"))
    with pytest.raises(ConfigError, match="--variants is for --mode variants"):
        Study(req, (2,), mode="weak", variants=("base", "big")).points(None)  # type: ignore


def test_methods_at_each_global_batch_points_and_requests(tmp_path):
    """--mode batch --variants: every method (config variant) at every global batch with its
    own per-rank batch, rate and warm-up; only the accumulated batches and the seed are set
    per point; a method whose batch cannot reach a global batch is named."""
    import yaml

    from hpctrain.scaling.plan import batch_points
    from hpctrain.scaling.study import Study, _point_request
    from hpctrain.slurm.job_options import JobOptions
    from hpctrain.slurm.request import Request

    config = tmp_path / "methods.yaml"
    config.write_text(yaml.safe_dump({
        "experiment": "m", "data": "d.h5", "model": "softmax", "batch_size": 32, "seed": 5,
        "optimizer": "sgd", "learning_rate": 0.1, "warmup_epochs": 1,
        "variants": {"sgd": {}, "lamb": {"optimizer": "lamb", "learning_rate": 0.002,
                                         "lr_scaling": "sqrt", "batch_size": 64}}}))
    cfg = load_config(str(config))
    points = batch_points(cfg, (2,), 1, (128, 1024), ("sgd", "lamb"), str(config))
    assert [(p.name, p.accumulate_steps, p.batch_size, p.overrides()) for p in points] == [
        ("sgd-g128", 2, 32, ("accumulate_steps=2",)),
        ("sgd-g1024", 16, 32, ("accumulate_steps=16",)),
        ("lamb-g128", 1, 64, ("accumulate_steps=1",)),
        ("lamb-g1024", 8, 64, ("accumulate_steps=8",))]
    req = Request(config=str(config), overrides=("epochs=2",), job=JobOptions())
    study = Study(req, (2,), mode="batch", repeats=2, name="methods",
                  global_batches=(128, 1024), variants=("sgd", "lamb"))
    assert study.points(cfg) == points
    got = _point_request(study, points[3], tmp_path / "lamb-g1024-rep1", 1)
    assert got.config == f"{config}:lamb"
    assert got.overrides == ("epochs=2", "accumulate_steps=8", "seed=6")
    # a batch study without methods also gives each repeat its own seed
    plain = Study(req, (2,), mode="batch", repeats=2, name="b", global_batches=(128,))
    p = plain.points(cfg)[0]
    assert _point_request(plain, p, tmp_path / "x", 1).overrides[-1] == "seed=6"
    with pytest.raises(ConfigError, match="lamb: batch_size 64 x 2 ranks"):
        batch_points(cfg, (2,), 1, (64,), ("sgd", "lamb"), str(config))
    with pytest.raises(ConfigError, match="one --nodes value"):
        batch_points(cfg, (1, 2), 1, (128,), ("sgd", "lamb"), str(config))
    with pytest.raises(ConfigError, match="at least two"):
        batch_points(cfg, (2,), 1, (128,), ("sgd",), str(config))
    # the command's overrides reach every method's config: its batch sets the accumulation
    small = batch_points(load_config(str(config), ["batch_size=16"]), (2,), 1, (128,),
                         ("sgd", "lamb"), str(config), ("batch_size=16",))
    assert [(p.name, p.batch_size, p.accumulate_steps) for p in small] == [
        ("sgd-g128", 16, 4), ("lamb-g128", 16, 4)]


def test_base_alone_runs_the_other_methods_only_above_the_base_batch(tmp_path):
    """--base-alone (a rate sweep at large batch): the first method only at the smallest
    global batch (the base), the others only above it; recorded in the plan and the
    command, and a study with it is not an extension of one without it."""
    import yaml

    from hpctrain.scaling.plan import batch_points, extends
    from hpctrain.scaling.study import Study
    from hpctrain.slurm.job_options import JobOptions
    from hpctrain.slurm.request import Request

    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "experiment": "s", "data": "d.h5", "model": "softmax", "batch_size": 32,
        "optimizer": "sgd", "learning_rate": 0.1,
        "variants": {"sgd": {}, "lamb": {"optimizer": "lamb", "learning_rate": 0.002},
                     "lamb_x2": {"optimizer": "lamb", "learning_rate": 0.004}}}))
    cfg = load_config(str(config))
    methods = ("sgd", "lamb", "lamb_x2")
    points = batch_points(cfg, (2,), 1, (64, 1024, 2048), methods, str(config),
                          base_alone=True)
    assert [p.name for p in points] == ["sgd-g64", "lamb-g1024", "lamb-g2048",
                                        "lamb_x2-g1024", "lamb_x2-g2048"]
    req = Request(config=str(config), job=JobOptions())
    study = Study(req, (2,), mode="batch", repeats=3, name="sweep",
                  global_batches=(64, 1024), variants=methods, base_alone=True)
    assert [p.name for p in study.points(cfg)] == ["sgd-g64", "lamb-g1024", "lamb_x2-g1024"]
    assert "--variants sgd,lamb,lamb_x2 --base-alone --repeats 3" in study.command()
    assert study.plan()["base_alone"] is True
    assert not extends(dataclasses.replace(study, base_alone=False).plan(), study.plan())
    for bad in ({"variants": ()}, {"global_batches": (1024,)}):
        with pytest.raises(ConfigError, match="--base-alone"):
            dataclasses.replace(study, **bad).points(cfg)


def test_methods_report_judges_each_point_against_the_base_seed_by_seed(tmp_path):
    from hpctrain.scaling.methods_report import judge, write_methods_study

    assert judge(-0.009, 0.004) == "held" and judge(-0.05, -0.02) == "fell"
    assert judge(-0.02, 0.001) == "not resolved" and judge(None, None) == "no interval"
    accs = {("sgd", 64): (0.900, 0.910, 0.905), ("sgd", 1024): (0.850, 0.862, 0.851),
            ("lars", 64): (0.898, 0.906, 0.904), ("lars", 1024): (0.897, 0.907, 0.903),
            ("lamb", 64): (0.880, 0.930, 0.890), ("lamb", 1024): (0.896,)}
    rows = []
    for (method, g), values in accs.items():
        for k, acc in enumerate(values):
            run = tmp_path / f"runs/{method}-g{g}-rep{k}"
            run.mkdir(parents=True)
            (run / "metrics.jsonl").write_text("".join(  # the last epoch gains 2 points
                json.dumps({"epoch": e, "val_accuracy": acc - 0.02 * (8 - e)}) + "\n"
                for e in (7, 8)))
            rows.append(_run(2, 2, 900.0, run_dir=str(run),
                             global_batch=g, accumulate_steps=g // 64, warmup_epochs=2.0,
                             learning_rate_scaled=0.05 * g / 64, test_accuracy=acc,
                             model="resnet20", dataset="tree", epochs=8, train_s=200.0,
                             node_hours=2 * 200 / 3600))
    failed = [{"run_dir": str(tmp_path / "runs/lamb-g2048-rep0"), "why": "FAILED: NaN loss"}]
    got = write_methods_study(tmp_path, pd.DataFrame(rows), title="large batch",
                              command="hpctrain study ...", methods=["sgd", "lars", "lamb"],
                              changes={"lars": "optimizer=\"lars\""}, failed=failed)
    assert got == {"mode": "batch", "points": 6, "runs": 16, "failed": 1,
                   "pictures": ["accuracy_by_method.png", "learning_curves.png"]}
    s = pd.read_csv(tmp_path / "summary.csv").set_index(["method", "global_batch"])
    # sgd at 1024, paired with sgd at 64 seed by seed: -0.050, -0.048, -0.054
    assert s.loc[("sgd", 1024), "difference"] == pytest.approx(-0.050667, abs=1e-6)
    assert s.loc[("sgd", 1024), "verdict"] == "fell"
    assert s.loc[("lars", 1024), "verdict"] == "held"  # -0.003, -0.003, -0.002
    assert s.loc[("lamb", 64), "verdict"] == "not resolved"  # -0.020, +0.020, -0.015
    assert s.loc[("lamb", 1024), "verdict"] == "no interval"  # one seed
    assert s.loc[("sgd", 64), "verdict"] == "the base"
    assert s.loc[("lars", 1024), "times_base"] == 16
    text = (tmp_path / "README.md").read_text()
    assert "| lars | optimizer=\"lars\" |" in text
    assert "- lars: held up to global batch 1024 (16x the base)." in text
    assert "- sgd: held nowhere. 1024 (16x): fell, -5.07 points" in text
    assert "- lamb-g2048-rep0: FAILED: NaN loss" in text
    assert "| sgd | 1024 | 16 | 16 | 0.8 | 2 | 11.7 | 0.8543 [0.8500-0.8620] (+/- " in text
    assert "- The budget: the base's test accuracy moved +2.00 points in its last epoch of 8 " \
           "(mean over 3 seed(s): +2.00, +2.00, +2.00)" in text
    # lamb at 64 straddles -1 point: how many seeds at this spread would resolve it
    n = s.loc[("lamb", 64), "seeds_to_resolve"]
    assert f"64 (1x): not resolved (~{int(n)} seeds would resolve it)" in text and n > 3
    for png in ("accuracy_by_method.png", "learning_curves.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert "looks" not in text and "(95 % interval)" in text
    # the same seeds read at three looks (3 seeds, then more added twice): the intervals
    # widen to 98.3 % and the seeds that would resolve a point count one look more
    write_methods_study(tmp_path, pd.DataFrame(rows), title="large batch",
                        command="hpctrain study ...", methods=["sgd", "lars", "lamb"],
                        changes={}, looks=[1, 2, 3])
    wide = pd.read_csv(tmp_path / "summary.csv").set_index(["method", "global_batch"])
    diffs = [-0.003, -0.003, -0.002]
    half = t_quantile(2, 1 - 0.05 / 3) * statistics.stdev(diffs) / math.sqrt(3)
    assert wide.loc[("lars", 1024), "difference_low"] == pytest.approx(
        statistics.fmean(diffs) - half, abs=1e-6)
    assert wide.loc[("lars", 1024), "difference_confidence"] == pytest.approx(1 - 0.05 / 3)
    assert wide.loc[("lamb", 64), "seeds_to_resolve"] > n
    text = (tmp_path / "README.md").read_text()
    assert "vs base, points (98.3 % interval)" in text
    assert "- Seeds were added after the verdicts were read: 3 looks, at 1, 2, 3 seeds. Each " \
           "verdict therefore uses the 98.3 % interval of the paired difference" in text


def test_variants_report_pairs_seeds_and_reads_the_interval(tmp_path):
    from hpctrain.scaling.variants_report import write_variants_study

    rows = []
    for variant, accs in (("base", (0.900, 0.910, 0.905)), ("no_wd", (0.880, 0.892, 0.884)),
                          ("no_ls", (0.902, 0.905, 0.909)), ("long", (0.905, 0.911, 0.906))):
        epochs = 4 if variant == "long" else 2
        for k, acc in enumerate(accs):
            run = tmp_path / "runs" / f"{variant}-rep{k}"
            run.mkdir(parents=True)
            (run / "metrics.jsonl").write_text("".join(
                json.dumps({"epoch": e, "val_accuracy": acc - 0.1 * (2 - e)}) + "\n"
                for e in (1, 2)))
            rows.append(_run(2, 2, 1000.0, run_dir=str(run), test_accuracy=acc, model="resnet20",
                             dataset="tree", epochs=epochs, train_s=50.0))
    failed = [{"run_dir": str(tmp_path / "runs/no_zi-rep0"), "why": "FAILED: node lost"}]
    got = write_variants_study(tmp_path, pd.DataFrame(rows), title="recipe", command="hpctrain "
                               "study ...", variants=["base", "no_wd", "no_ls", "long", "no_zi"],
                               changes={"no_wd": "weight_decay=0.0"}, failed=failed)
    assert got == {"mode": "variants", "points": 4, "runs": 12, "failed": 1,
                   "pictures": ["accuracy_by_variant.png", "learning_curves.png"]}
    s = pd.read_csv(tmp_path / "summary.csv").set_index("variant")
    # runs.csv names each run relative to the study, so the study can move
    assert list(pd.read_csv(tmp_path / "runs.csv")["run_dir"])[:2] == ["runs/base-rep0",
                                                                       "runs/base-rep1"]
    # paired by seed: differences -0.020, -0.018, -0.021: mean -0.019667, sd 0.001528
    half = t95(2) * 0.0015275 / math.sqrt(3)
    assert s.loc["no_wd", "difference"] == pytest.approx(-0.0196667, abs=1e-6)
    assert s.loc["no_wd", "difference_high"] == pytest.approx(-0.0196667 + half, abs=1e-5)
    text = (tmp_path / "README.md").read_text()
    assert "| no_wd | weight_decay=0.0 | 3 | 0.8853 [0.8800-0.8920] | -1.97 (-2.35 to -1.59)" \
        in text
    assert "- no_wd: -1.97 points against base (95 % interval -2.35 to -1.59 over 3 seeds): " \
           "lower." in text
    assert "- no_ls: +0.03 points against base" in text and "the interval holds 0" in text
    # a difference that holds 0 says how many seeds would resolve it, at the interval of one
    # look more (none for no_ls: its mean sits on 0). long: differences +0.005, +0.001,
    # +0.001, sd 0.00231: at 8 seeds t(7, 97.5 %) = 2.841 gives a half-width of 0.00232 under
    # the mean's 0.00233; at 7, t(6) = 3.287 gives 0.00287
    assert "- long: +0.23 points against base (95 % interval -0.34 to +0.81 over 3 seeds): " \
           "no difference resolved (the interval holds 0; ~8 seeds at this spread would " \
           "resolve it)." in text
    assert text.count("seeds at this spread") == 1
    assert "2 rank(s) on 2 node(s), 2 or 4 epochs (by variant) of" in text
    assert "- no_zi-rep0: FAILED: node lost" in text
    for png in ("accuracy_by_variant.png", "learning_curves.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow(reason="a variants study's four Slurm jobs (two variants x two seeds) and "
                        "its resume")
@pytest.mark.slurm
def test_variants_study_on_the_embedded_cluster(slurm_cluster, fmnist_h5, tmp_path):
    """Two variants of a config, two seeds each, through real Slurm jobs: every run trains
    its variant with its own seed, the report pairs them by seed, and a second call
    resumes with nothing to submit."""
    import yaml

    config = tmp_path / "variants.yaml"
    config.write_text(yaml.safe_dump({
        "experiment": "variants", "data": str(fmnist_h5), "model": "softmax", "batch_size": 64,
        "epochs": 2, "train_limit": 2048, "test_limit": 512, "pictures": False, "seed": 3,
        "optimizer": "sgd", "learning_rate": 0.05,
        "variants": {"slow": {"learning_rate": 0.005}}}))
    env = {"SLURM_CONF": str(slurm_cluster.slurm_conf), "HPCTRAIN_RESULTS": str(tmp_path / "r")}
    args = ["--config", str(config), "--nodes", "1", "--mode", "variants", "--variants",
            "base,slow", "--repeats", "2", "--name", "ablation"]
    hpctrain("study", *args, env=env, check=True, timeout=600)
    study = tmp_path / "r" / "studies" / "ablation"
    runs = {run.name: read_report(run) for run in (study / "runs").iterdir()}
    assert sorted(runs) == ["base-rep0", "base-rep1", "slow-rep0", "slow-rep1"]
    assert {name: (r["training"]["seed"], r["learning_rate_scaled"]) for name, r in
            runs.items()} == {"base-rep0": (3, 0.05), "base-rep1": (4, 0.05),
                              "slow-rep0": (3, 0.005), "slow-rep1": (4, 0.005)}
    summary = pd.read_csv(study / "summary.csv")
    assert summary["variant"].tolist() == ["base", "slow"] and summary["seeds"].tolist() == [2, 2]
    diffs = [runs[f"slow-rep{k}"]["test_accuracy"] - runs[f"base-rep{k}"]["test_accuracy"]
             for k in (0, 1)]
    assert summary["difference"].iloc[1] == pytest.approx(sum(diffs) / 2, abs=1e-5)
    readme = (study / "README.md").read_text()
    assert "| slow | learning_rate=0.005 | 2 |" in readme and "over 2 seeds" in readme
    assert (study / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    again = hpctrain("study", *args, env=env, check=True)
    assert "0 run(s) to submit" in again.stdout
    assert json.loads((study / "plan.json").read_text())["looks"] == [2]  # resumed: no look


def test_methods_report_shows_the_base_noise_scale_when_measured(tmp_path):
    """A noise_scale.json in a methods study (hpctrain noise-scale --all of the base): a table
    per epoch against the study's global batches, the median over training, a picture; a
    checkpoint without an estimate is counted, not drawn."""
    from hpctrain.scaling import noise_report
    from hpctrain.scaling.methods_report import write_methods_study

    rows = []
    for method, g, accs in (("sgd", 64, (0.86, 0.87)), ("lamb", 1024, (0.84, 0.845))):
        for k, acc in enumerate(accs):
            run = tmp_path / "runs" / f"{method}-g{g}-rep{k}"
            run.mkdir(parents=True)
            (run / "metrics.jsonl").write_text("".join(json.dumps(
                {"epoch": e, "val_accuracy": acc - 0.01 * (2 - e)}) + "\n" for e in (1, 2)))
            rows.append(_run(2, 2, 1000.0, run_dir=str(run), test_accuracy=acc, epochs=2,
                             model="resnet20", dataset="tree", global_batch=g,
                             accumulate_steps=g // 64, learning_rate_scaled=0.1,
                             warmup_epochs=1.0, images_per_epoch=12000, train_s=60.0))

    def point(epoch, b, lo, hi):
        return {"epoch": epoch, "checkpoint": f"epoch-{epoch:04d}", "noise_scale": b,
                "noise_scale_low": lo, "noise_scale_high": hi}

    (tmp_path / noise_report.FILE).write_text(json.dumps({
        "run": "sgd-g64-keep-all", "seed": 42, "batch": 32, "batches": 64, "groups": 8,
        "reference": "McCandlish et al. 2018", "points": [
            point(1, 100.0, 80.0, 120.0), point(2, 300.0, 200.0, 400.0),
            point(3, 200.0, None, None), point(4, None, None, None)]}))
    got = write_methods_study(tmp_path, pd.DataFrame(rows), title="t", command="study",
                              methods=["sgd", "lamb"], changes={})
    assert "noise_scale.png" in got["pictures"]
    text = (tmp_path / "README.md").read_text()
    assert "| epoch | B_simple (95 % interval) | 64 / B_simple | 1024 / B_simple |" in text
    assert "| 1 | 100 (80 to 120) | 0.64 | 10 |" in text
    assert "| 3 | 200 | 0.32 | 5.1 |" in text
    assert "median B_simple is 200 samples: the largest global batch here (1024) is 5.1 " \
           "times it" in text and "1 checkpoint(s) gave no estimate" in text
    assert (tmp_path / "noise_scale.png").read_bytes()[:4] == b"\x89PNG"
