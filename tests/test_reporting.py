"""Report statistics (pure functions) and rendering."""

from __future__ import annotations

import math

import pytest

from hpctrain.experiment import TrainConfig
from hpctrain.report.run_report import build_report, render_markdown
from hpctrain.report.statistics import (
    confidence_for_looks,
    half_width,
    interval95,
    t_quantile,
    throughput,
    time_to_accuracy,
)


def _epochs(accs, rates, windows=None):
    return [{"epoch": i + 1, "val_accuracy": a, "val_loss": 0.3, "accuracy": a, "loss": 0.3,
             "images_per_s": r, "elapsed_s": 10.0 * (i + 1), "epoch_s": 9.0,
             "window_images_per_s": windows or []}
            for i, (a, r) in enumerate(zip(accs, rates, strict=True))]


def test_interval95_is_a_confidence_interval_of_the_mean():
    r = interval95([100.0, 110.0, 90.0])
    assert r["mean"] == pytest.approx(100.0) and r["stdev"] == pytest.approx(10.0)
    # Student's t, 2 degrees of freedom: 4.303 * 10 / sqrt(3) (not 1.96 sigma)
    assert r["ci95"] == pytest.approx(4.303 * 10.0 / math.sqrt(3), rel=1e-4)
    many = interval95([float(v) for v in range(1, 201)])  # t -> 1.96 for large n
    assert many["ci95"] == pytest.approx(1.96 * many["stdev"] / math.sqrt(200), rel=0.01)
    assert interval95([5.0]) == {"mean": 5.0, "stdev": None, "ci95": None, "n": 1}
    assert interval95([])["mean"] is None


# Two-sided quantiles of Student's t as printed in statistics tables (3 decimals)
T_TABLE_95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201,
              2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074,
              2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
T_TABLE_OTHER = {(40, 0.95): 2.021, (60, 0.95): 2.000, (120, 0.95): 1.980, (9, 0.99): 3.250,
                 (4, 0.90): 2.132, (1, 0.99): 63.657, (30, 0.98): 2.457}


def test_t_quantile_matches_the_printed_tables():
    for df, t in enumerate(T_TABLE_95, start=1):
        assert round(t_quantile(df, 0.95), 3) == t, df
    for (df, confidence), t in T_TABLE_OTHER.items():
        assert round(t_quantile(df, confidence), 3) == t, (df, confidence)
    assert t_quantile(10_000, 0.95) == pytest.approx(1.960, abs=1e-3)
    for bad in ((0, 0.95), (3, 1.0), (3, 0.0)):
        with pytest.raises(ValueError):
            t_quantile(*bad)


def test_intervals_widen_for_every_look_at_a_growing_sample():
    """Seeds added after a verdict was read: k looks in all, each interval at 1 - 0.05/k
    (Bonferroni), so a difference held at one look may not be held at three."""
    assert confidence_for_looks(1) == 0.95 and confidence_for_looks(0) == 0.95
    assert confidence_for_looks(3) == pytest.approx(1 - 0.05 / 3)
    diffs = [-0.0095, -0.0055, -0.0065, -0.0035, -0.0075]  # mean -0.0065, sd 0.0022
    once, thrice = half_width(diffs), half_width(diffs, confidence_for_looks(3))
    assert once == pytest.approx(interval95(diffs)["ci95"])
    assert -0.0065 - once > -0.01 > -0.0065 - thrice  # held at one look, not at three
    assert thrice == pytest.approx(t_quantile(4, 1 - 0.05 / 3) * 0.0022361 / math.sqrt(5),
                                   rel=1e-4)
    assert half_width([1.0]) is None


def test_throughput_excludes_first_epoch():
    r = throughput(_epochs([0.5, 0.6, 0.7], [10.0, 100.0, 102.0]))
    assert r["mean"] == pytest.approx(101.0) and r["n"] == 2 and r["basis"] == "epochs 2..N"
    one = throughput(_epochs([0.5], [10.0], windows=[1.0, 50.0, 52.0]))
    assert one["mean"] == pytest.approx(51.0) and one["basis"].startswith("epoch 1")
    resumed = _epochs([0.5, 0.6, 0.7, 0.8], [10.0, 100.0, 20.0, 104.0])
    resumed[2]["first_in_segment"] = True  # a resumed segment rebuilt the graph in epoch 3
    r = throughput(resumed)
    assert r["mean"] == pytest.approx(102.0) and r["n"] == 2 and "1 resumed segment" in r["basis"]


