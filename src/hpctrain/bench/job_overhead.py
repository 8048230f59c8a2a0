"""Benchmark 5, job overhead: what a Slurm job costs around the training, on a real embedded
Slurm cluster of its own (started in a temporary directory, stopped afterwards).

For a 2-node job of the demo's shape (the workshop CNN, 1 rank per node, one short epoch),
with the data read where it is and with the node-local copy (a profile with `scratch`):

    hpctrain submit ──> sbatch answered ... rank 0's process starts ──> first step ends
    |- checks, script -|- queue, batch script, copy, srun -|- imports, hvd.init, tracing -|

measured from the moment `hpctrain submit` is run (the user's view): submission.json's
time says when sbatch had answered, the report when rank 0 started and finished its first
step; and the job time that is not training: sacct's elapsed time (whole seconds) minus the
report's training time. Then one job is preempted the way a site does it (`scancel --signal=USR1`
after its first epoch): squeue is polled every 0.2 s for when it stops running, when it
runs again and why it waited in between, and the final report gives its next first step.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from hpctrain.bench.harness import alternate, fmt_spread, spread, verdict, with_inputs
from hpctrain.bench.runs import BENCH_CONFIG, BIN, mpi_env
from hpctrain.resources import SHIPPED_PROFILES

GOAL_FIRST_STEP_S = 10.0
PORT = 37817  # its own ports: the user's cluster (17817) and the tests' (27817) may be up
SHORT = ["epochs=1", "train_limit=2560", "test_limit=500"]


def _submit(env: dict, run_dir: Path, data: str, profile: str | None,
            overrides: list[str], nodes: int = 2) -> tuple[float, subprocess.Popen]:
    argv = [str(BIN / "hpctrain"), "submit", "--config", BENCH_CONFIG, "--nodes", str(nodes),
            "--run-dir", str(run_dir), "--wait", *(["--profile", profile] if profile else []),
            f"data={data}", *overrides]
    start = time.time()
    return start, subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 900) -> None:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"hpctrain submit exited {proc.returncode}:\n{out[-3000:]}")


def _sacct_elapsed(env: dict, job_id: str) -> float:
    """The job's run time in seconds from Slurm's accounting (whole seconds)."""
    res = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "ElapsedRaw"],
                         env=env, capture_output=True, text=True, check=True)
    return float(res.stdout.split()[-1])


def first_step_unix(report: dict) -> float:
    """When rank 0's first training step ended: its process start plus the startup phases."""
    return report["started_unix"] + sum(s for _, s in report["startup_phases_s"])


def one_job(env: dict, tmp: Path, data: str, profile: str | None,
            overrides: list[str] = SHORT, nodes: int = 2) -> dict[str, float]:
    """One job's sample on `nodes` nodes, one rank each; `overrides` (the benchmark's
    SHORT) set its size."""
    run_dir = Path(tempfile.mkdtemp(dir=tmp)) / "run"
    t0, proc = _submit(env, run_dir, data, profile, overrides, nodes)
    _finish(proc)
    report = json.loads((run_dir / "report.json").read_text())
    # written once sbatch answered (the job may already be running by then)
    submitted = (run_dir / "submission.json").stat().st_mtime
    first = first_step_unix(report)
    return {"to_first_step_s": first - t0,
            "submit_command_s": submitted - t0,
            "to_rank_s": report["started_unix"] - t0,
            "rank_to_first_step_s": first - report["started_unix"],
            "job_not_training_s": _sacct_elapsed(env, report["slurm"]["job_id"])
            - report["train_s"],
            "submit_to_done_s": time.time() - t0}


def requeue(env: dict, tmp: Path, data: str) -> dict:
    """Preempt a job after its first epoch; time the stop, the requeue and the restart."""
    run_dir = tmp / "requeued"
    _, proc = _submit(env, run_dir, data, None,
                      ["epochs=3", "train_limit=12000", "test_limit=500", "checkpoint=true"])
    deadline = time.time() + 600
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().strip()):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("the job to preempt ended before its first epoch")
        time.sleep(0.2)
    job_id = json.loads((run_dir / "submission.json").read_text())["job_id"]
    signalled = time.time()
    subprocess.run(["scancel", "--signal=USR1", job_id], env=env, check=True)
    stopped = running_again = None
    waited: defaultdict[str, float] = defaultdict(float)  # s between polls, by state seen
    last = time.time()
    while running_again is None and time.time() < deadline:
        res = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T|%r"], env=env,
                             capture_output=True, text=True)
        state, _, reason = res.stdout.strip().partition("|")
        now = time.time()
        if stopped is not None and state != "RUNNING":
            waited[f"{state} ({reason})"] += now - last
        if stopped is None and state and state != "RUNNING":
            stopped = now
        elif stopped is not None and state == "RUNNING":
            running_again = now
        last = now
        time.sleep(0.2)
    _finish(proc)
    report = json.loads((run_dir / "report.json").read_text())
    if stopped is None or running_again is None or len(report["segments"]) < 2:
        raise RuntimeError(f"the preempted job was not requeued: {report['segments']}")
    return {"signal_to_stopped_s": stopped - signalled,
            "requeue_delay_s": running_again - stopped,
            "running_to_first_step_s": first_step_unix(report) - running_again,
            "waiting_as": {k: round(v, 1) for k, v in waited.items()},
            "segments": [s["ended"] for s in report["segments"]]}


