"""Run reports -> one row per run (`runs.csv`) -> one row per point (`summary.csv`).

A point is a job geometry: (nodes, ranks). Its throughput is the mean over its repeats of
each run's steady-state images/s, with a 95 % Student-t interval over the repeats (with one
repeat: the run's own interval over its epochs, marked as such). Speedup and efficiency are
against the point with the fewest ranks:

    speedup(N)    = images/s(N) / images/s(base)
    efficiency(N) = speedup(N) / (ranks(N) / ranks(base))

(the same formula serves strong scaling, global batch fixed, and weak scaling, per-rank batch
fixed: in both, ideal throughput grows with the ranks). The speedup's interval combines both
throughputs' relative intervals (first-order error propagation).

Node-hours: nodes x time / 3600, per epoch (training steps + evaluation) and to the target
accuracy (startup + training until the first evaluation at or above it), the numbers a
compute-time proposal asks for.
"""

from __future__ import annotations

import math
import statistics

import pandas as pd

from hpctrain.report.run_report import hardware_parts
from hpctrain.report.statistics import half_width

PARTS = ("input_s", "compute_s", "allreduce_s", "other_s")


def run_row(report: dict, run_dir: str, job: dict | None = None) -> dict:
    """The flat row of one run. `job`: Slurm's {start, end} (Unix s) of its job, if known."""
    ips = report["images_per_s"]
    steps = report.get("step_times") or {}
    mean_parts = steps.get("mean_over_ranks") or {}
    target = (report.get("target_accuracy") or {}).get("target")
    tta = report.get("time_to_accuracy_s") or {}
    epochs = max(report["epochs_completed"], 1)
    row = {
        "run_dir": run_dir,
        "experiment": report["experiment"],
        "model": report["model"],
        "dataset": report["dataset"]["dataset"],
        "synthetic": bool(report["training"].get("synthetic")),
        "status": report["status"],
        "nodes": report["nodes"],
        "ranks": report["ranks"],
        "threads_per_rank": report.get("threads_per_rank"),
        "batch_per_rank": report["training"]["batch_size"],
        "accumulate_steps": report.get("accumulate_steps", 1),
        "global_batch": report["global_batch_size"],
        "learning_rate_scaled": report["learning_rate_scaled"],
        "warmup_epochs": report["training"]["warmup_epochs"],
        "images_per_s": ips["mean"],
        "images_per_s_ci95": ips.get("ci95"),
        "images_per_s_n": ips.get("n"),
        "images_per_epoch": report.get("images_per_epoch"),
        "epochs": report["epochs_completed"],
        "eval_s_per_epoch": (report.get("eval_s_total") or 0.0) / epochs,
        "test_accuracy": report.get("test_accuracy"),
        "test_top5_accuracy": report.get("test_top5_accuracy"),  # None: ten classes or fewer
        "target_accuracy": target,
        "time_to_target_s": tta.get(f"{target:.2f}") if target else None,
        "startup_s": report["startup_s"],
        "train_s": report["train_s"],
        "total_s": report["total_s"],
        "step_s": mean_parts.get("step_s"),
        **{p: mean_parts.get(p) for p in PARTS},
        "stragglers": " ".join(f"rank{s['rank']}@{s['node']}"
                               for s in steps.get("stragglers", [])),
        "gradient_bytes": (report.get("model_size") or {}).get("gradient_bytes"),
        "parameters": (report.get("model_size") or {}).get("parameters"),
        "ranks_in_sync": (report.get("ranks_in_sync") or {}).get("ok"),
        "job_id": report["slurm"]["job_id"],
        "hardware": "; ".join(hardware_parts(report.get("hardware")) or ()) or None,
    }
    row.update(job_overhead(report, job))
    node = (report.get("hardware") or {}).get("node") or {}
    row["cpus_per_node"] = node.get("cpus")
    row["gpus"] = report["ranks"] if node.get("gpus") else 0  # one GPU per rank, if any
    hours = (row["job_s"] if row["job_s"] is not None else report["total_s"]) / 3600
    row["node_hours"] = report["nodes"] * hours
    row["gpu_hours"] = row["gpus"] * hours
    return row


def job_overhead(report: dict, job: dict | None) -> dict:
    """Seconds of the job outside training: launch (job start to the Python process),
    startup (process to first step), teardown (the report to the job's end)."""
    out = {"job_s": None, "launch_s": None, "teardown_s": None}
    started = report.get("started_unix")
    if not job or started is None or job.get("start") is None or job.get("end") is None:
        return out
    if not job["start"] - 1 <= started <= job["end"] + 1:  # Slurm's times are whole seconds
        return out  # another job under this id (a new accounting database): not this run's
    return {"job_s": job["end"] - job["start"],
            "launch_s": max(started - job["start"], 0.0),
            "teardown_s": max(job["end"] - (started + report["total_s"]), 0.0)}


def runs_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).sort_values(["ranks", "nodes", "run_dir"]).reset_index(drop=True)