def test_time_to_accuracy():
    t = time_to_accuracy(_epochs([0.81, 0.86, 0.885], [1, 1, 1]), [0.80, 0.85, 0.88, 0.9])
    assert t == {"0.80": 10.0, "0.85": 20.0, "0.88": 30.0, "0.90": None}


def _report(digests, segments=None, **config):
    return build_report(
        config=TrainConfig(experiment="e", data="d.h5", epochs=2, batch_size=64,
                           accuracy_thresholds=[0.8], **config).to_dict(),
        segments=segments,
        epochs=_epochs([0.7, 0.82], [10.0, 20.0]),
        env={"size": 2, "launcher": "srun", "job_id": "9", "array_task_id": None,
             "job_nodelist": "node[1-2]", "num_nodes": 2, "restart_count": 0},
        node_names=["node2", "node1"], dataset={"dataset": "fashion-mnist",
                                                 "train_count": 60000, "test_count": 10000,
                                                 "source_sha256": {}},
        startup_s=5.0, train_s=20.0, total_s=26.0, weight_digests=digests, status="completed",
        error=None,
        versions={"python": "3.11"}, run_dir="/r")


def test_build_and_render_report():
    r = _report(["ab" * 32, "ab" * 32])
    assert r["nodes"] == 2 and r["node_names"] == ["node1", "node2"]
    assert r["global_batch_size"] == 128 and r["learning_rate_scaled"] == pytest.approx(0.002)
    assert r["images_per_s_per_rank"]["mean"] == pytest.approx(10.0)
    assert r["ranks_in_sync"]["ok"] is True
    md = render_markdown(r)
    assert "test accuracy: **0.8200**" in md and "ranks in sync: yes" in md
    assert "0.80: 20.0 s" in md


def test_target_expected_and_segments():
    segments = [{"first_epoch": 1, "last_epoch": 1, "job_id": "9", "restart_count": 0,
                 "train_s": 10.0, "started": "t0"},
                {"first_epoch": 2, "last_epoch": 2, "job_id": "9", "restart_count": 1,
                 "train_s": 10.0, "started": "t1", "first_step": 0, "last_step": 40,
                 "ended": "stopped (SIGUSR1)"},
                {"first_epoch": 3, "first_step": 40, "last_epoch": 3, "job_id": "9",
                 "restart_count": 2, "train_s": 5.0, "started": "t2", "ended": "completed"}]
    r = _report(["a" * 64] * 2, segments, target_accuracy=0.75, expected_accuracy=0.83)
    assert r["target_accuracy"] == {"target": 0.75, "reached": True}
    assert r["time_to_accuracy_s"]["0.75"] == 20.0
    assert r["expected_accuracy"] == {"expected": 0.83, "met": False}
    md = render_markdown(r)
    assert "segments: 3" in md
    assert "2. from epoch 1 to 2 (+40 steps): job 9, restart 1, 10.0 s, started t1, " \
           "stopped (SIGUSR1)" in md
    assert "3. from epoch 2 (+40 steps) to 3: job 9, restart 2" in md
    assert "expected accuracy >= 0.83: **not met**" in md
    assert _report(["a" * 64] * 2, expected_accuracy=0.8)["expected_accuracy"]["met"]


def test_out_of_sync_is_visible():
    r = _report(["a" * 64, "b" * 64])
    assert r["ranks_in_sync"]["ok"] is False
    assert "ranks in sync: **NO**" in render_markdown(r)
    assert not math.isnan(r["test_accuracy"])


