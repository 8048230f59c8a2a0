"""A `--mode batch --variants ...` study's table, picture and README: several large-batch
methods (config variants: linear scaling with warm-up, LARS, LAMB, ...) each trained at
several global batches with several seeds, every one compared with the base: the first
method at the smallest global batch.

A method "holds" at a global batch when its accuracy stays within `tolerance` (1 point) of
the base, judged by the rule used everywhere in hpctrain: the difference is taken seed by
seed (repeat k of every point has seed + k), and the verdict follows its 95 % interval over
seeds (Student's t) - held when the whole interval lies above -tolerance, fell when it lies
below, not resolved when it straddles it (one seed: no interval, no verdict), with how many
seeds at the same spread would resolve it. A study whose seeds were added after its verdicts
were read (its plan's `looks`) widens the interval for every look (Bonferroni), and "would
resolve it" counts the look that adding seeds would be.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pandas as pd

from hpctrain.atomic import write_text
from hpctrain.report.statistics import (
    confidence_for_looks,
    half_width,
    interval95,
    samples_to_resolve,
)
from hpctrain.scaling import noise_report
from hpctrain.scaling.plots import save_png
from hpctrain.scaling.study_report import (
    completed_runs,
    hardware_section,
    interval_name,
    looks_line,
    report_head,
    write_runs_csv,
)
from hpctrain.scaling.variants_report import curves

# runs/<method>-g<global batch>-rep<k>
RUN = re.compile(r"(?P<method>.+)-g(?P<global_batch>\d+)-rep(?P<repeat>\d+)$")
TOLERANCE = 0.01  # within 1 point of the base
COLORS = ("#4c72b0", "#c44e52", "#55a868", "#8172b2", "#ccb974", "#64b5cd")  # one per method


def judge(low: float | None, high: float | None, tolerance: float = TOLERANCE) -> str:
    """The verdict of a difference's interval against -tolerance."""
    if low is None or high is None:
        return "no interval"
    return "held" if low >= -tolerance else "fell" if high < -tolerance else "not resolved"


def summarize(done: pd.DataFrame, methods: list[str], looks: int = 1) -> pd.DataFrame:
    """Per method and global batch: accuracy over seeds with its interval, and the
    difference from the base (methods[0] at the smallest global batch), paired by seed, its
    interval widened for the study's `looks` (seeds added after verdicts were read)."""
    confidence = confidence_for_looks(looks)
    base_batch = int(done[done["method"] == methods[0]]["global_batch"].min()) \
        if (done["method"] == methods[0]).any() else None
    base = done[(done["method"] == methods[0]) & (done["global_batch"] == base_batch)]
    ref = {int(r): float(a) for r, a in zip(base["repeat"], base["test_accuracy"], strict=True)}
    rows = []
    for m in methods:
        for g, group in done[done["method"] == m].groupby("global_batch", sort=True):
            group = group.sort_values("repeat")
            acc = [float(a) for a in group["test_accuracy"]]
            spread = interval95(acc)["ci95"]
            diffs = [float(a) - ref[int(r)] for r, a in zip(group["repeat"],
                                                            group["test_accuracy"], strict=True)
                     if int(r) in ref]
            is_base = m == methods[0] and int(g) == base_batch
            mean_diff = statistics.fmean(diffs) if diffs and not is_base else None
            half = half_width(diffs, confidence) if mean_diff is not None else None
            low = mean_diff - half if mean_diff is not None and half is not None else None
            high = mean_diff + half if mean_diff is not None and half is not None else None
            top5 = [float(a) for a in group.get("test_top5_accuracy", pd.Series(dtype=float))
                    if a is not None and not pd.isna(a)]
            first = group.iloc[0]
            rows.append({
                "method": m, "global_batch": int(g),
                "times_base": int(g) / base_batch if base_batch else None,
                "seeds": len(acc), "accumulate_steps": int(first["accumulate_steps"]),
                "learning_rate_scaled": float(first["learning_rate_scaled"]),
                "warmup_epochs": float(first["warmup_epochs"]),
                "updates_per_epoch": float(first["images_per_epoch"]) / int(g),
                "epochs": int(first["epochs"]),
                "test_accuracy": statistics.fmean(acc),
                "test_accuracy_min": min(acc), "test_accuracy_max": max(acc),
                "test_accuracy_ci95": spread,
                "test_top5_accuracy": statistics.fmean(top5) if top5 else None,
                "difference": mean_diff, "difference_low": low, "difference_high": high,
                "difference_confidence": confidence, "looks": looks,
                "verdict": "the base" if is_base else judge(low, high),
                # resolving it means adding seeds and reading the verdict once more
                "seeds_to_resolve": samples_to_resolve(
                    diffs, -TOLERANCE, confidence=confidence_for_looks(looks + 1))
                if not is_base and judge(low, high) == "not resolved" else None,
                "images_per_s": statistics.fmean(group["images_per_s"]),
                "train_s": statistics.fmean(group["train_s"]),
                "node_hours": float(group["node_hours"].sum()) if "node_hours" in group
                else None,
            })
    return pd.DataFrame(rows)