def scratch_profile(tmp: Path) -> Path:
    """The embedded profile with node-local scratch under `tmp`: jobs copy the data there."""
    scratch = tmp / "node-local"
    scratch.mkdir(exist_ok=True)
    profile = tmp / "scratch.yaml"
    embedded = (SHIPPED_PROFILES / "embedded.yaml").read_text()
    profile.write_text(embedded.replace("scratch: null\n", f"scratch: '{scratch}'\n"))
    return profile


def run(data: str, rounds: int, train_limit: int = 0) -> dict:
    del train_limit  # short jobs: the overhead is the point
    from hpctrain.cluster.embedded import EmbeddedCluster

    data = str(Path(data).resolve())
    with tempfile.TemporaryDirectory(prefix="hpctrain-bench-jobs-") as name:
        tmp = Path(name)
        profile = scratch_profile(tmp)
        cluster = EmbeddedCluster(root=tmp / "cluster", base_port=PORT)
        cluster.up(timeout=120)
        try:
            env = mpi_env({"SLURM_CONF": str(cluster.slurm_conf)})
            variants = {"data read in place": lambda: one_job(env, tmp, data, None),
                        "node-local copy": lambda: one_job(env, tmp, data, str(profile))}
            samples = alternate(variants, rounds, key="to_first_step_s")
            preempted = requeue(env, tmp, data)
        finally:
            cluster.down()
    return with_inputs(summarize, samples=samples, preempted=preempted, rounds=rounds)


def summarize(samples: dict[str, list[dict[str, float]]], preempted: dict,
              rounds: int) -> dict:
    variants = list(samples)
    parts = [("to_first_step_s", "`hpctrain submit` to the end of the first step"),
             ("to_rank_s", "... to rank 0's start: submit, queue, batch script, copy, srun"),
             ("submit_command_s", "...... of which hpctrain submit until sbatch answered"),
             ("rank_to_first_step_s", "... rank 0: imports, hvd.init, first step"),
             ("job_not_training_s", "job time (sacct, whole s) minus training time"),
             ("submit_to_done_s", "`hpctrain submit --wait`, start to return")]
    rows = [f"| {label} | " + " | ".join(
        fmt_spread(spread([s[key] for s in samples[v]]), " s", ".1f") for v in variants)
        + " |" for key, label in parts]
    firsts = {v: spread([s["to_first_step_s"] for s in samples[v]]) for v in variants}
    worst = max(firsts.values(), key=lambda f: f["median"])  # the slower variant
    p = preempted
    md = "\n".join([
        "A 2-node job (1 rank per node) of the workshop CNN, one short epoch (2,560 images), "
        f"on an embedded Slurm cluster of 4 logical nodes on this host; {rounds} rounds, "
        "variants alternating.", "",
        "| seconds | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants),
        *rows, "",
        "Preemption and requeue (`scancel --signal=USR1` after the first of 3 epochs; squeue "
        f"polled every 0.2 s): stopped {p['signal_to_stopped_s']:.1f} s after the signal "
        "(finish the step, checkpoint, exit), **running again "
        f"{p['requeue_delay_s']:.1f} s later**, first step of the new segment "
        f"{p['running_to_first_step_s']:.1f} s after that. While requeued it was "
        + ", ".join(f"{k} for {v} s" for k, v in p["waiting_as"].items()) + ".", "",
        f"**submit to first step: {worst['median']:.1f} s** (median, slower variant); "
        f"{verdict(worst, GOAL_FIRST_STEP_S, higher_is_better=False, unit=' s', digits=1)}."])
    headline = {"benchmark": "5. Job overhead: `hpctrain submit` to the end of the first step "
                             "(2 nodes)",
                "result": f"**{worst['median']:.1f} s** (median, slower variant); a preempted "
                          f"job runs again {p['requeue_delay_s']:.1f} s after it stopped",
                "verdict": verdict(worst, GOAL_FIRST_STEP_S, higher_is_better=False,
                                   unit=" s", digits=1)}
    return {"name": "job_overhead", "samples": samples, "to_first_step_s": firsts,
            "headline": headline,
            "requeue": preempted, "goal_s": GOAL_FIRST_STEP_S, "markdown": md}