def test_accuracy_table_compares_ranks_and_expectations():
    from hpctrain.report.accuracy_table import accuracy_table

    two = _report(["a" * 64] * 2, expected_accuracy=0.8)  # 2 ranks, final accuracy 0.82
    one = {**_report(["a" * 64], expected_accuracy=0.8), "ranks": 1, "nodes": 1,
           "test_accuracy": 0.8290, "run_dir": "/r1"}
    md = accuracy_table([two, one])
    lines = [line for line in md.splitlines() if line.startswith("| e |")]
    assert len(lines) == 2 and "| 1 × 1 |" in lines[0] and "| 2 × 2 |" in lines[1]
    assert "-0.90 pp" in lines[1] and "99.23 %" in lines[1]  # the workshop's MNIST CNN
    assert "2 conv + pool 0.876-0.916" in lines[1]
    assert "Problems: e: 2 ranks -0.90 pp from 1 rank" in md
    close = {**one, "test_accuracy": 0.8230}
    assert "Every run met its expected accuracy" in accuracy_table([two, close])
    listed = accuracy_table([two, close], studies=[("studies/a/README.md", "a: variants")])
    assert listed.endswith("## Studies\n\nAccuracy studies (`hpctrain study --mode variants` "
                           "or `--mode batch`), each with its command, table, verdicts and "
                           "pictures:\n\n- [a: variants](studies/a/README.md)\n")


def test_accuracy_table_keeps_a_config_and_its_workshop_variant_apart():
    from hpctrain.report.accuracy_table import accuracy_table

    def run(ranks, optimizer, epochs, acc):
        r = _report(["a" * 64] * ranks)
        return {**r, "ranks": ranks, "nodes": ranks, "test_accuracy": acc,
                "epochs_completed": epochs, "run_dir": f"/{optimizer}{ranks}",
                "training": {**r["training"], "optimizer": optimizer}}

    md = accuracy_table([run(2, "adam", 5, 0.92), run(1, "adadelta", 5, 0.90),
                         run(2, "adadelta", 5, 0.91), run(1, "adam", 5, 0.93)])
    lines = [line for line in md.splitlines() if line.startswith("| e |")]
    assert ["adadelta" in line for line in lines] == [True, True, False, False]
    assert "+1.00 pp" in lines[1] and "-1.00 pp" in lines[3]  # each vs its own recipe


def test_hardware_of_a_node_with_infiniband_and_gpus(tmp_path):
    from hpctrain import machine
    from hpctrain.report.run_report import hardware_lines

    port = tmp_path / "mlx5_0" / "ports" / "1"
    port.mkdir(parents=True)
    for name, text in (("rate", "100 Gb/sec (4X EDR)"), ("state", "4: ACTIVE"),
                       ("link_layer", "InfiniBand")):
        (port / name).write_text(text + "\n")
    (tmp_path / "mlx5_1" / "ports" / "1").mkdir(parents=True)  # a port without its files
    ports = machine.interconnect(tmp_path)
    assert ports[0] == {"device": "mlx5_0", "port": "1", "rate": "100 Gb/sec (4X EDR)",
                        "state": "4: ACTIVE", "link_layer": "InfiniBand"}
    assert ports[1]["rate"] is None and machine.interconnect(tmp_path / "none") == []
    node = {"model": "Xeon", "cpus": 64, "avx512f": True, "avx2": True,
            "gpus": [{"name": "NVIDIA A100-SXM4-40GB", "driver": "535.54", "memory": "40 GiB"}]
            * 4, "interconnect": ports, "slurm_features": ["a100", "ib"]}
    lines = hardware_lines({"node": node, "horovod": {
        "controller": "MPI", "tensor_ops": "NCCL", "fusion_threshold_bytes": 128 * 2**20,
        "cycle_time_ms": 1.0, "hierarchical_allreduce": False, "cuda": "12.2", "cudnn": "8"}})
    assert lines == [
        "- hardware (rank 0's node): Xeon, 64 CPUs, AVX-512; 4 x NVIDIA A100-SXM4-40GB (driver "
        "535.54); interconnect mlx5_0/1 100 Gb/sec (4X EDR) InfiniBand; Slurm features a100,ib",
        "- Horovod: MPI controller, NCCL allreduce, fusion 128 MiB, cycle 1.0 ms; built with "
        "cuda 12.2, cudnn 8"]
    assert hardware_lines(None) == []