def reading(s: pd.DataFrame, methods: list[str], tolerance: float = TOLERANCE) -> list[str]:
    """Per method, the largest global batch at which it held, and what happened beyond."""
    if s.empty:
        return []
    base = s[s["verdict"] == "the base"]
    if base.empty:
        return [f"- No completed run of the base ({methods[0]} at the smallest global batch): "
                "no comparison."]
    b = base.iloc[0]
    lines = [f"- The base: {b.method} at global batch {b.global_batch}, "
             f"{100 * b.test_accuracy:.2f} % over {b.seeds} seed(s). \"Held\" below: within "
             f"{100 * tolerance:g} point of it, the whole "
             f"{interval_name(b.difference_confidence)} of the paired difference above "
             f"-{100 * tolerance:g} point."]
    for m in methods:
        rows = s[(s["method"] == m) & (s["verdict"] != "the base")].sort_values("global_batch")
        if rows.empty:
            continue
        held = rows[rows["verdict"] == "held"]
        words = "; ".join(
            f"{r.global_batch} ({r.times_base:g}x): {_verdict(r)}"
            + ("" if r.difference is None or pd.isna(r.difference) else
               f", {100 * r.difference:+.2f} points"
               + ("" if r.difference_low is None or pd.isna(r.difference_low) else
                  f" [{100 * r.difference_low:+.2f} to {100 * r.difference_high:+.2f}]"))
            for r in rows.itertuples())
        top = (f"held up to global batch {int(held['global_batch'].max())} "
               f"({held['times_base'].max():g}x the base)" if len(held) else "held nowhere")
        lines.append(f"- {m}: {top}. {words}.")
    return lines


def write_methods_study(out: Path, runs: pd.DataFrame, *, title: str, command: str,
                        methods: list[str], changes: dict[str, str],
                        failed: list[dict] | None = None, looks: list[int] | None = None) -> dict:
    """runs.csv, summary.csv, README.md and the accuracy picture in `out`. `changes`: what
    each method sets, in words (from the config file); `looks`: the seed counts at which the
    study's verdicts were read (its plan's)."""
    out.mkdir(parents=True, exist_ok=True)
    done = completed_runs(runs, RUN, "method") if len(runs) else pd.DataFrame()
    s = summarize(done, methods, len(looks or []) or 1) if len(done) else pd.DataFrame()
    if len(runs):
        write_runs_csv(out, runs)
    write_text(out / "summary.csv", s.to_csv(index=False, float_format="%.6g"))
    pictures = [accuracy_by_method(s, done, out / "accuracy_by_method.png", title),
                learning_curves(done, methods, out / "learning_curves.png", title)] \
        if len(s) else []
    noise_lines: list[str] = []
    if (out / noise_report.FILE).is_file() and len(s):  # `hpctrain noise-scale` of the base
        noise = json.loads((out / noise_report.FILE).read_text())
        batches = sorted(int(g) for g in s["global_batch"].unique())
        drawn = noise_report.picture(noise, batches, out / "noise_scale.png", title)
        pictures += [drawn] if drawn else []
        noise_lines = noise_report.section(noise, batches)
    write_text(out / "README.md", render(s, runs, done, title, command, methods, changes,
                                         failed, noise_lines, looks or []))
    return {"mode": "batch", "points": len(s), "runs": len(runs),
            "failed": len(failed or []), "pictures": sorted(p.name for p in pictures)}