def _interval(values: list[float], run_ci: float | None) -> tuple[float | None, str]:
    if len(values) >= 2:
        return half_width(values), f"over {len(values)} repeats"
    return run_ci, "over epochs of 1 run"


def _median(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and
                                                          math.isnan(v))]
    return statistics.median(values) if values else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and
                                                          math.isnan(v))]
    return statistics.fmean(values) if values else None


def summarize(runs: pd.DataFrame, base: tuple[int, int] | None = None,
              shared_host: bool = False) -> pd.DataFrame:
    """One row per (nodes, ranks) point with a completed run, fewest ranks first; speedup
    and efficiency against `base` (nodes, ranks; default: the first row), none at all when
    the base has no completed run. `oversubscribed`: more ranks x threads than the cores of
    a node (of the one machine, `shared_host`, as on the embedded cluster)."""
    done = runs[runs["status"] == "completed"]
    hours = runs.groupby(["nodes", "ranks"])[["node_hours", "gpu_hours"]].sum() \
        if "node_hours" in runs else None
    points = []
    for (nodes, ranks), group in done.groupby(["nodes", "ranks"], sort=True):
        ips = [float(v) for v in group["images_per_s"] if v is not None and not math.isnan(v)]
        if not ips:
            continue
        cores = _median(group["cpus_per_node"]) if "cpus_per_node" in group else None
        threads = (_median(group["threads_per_rank"]) if "threads_per_rank" in group
                   else None) or 1
        busy = (ranks if shared_host else ranks / nodes) * threads
        mean = statistics.fmean(ips)
        ci, basis = _interval(ips, _median(group["images_per_s_ci95"]))
        images_per_epoch = _median(group["images_per_epoch"])
        eval_s = _mean(group["eval_s_per_epoch"]) or 0.0
        epoch_s = images_per_epoch / mean if images_per_epoch else None
        tta = _median(group["time_to_target_s"])
        startup = _median(group["startup_s"])
        point = {
            "nodes": int(nodes), "ranks": int(ranks), "repeats": len(group),
            "global_batch": int(group["global_batch"].iloc[0]),
            "batch_per_rank": int(group["batch_per_rank"].iloc[0]),
            "images_per_s": mean, "images_per_s_ci95": ci, "interval": basis,
            "epoch_s": epoch_s, "eval_s_per_epoch": eval_s,
            "node_hours_per_epoch": nodes * ((epoch_s or 0.0) + eval_s) / 3600
            if epoch_s else None,
            "target_accuracy": _median(group["target_accuracy"]),
            "time_to_target_s": tta,
            "node_hours_to_target": nodes * ((startup or 0.0) + tta) / 3600
            if tta is not None else None,
            "test_accuracy": _mean(group["test_accuracy"]),
            "startup_s": startup,
            **{p: _mean(group[p]) for p in (*PARTS, "step_s")},
            **{k: _median(group[k]) for k in ("launch_s", "teardown_s", "job_s")},
            "stragglers": " ".join(sorted({s for v in group["stragglers"] if v
                                           for s in str(v).split()})),
            "oversubscribed": bool(cores and busy > cores),
            # every run of the point, failed ones included: what the point cost
            "node_hours": float(hours.loc[(nodes, ranks), "node_hours"]) if hours is not None
            else None,
            "gpu_hours": float(hours.loc[(nodes, ranks), "gpu_hours"]) if hours is not None
            else None,
        }
        points.append(point)
    table = pd.DataFrame(points)
    if table.empty:
        return table
    # a run without an interval (one measured epoch) gives None: NaN, so the speedup's
    # interval is NaN too rather than an error
    table["images_per_s_ci95"] = pd.to_numeric(table["images_per_s_ci95"]).astype(float)
    first = table.iloc[0]
    if base is not None and (int(first["nodes"]), int(first["ranks"])) != tuple(base):
        for col in ("speedup", "speedup_ci95", "ideal_speedup", "efficiency"):
            table[col] = math.nan  # against another point both would be wrong
        return table
    base_row = first
    # NaN when either throughput has no interval (one epoch of one run)
    rel = (table["images_per_s_ci95"] / table["images_per_s"]) ** 2 + \
        (base_row["images_per_s_ci95"] / base_row["images_per_s"]) ** 2
    table["speedup"] = table["images_per_s"] / base_row["images_per_s"]
    table["speedup_ci95"] = table["speedup"] * rel ** 0.5
    table["ideal_speedup"] = table["ranks"] / base_row["ranks"]
    table["efficiency"] = table["speedup"] / table["ideal_speedup"]
    table.loc[0, "speedup_ci95"] = math.nan  # the base against itself
    return table


def scaling_mode(summary: pd.DataFrame) -> str:
    """strong (same global batch at every point), weak (same per-rank batch), or mixed."""
    if len(summary) < 2:
        return "single point"
    if summary["global_batch"].nunique() == 1:
        return "strong"
    if summary["batch_per_rank"].nunique() == 1:
        return "weak"
    return "mixed"
