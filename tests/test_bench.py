"""The benchmark harness on known inputs, and each benchmark's runs for real at a tiny size:
the plain Keras baseline, hpctrain without its per-step mechanisms, Horovod's recipe."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys

import pytest

from conftest import REPO, write_config
from hpctrain import machine
from hpctrain.bench.harness import alternate, paired_ratio, spread, verdict
from hpctrain.experiment import ConfigError, load_config
from hpctrain.report.statistics import samples_to_resolve, t95


def test_alternate_runs_variants_in_turn_reversing_every_other_round():
    order: list[str] = []

    def variant(name, value):
        return lambda: order.append(name) or value

    samples = alternate({"a": variant("a", 1.0), "b": variant("b", 2.0)}, rounds=3,
                        log=lambda msg: None)
    assert order == ["a", "b", "b", "a", "a", "b"] and samples == {"a": [1.0] * 3, "b": [2.0] * 3}


def test_paired_ratio_cancels_drift_between_rounds():
    # the machine slows 2x after the first round: per-round ratios stay 0.9
    hp, plain = [90.0, 45.0, 45.0], [100.0, 50.0, 50.0]
    r = paired_ratio(hp, plain)
    assert r["median"] == pytest.approx(0.9) and r["min"] == pytest.approx(0.9)
    assert r["low"] == pytest.approx(0.9) and r["high"] == pytest.approx(0.9) and r["n"] == 3
    got = spread(hp)
    assert {k: got[k] for k in ("median", "min", "max", "n", "spread", "samples")} == {
        "median": 45.0, "min": 45.0, "max": 90.0, "n": 3, "spread": 1.0, "samples": hp}
    # mean 60, sd 25.98: t(2) = 4.303, half-width 64.5
    assert got["low"] == pytest.approx(60 - 4.303 * 25.98 / 3 ** 0.5, abs=0.01)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_paired_ratio_over_processes_counts_processes_not_rounds():
    """Rounds of one process share that process' luck: with `groups`, each process' geometric
    mean is one sample, and a steady gap that changes sides between processes is not
    hidden by many tight rounds."""
    per_round = [0.8, 0.8, 0.8, 1.25, 1.25, 1.25]
    one = paired_ratio(per_round, [1.0] * 6)
    two = paired_ratio(per_round, [1.0] * 6, groups=[0, 0, 0, 1, 1, 1])
    assert one["n"] == 6 and two["n"] == 2 and two["rounds"] == 6
    assert two["per_process"] == pytest.approx([0.8, 1.25])
    assert two["per_round"] == pytest.approx(per_round) and two["median"] == one["median"]
    assert (two["high"] - two["low"]) > 5 * (one["high"] - one["low"])
    text = verdict(two, 0.9)
    assert "2 processes x 3 rounds" in text and "processes at this spread" in text
    assert "**met**" in verdict(paired_ratio([1.0] * 4, [1.0, 1.01, 0.99, 1.0], [0, 0, 1, 1]),
                                0.9)
    with pytest.raises(ValueError):
        paired_ratio([1.0, 1.0], [1.0, 1.0], groups=[0])


def _ratio(per_round: list[float]) -> dict:
    return paired_ratio(per_round, [1.0] * len(per_round))


def test_one_verdict_rule_follows_the_interval():
    met = _ratio([0.98, 0.99, 1.0, 0.985, 0.995])
    assert 0.97 < met["low"] < met["median"] < met["high"]
    assert verdict(met, 0.97).startswith("goal >= 0.97: **met** (95 % interval 0.9")
    assert "**missed**" in verdict(_ratio([0.6, 0.65, 0.62, 0.66, 0.64]), 0.97)
    # a median above the goal is not enough: the interval straddles it
    straddle = _ratio([0.95, 1.04, 0.99, 0.96, 1.0])
    assert straddle["median"] > 0.97 and straddle["low"] < 0.97 < straddle["high"]
    text = verdict(straddle, 0.97)
    assert "**not resolved**" in text and "straddles the goal" in text
    n = int(text.split("about ")[1].split(" rounds")[0])
    assert n == samples_to_resolve(straddle["per_round"], 0.97, log=True) and n > 5
    logs = [math.log(x) for x in straddle["per_round"]]
    sd, gap = statistics.stdev(logs), abs(statistics.fmean(logs) - math.log(0.97))
    assert t95(n - 1) * sd / n ** 0.5 < gap <= t95(n - 2) * sd / (n - 1) ** 0.5
    centred = _ratio([0.96, 0.98, 0.97 ** 2 / 0.96, 0.97 ** 2 / 0.98])  # geometric mean 0.97
    assert "more rounds would not resolve it" in verdict(centred, 0.97)
    assert "no interval" in verdict(_ratio([1.2]), 0.97)
    # lower is better, in absolute units: seconds to the first step
    seconds = spread([8.0, 9.0, 8.5, 8.8, 9.1])
    assert "**met**" in verdict(seconds, 10, higher_is_better=False, unit=" s", digits=1)
    assert "**missed**" in verdict(seconds, 7, higher_is_better=False, unit=" s")
    assert "**not resolved**" in verdict(seconds, 8.9, higher_is_better=False, unit=" s")


def test_without_names_known_mechanisms(fmnist_h5, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", fmnist_h5, without=["reseed", "step_timing"])
    assert load_config(str(cfg)).without == ["reseed", "step_timing"]
    bad = write_config(tmp_path / "bad.yaml", fmnist_h5, without=["dropout"])
    with pytest.raises(ConfigError, match="without: 'dropout' unknown"):
        load_config(str(bad))


@pytest.mark.slow(
    reason="five TensorFlow processes: plain Keras on 1 and 2 ranks, stripped hpctrain on 2")
@pytest.mark.mpi
def test_baselines_and_stripped_runs_are_real(fmnist_h5, tmp_path):
    """One tiny sample of each kind the benchmarks alternate: plain Keras, Horovod's recipe
    on 2 ranks (with hpctrain's Open MPI setting, as one of its two rows runs), and hpctrain
    without every per-step mechanism (one rank, as the trainer benchmark runs it)."""
    from hpctrain.bench.horovod_overhead import TUNED
    from hpctrain.bench.runs import hpctrain_run, plain_run

    args = ["--data", str(fmnist_h5), "--epochs", "2", "--batch", "64", "--threads", "1",
            "--train-limit", "1000"]
    one = plain_run(args)
    assert one["images_per_s"] > 0 and one["epochs"] == 2
    assert one["images_per_epoch"] == (1000 // 64) * 64  # whole batches of the 1,000
    two = plain_run([*args, "--target", "0.3", "--test-limit", "500"], ranks=2, env=TUNED)
    assert two["ranks"] == 2 and two["time_to_target_s"] > 0 and two["target_accuracy"] >= 0.3
    cfg = write_config(tmp_path / "c.yaml", fmnist_h5, epochs=2, train_limit=1000,
                       test_limit=500)
    r = hpctrain_run(str(cfg), ["without=[stop_check,reseed,lr_schedule,step_timing]"])
    assert r["status"] == "completed" and r["ranks"] == 1
    assert not r["step_times"] or not r["step_times"].get("per_rank")  # no step timing
    names = [name for name, _ in r["startup_phases_s"]]  # in order
    assert names == ["python, imports, config", "horovod init",
                     "tensorflow setup, run directory", "data open", "model build, checkpoint",
                     "first step (graph tracing)"]
    assert all(seconds >= 0 for _, seconds in r["startup_phases_s"])


def test_launch_defaults_yield_when_idle_and_slow_one_ranks_horovod_cycle():
    from hpctrain.environment import JobEnvironment

    one, two = JobEnvironment(size=1), JobEnvironment(size=2)
    env: dict[str, str] = {}
    assert one.tune_before_init(env) == env == {"OMPI_MCA_mpi_yield_when_idle": "1",
                                                "HOROVOD_CYCLE_TIME": "5"}
    env = {}  # more ranks: every allreduce waits for the cycle, so Horovod's default stays
    assert two.tune_before_init(env) == env == {"OMPI_MCA_mpi_yield_when_idle": "1"}
    mine = {"OMPI_MCA_mpi_yield_when_idle": "0", "HOROVOD_CYCLE_TIME": "1"}  # the user's win
    assert one.tune_before_init(mine) == {}
    assert mine == {"OMPI_MCA_mpi_yield_when_idle": "0", "HOROVOD_CYCLE_TIME": "1"}
    # the size the launcher announces decides, before hvd.init
    assert JobEnvironment.detect({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}
                                 ).tune_before_init({}) == {"OMPI_MCA_mpi_yield_when_idle": "1"}


@pytest.mark.slow(reason="two Slurm jobs, data in place and copied to node-local scratch")
@pytest.mark.slurm
def test_job_overhead_measures_real_jobs(slurm_cluster, fmnist_h5, tmp_path):
    """Benchmark 5's sample on the tests' Slurm cluster, data in place and copied to
    node-local scratch: the parts add up and lie in submit -> first step -> done order."""
    from hpctrain.bench import job_overhead
    from hpctrain.bench.runs import mpi_env

    env = mpi_env({"SLURM_CONF": str(slurm_cluster.slurm_conf)})
    # a fifth of the benchmark's training: the parts around it are what is checked
    tiny = [o for o in job_overhead.SHORT if not o.startswith(("train_limit", "test_limit"))]
    tiny += ["train_limit=512", "test_limit=128"]
    # and one node a job (the benchmark's take two): the parts are the same
    samples = {"in place": [job_overhead.one_job(env, tmp_path, str(fmnist_h5), None, tiny,
                                                 nodes=1)],
               "copy": [job_overhead.one_job(env, tmp_path, str(fmnist_h5),
                                             str(job_overhead.scratch_profile(tmp_path)),
                                             tiny, nodes=1)]}
    for (s,) in samples.values():
        assert s["to_rank_s"] + s["rank_to_first_step_s"] == pytest.approx(s["to_first_step_s"])
        # (sbatch's answer may reach hpctrain submit after the job has started)
        assert s["submit_command_s"] > 0 and 0 < s["to_rank_s"] < s["to_first_step_s"], s
        assert 0 < s["rank_to_first_step_s"] < s["to_first_step_s"] < s["submit_to_done_s"]
        assert s["job_not_training_s"] > 0
    requeue = {"signal_to_stopped_s": 3.0, "requeue_delay_s": 30.0,
               "running_to_first_step_s": 8.0, "waiting_as": {"PENDING (BeginTime)": 30.0},
               "segments": ["stopped (SIGUSR1)", "completed"]}
    md = job_overhead.summarize(samples, requeue, 1)["markdown"]
    assert "| seconds | in place | copy |" in md and "running again 30.0 s later" in md


def test_trainer_overhead_summary_pairs_rounds_and_profiles_the_step():
    from hpctrain.bench.compute_costs import CONTROL, horovod_variant
    from hpctrain.bench.trainer_overhead import ALL_OFF, DETERMINISM, summarize
    from hpctrain.environment import JobEnvironment

    # rounds of epochs taken in turns: a round's ratio is the geometric mean of its epochs'
    headline = [{"plain Keras": [100.0, 50.0], "hpctrain": [98.0, 49.0]},
                {"plain Keras": [100.0, 100.0], "hpctrain": [100.0, 92.16]},
                {"plain Keras": [50.0], "hpctrain": [50.0]},
                {"plain Keras": [80.0, 80.0, 80.0], "hpctrain": [78.4, 78.4, 78.4]}]
    # null model, batch 64: plain Keras 1,000 us a step; hpctrain 2,000 us (+1,000)
    null = {"plain Keras": [64_000.0, 32_000.0], "hpctrain": [32_000.0, 64_000 / 3],
            DETERMINISM: [40_000.0, 64_000 / 2.6],  # +600 us in both rounds: costs 400
            "reseed": [30_000.0, 20_000.0],  # slower without it: a cost below zero
            ALL_OFF: [51_200.0, 64_000 / 2.25]}  # +250 us in both rounds
    # in one process, ms a step: op determinism 0.9 of plain's rate, Horovod's thread 0.95
    # at 1 ms and 1.0 at hpctrain's cycle (the median of 1.1 and 0.9)
    ours, default = (horovod_variant(JobEnvironment.ONE_RANK_CYCLE_MS), horovod_variant("1"))
    compute = {"steps": 30, "ms_per_step": {"plain Keras": [9.0, 9.0, 9.0],
                                            CONTROL: [9.0 / 0.98] * 3,
                                            DETERMINISM: [10.0, 10.0, 10.0],
                                            default: [9.0 / 0.95] * 3,
                                            ours: [9.0 / 1.1, 9.0, 9.0 / 0.9]}}
    r = summarize(headline, null, train_limit=1000, threads=2, batch=64, epochs=3,
                  compute=compute)
    assert r["ratio"]["per_round"] == pytest.approx([0.98, 0.96, 1.0, 0.98])
    assert r["ratio"]["median"] == pytest.approx(0.98)
    assert r["epoch_pairs"]["n"] == 8 and r["epoch_pairs"]["min"] == pytest.approx(0.9216)
    assert r["ratio_mean"]["mean"] == pytest.approx(0.98) and r["ratio_mean"]["n"] == 4
    p = r["per_step_us"]
    assert p["hpctrain"] == pytest.approx(1000) and p["all_off"] == pytest.approx(250)
    assert p["costs"][DETERMINISM] == pytest.approx(400)
    assert p["costs"]["reseed"] < 0
    # the median of the plain rounds' rates (geometric means: 70.7, 100, 50, 80)
    assert p["cnn_step_us"] == pytest.approx(64e6 / ((5000 ** 0.5 + 80) / 2))
    # op determinism's per-step cost (400) leaves the overhead: the CNN measures it whole
    assert p["implied_ratio"] == pytest.approx(
        p["cnn_step_us"] / (p["cnn_step_us"] + 600) * 0.9 * 1.0)
    assert r["in_process"][default]["ratio"]["median"] == pytest.approx(0.95)
    md = r["markdown"]
    assert "1 rank, 4 rounds. In each round both processes start together" in md
    assert "8 epoch pairs over epochs 2..3" in md and "2 rounds alternating" in md
    assert "Epoch by epoch the ratio is 0.98 (0.92-1.00)" in md
    # a median over the goal whose interval straddles it is not a win
    assert "Measured: median 0.980, goal >= 0.97: **not resolved**" in md
    assert "adds **1,000 µs** a step" in md
    assert "| hpctrain without reseed |" in md and "250 µs remain" in md
    assert f"| {default} (Horovod's default) | 9.47 (9.47-9.47, n=3) | 0.950 (0.950-0.950) |" \
        in md and "(hpctrain's with one rank)" in md and "30 steps, 3 rounds" in md
    assert "second copy of the plain model, runs at 0.980 (0.980-0.980) of the first" in md
    # with the baseline also run under hpctrain's allocator settings, the faster is the
    # denominator, and both rows are shown
    from hpctrain.bench.trainer_overhead import PLAIN_TUNED

    three = [{**r, PLAIN_TUNED: [v / 0.9 for v in r["plain Keras"]]} for r in headline]
    r3 = summarize(three, null, train_limit=1000, threads=2, batch=64, epochs=3,
                   compute=compute)
    assert r3["ratio"]["per_round"] == pytest.approx([0.882, 0.864, 0.9, 0.882])
    assert "(denominator: plain Keras, hpctrain's allocator settings)" in \
        r3["headline"]["benchmark"]
    md3 = r3["markdown"]
    assert "In each round the 3 processes start together" in md3
    assert "`MALLOC_MMAP_MAX_=0`" in md3 and "| plain Keras | " in md3
    assert f"**hpctrain / {PLAIN_TUNED}, measured: 0.88 (0.86-0.90)**" in md3
    assert "goal >= 0.97: **missed**" in md3


@pytest.mark.mpi
def test_compute_costs_alternates_its_variants_in_one_process(fmnist_h5):
    """bench/compute_costs.py at its smallest, for real: one process under horovodrun --gloo,
    Horovod initialised and shut down around its samples, op determinism on and off."""
    from hpctrain.bench.compute_costs import CONTROL, DETERMINISM, PLAIN, horovod_variant
    from hpctrain.bench.runs import compute_costs_run
    from hpctrain.environment import JobEnvironment

    r = compute_costs_run(["--data", str(fmnist_h5), "--rounds", "2", "--steps", "3",
                           "--train-limit", "1280"], timeout=600)
    ms = r["ms_per_step"]
    assert list(ms) == [PLAIN, CONTROL, DETERMINISM, horovod_variant("1"),
                        horovod_variant(JobEnvironment.ONE_RANK_CYCLE_MS)]
    assert all(len(v) == 2 and all(0 < t < 10_000 for t in v) for v in ms.values())
    # the summary pairs each variant with plain Keras round by round, on these samples
    from hpctrain.bench.trainer_overhead import in_process

    assert in_process(r)[DETERMINISM]["ratio"]["per_round"] == pytest.approx(
        [p / d for p, d in zip(ms[PLAIN], ms[DETERMINISM], strict=True)])
    # without horovodrun --gloo, Horovod's MPI would abort at the second init: refused first
    res = subprocess.run([sys.executable, "-m", "hpctrain.bench.compute_costs", "--data",
                          str(fmnist_h5)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "horovodrun --gloo -np 1" in res.stderr


@pytest.mark.slow(reason="two fresh spawned processes, each importing TensorFlow and timing five "
                  "input pipelines")
@pytest.mark.mpi
def test_input_bench_runs_every_variant_and_reports_ratios(fmnist_h5, tmp_path):
    """The input pipeline benchmark at its smallest: two fresh processes of one round each,
    the 28x28 case only (no staged image tree given), on the first 6,000 training images;
    every variant is measured, every round's rate and process kept, and the goal's
    interval is over the two processes."""
    import h5py
    import numpy as np

    from hpctrain.data.stage_mnist import stage

    with h5py.File(fmnist_h5) as f:
        np.savez(tmp_path / "small.npz", x_train=f["train/images"][:6000, ..., 0],
                 y_train=f["train/labels"][:6000], x_test=f["test/images"][:1000, ..., 0],
                 y_test=f["test/labels"][:1000])
    small = tmp_path / "small.h5"
    stage("fashion-mnist", tmp_path / "small.npz", small)
    out = tmp_path / "benchmarks"
    project_readme = (REPO / "README.md").read_bytes()
    res = subprocess.run([sys.executable, "-m", "hpctrain.bench", "--only", "input_pipeline",
                          "--data", str(small), "--images", str(tmp_path / "none"),
                          "--rounds", "1", "--processes", "2", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (REPO / "README.md").read_bytes() == project_readme  # --out elsewhere: untouched
    r = json.loads((out / "input_pipeline.json").read_text())
    (case,) = r["inputs"]["cases"]
    assert set(case["images_per_s"]) == {
        "in-memory arrays -> tf.data", "hpctrain HDF5 reader -> tf.data",
        "in-memory, one gather per batch", "hpctrain HDF5 reader, one gather per batch",
        "h5py per-sample generator (from_generator)"}
    assert all(len(v) == 2 and min(v) > 0 for v in case["images_per_s"].values())
    assert all(min(v) > 0 for v in case["cpu_us_per_image"].values())
    assert case["process"] == [0, 1]
    assert all(len(v) == 2 for v in case["first_round_s"].values())
    c, rate = r["ratios"]["28x28x1"], case["images_per_s"]
    median = statistics.median
    assert c["memory"] == max(("in-memory arrays -> tf.data", "in-memory, one gather per batch"),
                              key=lambda v: median(rate[v]))  # the faster in-memory pipeline
    assert c["reader"] == max(("hpctrain HDF5 reader -> tf.data",
                               "hpctrain HDF5 reader, one gather per batch"),
                              key=lambda v: median(rate[v]))  # and reader configuration
    assert c["per_round"] == pytest.approx([a / b for a, b in zip(rate[c["reader"]],
                                                                 rate[c["memory"]], strict=False)])
    assert c["per_process"] == pytest.approx(c["per_round"]) and c["n"] == 2
    assert "28x28x1: goal >= 0.9: **" in r["headline"]["verdict"]
    assert "2 processes x 1 round)" in r["headline"]["verdict"] or \
        "2 processes x 1 round," in r["headline"]["verdict"]
    assert case["samples"] == 3000  # rank 0's half of the 6,000
    assert r["machine"]["cpus"] and "--rounds=1" in r["command"]
    assert "--processes=2" in r["command"]
    assert f"| {c['reader']} (best) |" in (out / "README.md").read_text()


def test_committed_benchmark_figures_are_what_their_json_renders():
    """results/benchmarks/*.md and the README's headline table come from the stored samples
    (`make docs`), never typed by hand."""
    res = subprocess.run([sys.executable, "-m", "hpctrain.bench", "--render", "--check"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_render_follows_the_stored_samples(tmp_path):
    """Change a stored sample and every figure and verdict drawn from it changes with it."""
    out = tmp_path / "results" / "benchmarks"
    shutil.copytree(REPO / "results" / "benchmarks", out)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench-headlines: begin -->\nstale\n"
                      "<!-- bench-headlines: end -->\nafter\n")
    path = out / "trainer_overhead.json"
    stored = json.loads(path.read_text())
    for one in stored["inputs"]["headline"]:  # 0.6 every epoch of every round
        one["hpctrain"] = [0.6 * x for x in one["plain Keras"]]
    path.write_text(json.dumps(stored))
    argv = [sys.executable, "-m", "hpctrain.bench", "--render", "--out", str(out),
            "--readme", str(readme)]
    stale = subprocess.run([*argv, "--check"], capture_output=True, text=True)
    assert stale.returncode == 1 and "trainer_overhead.json differs" in stale.stderr
    assert subprocess.run(argv, capture_output=True, text=True).returncode == 0
    redone = json.loads(path.read_text())
    assert redone["ratio"]["median"] == pytest.approx(0.6)
    assert "**missed** (95 % interval 0.600-0.600" in redone["headline"]["verdict"]
    assert "measured: 0.60 (0.60-0.60)**" in (out / "README.md").read_text()
    table = readme.read_text()
    assert table.startswith("intro\n<!-- bench-headlines: begin -->\n| benchmark |")
    assert "stale" not in table and table.endswith("<!-- bench-headlines: end -->\nafter\n")
    row = next(line for line in table.splitlines() if line.startswith("| 1. Trainer"))
    assert "**missed**" in row and machine.one_line(stored["machine"]) in row
    assert subprocess.run([*argv, "--check"], capture_output=True).returncode == 0


def test_another_machines_run_is_rendered_beside_the_main_figures(tmp_path):
    """A run stored with --machine NAME gets its own page, and the main page puts its verdict
    next to the main machine's for the same benchmark; the project README's table keeps the
    main machine's figures."""
    out = tmp_path / "benchmarks"
    shutil.copytree(REPO / "results" / "benchmarks", out)
    shutil.rmtree(out / "machines", ignore_errors=True)  # only the one made here
    other = out / "machines" / "slow-host"
    other.mkdir(parents=True)
    stored = json.loads((out / "trainer_overhead.json").read_text())
    for one in stored["inputs"]["headline"]:
        one["hpctrain"] = [0.7 * x for x in one["plain Keras"]]
    stored["machine"] = {**stored["machine"], "avx512f": False, "avx2": True}
    (other / "trainer_overhead.json").write_text(json.dumps(stored))
    (other / "ABOUT.md").write_text("A slower host,\nthe same code.\n")  # words, re-flowed
    argv = [sys.executable, "-m", "hpctrain.bench", "--render", "--out", str(out),
            "--readme", str(tmp_path / "none.md")]
    assert subprocess.run(argv, capture_output=True, text=True).returncode == 0
    page = (other / "README.md").read_text()
    assert "## 1. Trainer overhead" in page and "AVX2 only" in page
    assert "## 2. Input pipeline" in page and "Not run yet." in page
    main = (out / "README.md").read_text().split("## The same goals on other machines")[1]
    rows = [line for line in main.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 2 and rows[0].startswith("| this page | 1. Trainer overhead")
    assert rows[1].startswith("| [slow-host](machines/slow-host/README.md) | 1. Trainer")
    assert "**missed**" in rows[1] and "AVX2 only" in rows[1] and "AVX-512" in rows[0]
    assert "\n- slow-host: A slower host, the same code.\n" in main
    assert subprocess.run([*argv, "--check"], capture_output=True).returncode == 0
    bad = subprocess.run([sys.executable, "-m", "hpctrain.bench", "--machine", "../x",
                          "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "--machine '../x'" in bad.stderr


def test_time_to_accuracy_pairs_each_precision_with_the_workshop_script_by_seed():
    from hpctrain.bench import time_to_accuracy as tta

    def runs(seconds: list[float], epoch: int) -> list[dict]:
        return [{"seconds": s, "seed": 42 + i, "accuracy": 0.9 + i / 1000, "epoch": epoch}
                for i, s in enumerate(seconds)]

    samples = {"workshop Keras, 1 x 2": runs([30.0, 32.0, 31.0], 5),
               "hpctrain bfloat16, 1 x 2": runs([15.0, 16.0, 15.5], 2),
               "hpctrain float32, 1 x 2": runs([15.6, 15.4, 15.9], 2),
               "workshop Keras + Horovod, 2 x 1": runs([60.0, 61.0, 59.0], 6),
               "hpctrain bfloat16, 2 x 1": runs([18.0, 18.3, 17.7], 2),
               "hpctrain float32, 2 x 1": runs([40.0, 41.0, 39.0], 3)}
    r = tta.summarize(samples)
    assert r["ratios"]["1 x 2, bfloat16"]["per_round"] == pytest.approx([0.5, 0.5, 0.5])
    assert r["ratios"]["2 x 1, float32"]["median"] == pytest.approx(40 / 60)
    h = r["headline"]
    assert "1 x 2 bfloat16: goal <= 0.5: **met**" in h["verdict"]  # exactly 0.5: the goal holds it
    assert "1 x 2 float32: goal <= 0.5: **not resolved**" in h["verdict"]
    assert "2 x 1 bfloat16: goal <= 0.5: **met**" in h["verdict"]
    assert "2 x 1 float32: goal <= 0.5: **missed**" in h["verdict"]
    md = r["markdown"]
    assert "| hpctrain float32, 2 x 1 | 40.0 s (39.0-41.0, n=3) | 0.900-0.902 | 3-3 |" in md
    assert "3 rounds, variants alternating; round i runs every variant with seed 42 + i" in md


def test_horovod_overhead_headline_is_against_the_fastest_single_process():
    from hpctrain.bench import horovod_overhead as ho

    samples = {"hpctrain 1 x 2": [100.0, 100.0, 100.0], "hpctrain 2 x 1": [110.0, 108.0, 112.0],
               ho.FASTEST: [125.0, 120.0, 124.0], ho.RECIPE: [90.0, 88.0, 91.0],
               ho.RECIPE_TUNED: [118.0, 117.0, 120.0]}
    r = ho.summarize(samples, train_limit=6000, global_batch=256, epochs=3)
    assert r["ratio"]["per_round"] == pytest.approx([110 / 125, 108 / 120, 112 / 124])
    assert r["ratio_own_1x2"]["median"] == pytest.approx(1.1)
    assert set(r["recipe_ratios"]) == {ho.RECIPE, ho.RECIPE_TUNED}
    assert "**not resolved**" in r["headline"]["verdict"]  # 0.88-0.90 around the goal
    assert ho.TUNED == {"OMPI_MCA_mpi_yield_when_idle": "1"}  # what hpctrain sets for 2 ranks
    assert "denominator: plain Keras 1 x 2 as written; this run has no tuned one" in \
        r["headline"]["benchmark"]
    # with the single process also run under hpctrain's allocator settings, the faster is
    # the denominator
    tuned = ho.summarize({**samples, ho.FASTEST_TUNED: [137.5, 135.0, 140.0]},
                         train_limit=6000, global_batch=256, epochs=3)
    assert tuned["ratio"]["per_round"] == pytest.approx([0.8, 0.8, 0.8])
    assert "**missed**" in tuned["headline"]["verdict"]
    assert f"denominator: {ho.FASTEST_TUNED})" in tuned["headline"]["benchmark"]
    assert f"**hpctrain 2 x 1 / {ho.FASTEST_TUNED}: 0.80" in tuned["markdown"]


def test_determinism_cost_is_a_paired_ratio_with_its_interval():
    from hpctrain.bench import determinism

    r = determinism.summarize({determinism.ON: [90.0, 95.0, 92.0],
                               determinism.OFF: [100.0, 100.0, 100.0]},
                              config="c.yaml:short", threads=2)
    assert r["ratio"]["per_round"] == pytest.approx([0.9, 0.95, 0.92])
    assert "**0.920 (0.900-0.950)** (95 % interval 0.8" in r["headline"]["result"]
    assert "3 rounds, variants alternating" in r["markdown"]
    one = determinism.summarize({determinism.ON: [90.0], determinism.OFF: [100.0]},
                                config="c.yaml:short", threads=2)
    assert "one round: no interval" in one["markdown"]


def test_staging_bench_runs_real_staging_against_the_bare_loop(tmp_path, monkeypatch):
    """Benchmark 8 at its smallest: one size, staging as 1 rank x 1 worker, a warm-up round
    and one more; the bare loop and real `hpctrain stage` runs both give images/s (staging's
    from its own summary line), and the verdict follows the per-round ratio."""
    from conftest import make_tree
    from hpctrain.bench import staging

    tree = make_tree(tmp_path / "tree", 40, 10, unreadable=1)
    one = f"{staging.STAGE}, 1 rank x 1 worker"
    monkeypatch.setattr(staging, "SIZES", (32,))
    monkeypatch.setattr(staging, "VARIANTS", {one: (1, 1)})
    r = staging.run(str(tree), rounds=1)
    rates = r["inputs"]["samples"]["32"]
    assert set(rates) == {staging.BARE, one} and all(len(v) == 1 and v[0] > 0
                                                       for v in rates.values())
    assert r["inputs"]["tree"]["files"] == 52 and r["inputs"]["tree"]["readable"] == 50
    assert r["ratios"]["32"]["per_round"] == pytest.approx([rates[one][0] / rates[staging.BARE][0]])
    assert "32x32: goal >= 0.8: **not resolved** (1 round: no interval)" in \
        r["headline"]["verdict"]
    with pytest.raises(SystemExit, match="make data/bench-jpeg-tree"):
        staging.run(str(tmp_path / "none"), rounds=1)


def test_staging_verdict_takes_the_best_staging_variant_per_process():
    from hpctrain.bench import staging

    two = f"{staging.STAGE}, 1 rank x 2 workers"
    one = f"{staging.STAGE}, 1 rank x 1 worker"
    r = staging.summarize({"224": {staging.BARE: [100.0, 110.0, 90.0],
                                   one: [85.0, 93.5, 76.5], two: [70.0, 77.0, 63.0]}},
                          tree={"files": 3, "readable": 3, "median_bytes": 2048,
                                "median_long_side": 450},
                          processes={staging.BARE: 1, one: 1, two: 2})
    assert r["ratios"]["224"]["staging"] == one
    assert r["ratios"]["224"]["median"] == pytest.approx(0.85)
    assert "**met** (95 % interval 0.850-0.850, 3 rounds)" in r["headline"]["verdict"]
    assert f"| {one} (best) | 1 | 85.0 [76.5-93.5] | 0.85 (0.85-0.85) |" in r["markdown"]
    assert "median 450 px on the longer side and 2 KiB" in r["markdown"]