def _verdict(r) -> str:
    """The verdict, and for one not resolved how many seeds at this spread would resolve it."""
    if r.verdict != "not resolved":
        return r.verdict
    n = r.seeds_to_resolve
    return r.verdict + (" (its mean sits on the bound)" if n is None or pd.isna(n) else
                        f" (~{int(n)} seeds would resolve it)")


def _points(value, low, high) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{100 * value:+.2f}" + ("" if low is None or pd.isna(low) else
                                    f" ({100 * low:+.2f} to {100 * high:+.2f})")


def render(s: pd.DataFrame, runs: pd.DataFrame, done: pd.DataFrame, title: str, command: str,
           methods: list[str], changes: dict[str, str],
           failed: list[dict] | None = None, noise_lines: list[str] | None = None,
           looks: list[int] | None = None) -> str:
    """`runs`: every run's row; `done`: the completed ones with method and repeat;
    `noise_lines`: the section on the base's gradient noise scale, if measured; `looks`: the
    seed counts at which the verdicts were read."""
    lines = report_head(f"{title}: large-batch methods against {methods[0]}", command, failed,
                        "the table and the picture")
    if not len(s):
        return "\n".join(lines + ["No completed run yet.", ""])
    first = runs.iloc[0]
    top5 = s["test_top5_accuracy"].notna().any()
    paired = interval_name(float(s["difference_confidence"].iloc[0]))
    lines += [
        f"{first['model']} on {first['dataset']}, {int(first['ranks'])} rank(s) on "
        f"{int(first['nodes'])} node(s), {int(s['epochs'].iloc[0])} epochs of "
        f"{int(first['images_per_epoch']):,} images at every point: larger global batches "
        "make fewer updates. A global batch larger than the ranks give is emulated by "
        "accumulating each rank's gradients over several batches before Horovod averages them "
        "(backward_passes_per_step), so every update sees the global batch of a larger "
        "cluster. Every point trained with the same seeds (repeat k: seed + k); differences "
        f"are from the base ({methods[0]} at the smallest global batch), seed by seed, with "
        f"a {paired} over seeds.", "",
        "| method | what it sets |", "|---|---|",
        *(f"| {m} | {changes.get(m, '')} |" for m in methods), "",
        "| method | global batch | x base | accumulated batches | learning rate (scaled) | "
        "warm-up epochs | updates per epoch | test accuracy, mean [min-max] (95 % interval) | "
        + ("top-5 | " if top5 else "") + f"vs base, points ({paired}) | within 1 point |"
        " images/s | node-hours | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if top5 else "")
        + "---:|---|---:|---:|---:|"]
    for r in s.itertuples():
        acc = f"{r.test_accuracy:.4f}" + ("" if r.seeds < 2 else
                                          f" [{r.test_accuracy_min:.4f}-"
                                          f"{r.test_accuracy_max:.4f}] (+/- "
                                          f"{r.test_accuracy_ci95:.4f})")
        t5 = (f" {r.test_top5_accuracy:.4f} |" if r.test_top5_accuracy is not None
              and not pd.isna(r.test_top5_accuracy) else " n/a |") if top5 else ""
        diff = "the base" if r.verdict == "the base" else _points(
            r.difference, r.difference_low, r.difference_high)
        hours = "n/a" if r.node_hours is None or pd.isna(r.node_hours) else f"{r.node_hours:.3g}"
        lines.append(f"| {r.method} | {r.global_batch} | {r.times_base:g} | "
                     f"{r.accumulate_steps} | {r.learning_rate_scaled:.4g} | "
                     f"{r.warmup_epochs:g} | {r.updates_per_epoch:.3g} | {acc} |{t5} {diff} | "
                     f"{'' if r.verdict == 'the base' else _verdict(r)} | "
                     f"{r.images_per_s:,.0f} | {hours} | {r.seeds} |")
    lines += ["", *reading(s, methods), *looks_line(looks or []), *last_epoch(done, s), "",
              *(noise_lines or []),
              *hardware_section(runs),
              "Raw rows: [runs.csv](runs.csv); per point: [summary.csv](summary.csv).", "",
              "![test accuracy vs global batch by method, every seed]"
              "(accuracy_by_method.png)", "",
              "![test accuracy after each epoch, mean over seeds, one panel per global batch]"
              "(learning_curves.png)", ""]
    return "\n".join(lines)


