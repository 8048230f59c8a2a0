"""A `--mode batch` study's table, plot and README: test accuracy vs the global batch,
with linear learning-rate scaling, with and without warm-up (Goyal et al. 2017); on one node
count, or on several (a nodes x global-batch grid: accuracy, speed and node-hours of each)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd

from hpctrain.atomic import write_text
from hpctrain.scaling.plots import accuracy_vs_batch
from hpctrain.scaling.study_report import hardware_section, report_head, write_runs_csv


def summarize_batches(runs: pd.DataFrame) -> pd.DataFrame:
    done = runs[runs["status"] == "completed"]
    rows = []
    for (n, g, w), group in done.groupby(["nodes", "global_batch", "warmup_epochs"],
                                         sort=True):
        acc = [float(a) for a in group["test_accuracy"] if a is not None and not math.isnan(a)]
        first = group.iloc[0]
        rows.append({
            "nodes": int(n), "global_batch": int(g), "warmup_epochs": float(w),
            "repeats": len(group),
            "ranks": int(first["ranks"]), "accumulate_steps": int(first["accumulate_steps"]),
            "learning_rate_scaled": float(first["learning_rate_scaled"]),
            "updates_per_epoch": float(first["images_per_epoch"]) / g,
            "epochs": int(first["epochs"]),
            "test_accuracy": statistics.fmean(acc) if acc else None,
            "test_accuracy_min": min(acc) if acc else None,
            "test_accuracy_max": max(acc) if acc else None,
            "images_per_s": statistics.fmean(group["images_per_s"]),
            "train_s": statistics.fmean(group["train_s"]),
            "node_hours": float(group["node_hours"].sum()) if "node_hours" in group else None,
        })
    return pd.DataFrame(rows)


def write_batch_study(out: Path, runs: pd.DataFrame, *, title: str, command: str,
                      failed: list[dict] | None = None) -> dict:
    """`failed`: the runs without a completed run (study_report.failures), listed with why."""
    out.mkdir(parents=True, exist_ok=True)
    if not len(runs):
        write_text(out / "README.md", render(pd.DataFrame(), runs, title, command, failed))
        return {"mode": "batch", "points": 0, "runs": 0, "failed": len(failed or []),
                "pictures": []}
    write_runs_csv(out, runs)
    s = summarize_batches(runs)
    write_text(out / "summary.csv", s.to_csv(index=False, float_format="%.6g"))
    pictures = {"accuracy_vs_batch": accuracy_vs_batch(s, out / "accuracy_vs_batch.png", title)} \
        if len(s) else {}
    write_text(out / "README.md", render(s, runs, title, command, failed))
    return {"mode": "batch", "points": len(s), "runs": len(runs), "failed": len(failed or []),
            "pictures": sorted(pictures)}


def render(s: pd.DataFrame, runs: pd.DataFrame, title: str, command: str,
           failed: list[dict] | None = None) -> str:
    lines = report_head(f"{title}: accuracy vs global batch", command, failed,
                        "the table and the picture")
    if not len(s):
        return "\n".join(lines + ["No completed run yet.", ""])
    first = runs.iloc[0]
    ranks = " or ".join(str(r) for r in sorted(set(int(r) for r in s["ranks"])))
    lines += [
        f"{first['model']} on {first['dataset']}, {ranks} ranks; larger "
        "global batches are emulated by accumulating each rank's gradients over several "
        "batches before Horovod averages them (backward_passes_per_step), so every update "
        "sees the global batch a larger cluster would. The learning rate scales linearly "
        "with the global batch; warm-up ramps it up from the one-rank rate over the first "
        "epochs (Goyal et al. 2017), or not at all. The epochs are the same at every point: "
        "larger batches make fewer updates.", "",
        "| nodes | ranks | global batch | warm-up epochs | accumulated batches | learning "
        "rate | updates per epoch | test accuracy | images/s | training, s | node-hours "
        "(all repeats) | repeats |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in s.itertuples():
        spread = "" if r.repeats < 2 else f" [{r.test_accuracy_min:.4f}-{r.test_accuracy_max:.4f}]"
        acc = "n/a" if r.test_accuracy is None or pd.isna(r.test_accuracy) else \
            f"{r.test_accuracy:.4f}{spread}"
        hours = "n/a" if r.node_hours is None or pd.isna(r.node_hours) else f"{r.node_hours:.3g}"
        lines.append(f"| {r.nodes} | {r.ranks} | {r.global_batch} | {r.warmup_epochs:g} | "
                     f"{r.accumulate_steps} | {r.learning_rate_scaled:g} | "
                     f"{r.updates_per_epoch:g} | {acc} | {r.images_per_s:,.0f} | "
                     f"{r.train_s:,.0f} | {hours} | {r.repeats} |")
    lines += ["", *reading(s), "", *hardware_section(runs)]
    lines += ["Raw rows: [runs.csv](runs.csv); per point: [summary.csv](summary.csv).", "",
              "![accuracy vs global batch](accuracy_vs_batch.png)", ""]
    return "\n".join(lines)


def reading(s: pd.DataFrame, tolerance: float = 0.01) -> list[str]:
    """The table in words: per warm-up setting, the largest global batch whose accuracy stays
    within `tolerance` of the smallest global batch's, and the first one that falls below."""
    done = s.dropna(subset=["test_accuracy"])
    if done.empty:
        return []
    smallest = int(done["global_batch"].min())
    ref = float(done[done["global_batch"] == smallest]["test_accuracy"].max())
    lines = []
    grid = "nodes" in done and done["nodes"].nunique() > 1
    keys = ["nodes", "warmup_epochs"] if grid else ["warmup_epochs"]
    for key, group in done.groupby(keys, sort=True):
        *where, warmup = key if isinstance(key, tuple) else (key,)
        group = group.sort_values("global_batch")
        held = [int(b) for b, a in zip(group["global_batch"], group["test_accuracy"],
                                       strict=True) if a >= ref - tolerance]
        fell = group[group["test_accuracy"] < ref - tolerance]
        how = f"with a warm-up of {warmup:g} epoch(s)" if warmup else "without warm-up"
        if where:  # the grid: every node count's accuracy against the one smallest batch
            how = f"on {where[0]} node(s), {how}"
        text = (f"- {how}: accuracy within {100 * tolerance:g} point(s) of global batch "
                f"{smallest} ({ref:.4f}) up to global batch {max(held) if held else 'none'}")
        if len(fell):
            first = fell.iloc[0]
            text += (f"; {int(first['global_batch'])} reaches {first['test_accuracy']:.4f}")
        lines.append(text + ".")
    return lines