def last_epoch(done: pd.DataFrame, s: pd.DataFrame) -> list[str]:
    """How much the base still gained in its last epoch (mean over seeds): whether the epoch
    budget let it converge. `done`: the completed runs with method and repeat."""
    base = s[s["verdict"] == "the base"]
    if base.empty:
        return []
    b = base.iloc[0]
    gains = [c[-1] - c[-2] for c in (curves(Path(p)) for p in done[
        (done["method"] == b.method) & (done["global_batch"] == b.global_batch)].sort_values(
            "repeat")["run_dir"]) if len(c) >= 2]
    if not gains:
        return []
    return [f"- The budget: the base's test accuracy moved {100 * statistics.fmean(gains):+.2f} "
            f"points in its last epoch of {b.epochs} (mean over {len(gains)} seed(s): "
            + ", ".join(f"{100 * g:+.2f}" for g in gains) + "); a large or uneven move means "
            "the budget did not let it settle."]


def learning_curves(done: pd.DataFrame, methods: list[str], path: Path, title: str) -> Path:
    """Test accuracy after each epoch, the mean over seeds: one panel per global batch, one
    line per method (coloured as in accuracy_by_method)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    batches = sorted(int(g) for g in done["global_batch"].unique())
    methods = [m for m in methods if (done["method"] == m).any()]
    fig, axes = plt.subplots(1, len(batches), figsize=(3.6 * len(batches) + 0.8, 3.8),
                             sharey=True, squeeze=False)
    for ax, g in zip(axes[0], batches, strict=True):
        for i, m in enumerate(methods):
            runs = [curves(Path(p)) for p in done[(done["method"] == m) &
                                                 (done["global_batch"] == g)]["run_dir"]]
            n = min((len(c) for c in runs), default=0)
            if n:
                ax.plot(range(1, n + 1), [100 * statistics.fmean(c[e] for c in runs)
                                          for e in range(n)],
                        marker="o", markersize=3, color=COLORS[i % len(COLORS)], label=m)
        ax.set_title(f"global batch {g}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%), mean over seeds")
    shown = {label: handle for ax in axes[0]  # every method, wherever it ran (--base-alone:
             for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}  # apart)
    axes[0][0].legend(list(shown.values()), list(shown), fontsize=8)
    fig.suptitle(f"{title}: test accuracy after each epoch", fontsize=10)
    return save_png(fig, path)


def accuracy_by_method(s: pd.DataFrame, done: pd.DataFrame, path: Path, title: str) -> Path:
    """Accuracy vs global batch, one line per method: the mean over seeds with its 95 %
    interval as bars, each seed a dot, the base's mean and the 1-point band below it shaded
    (the axis does not start at 0)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    methods = list(dict.fromkeys(s["method"]))
    shift = {m: 1.0 + 0.035 * (i - (len(methods) - 1) / 2) for i, m in enumerate(methods)}
    base = s[s["verdict"] == "the base"]
    if len(base):
        b = 100 * float(base["test_accuracy"].iloc[0])
        ax.axhspan(b - 100 * TOLERANCE, b, color="#999999", alpha=0.18,
                   label="within 1 point of the base")
        ax.axhline(b, color="#555555", linewidth=1, linestyle="--")
    for i, m in enumerate(methods):
        rows = s[s["method"] == m].sort_values("global_batch")
        xs = rows["global_batch"] * shift[m]
        acc = 100 * rows["test_accuracy"].astype(float)
        half = 100 * rows["test_accuracy_ci95"].astype(float).fillna(0.0)
        color = COLORS[i % len(COLORS)]
        ax.errorbar(xs, acc, yerr=half, marker="o", capsize=4, color=color,
                    label=f"{m} (mean, 95 % interval)")
        seeds = done[done["method"] == m]
        ax.scatter(seeds["global_batch"] * shift[m], 100 * seeds["test_accuracy"].astype(float),
                   s=12, color=color, alpha=0.6, zorder=3)
    every = 100 * done["test_accuracy"].astype(float)
    pad = max(1.0, 0.15 * (every.max() - every.min()))
    ax.set_ylim(every.min() - pad, every.max() + pad)  # wide intervals run off, stated below
    batches = sorted(int(g) for g in s["global_batch"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(g) for g in batches])
    ax.minorticks_off()
    ax.set_xlabel("global batch (ranks x batch x accumulated batches)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title}: accuracy vs global batch by method\n(dots: seeds; bars: 95 % "
                 "interval over seeds, cut at the axes)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)
