"""A `--mode variants` study's table, pictures and README: several variants of one config
(a recipe and the recipe without each of its parts), each trained with several seeds, and
what each variant changes against the first one, paired seed by seed.

The difference of a variant from the reference is taken per seed (the same seed draws the
same initial weights and data order where the variant does not change them), then its mean
and a 95 % interval over seeds (Student's t), widened when seeds were added after the results
were read (study_report.looks_line): a part "changes" accuracy only when the interval leaves 0
out.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pandas as pd

from hpctrain.atomic import write_text
from hpctrain.report.statistics import confidence_for_looks, half_width, samples_to_resolve
from hpctrain.scaling.plots import save_png
from hpctrain.scaling.study_report import (
    completed_runs,
    hardware_section,
    interval_name,
    looks_line,
    report_head,
    write_runs_csv,
)

RUN = re.compile(r"(?P<variant>.+)-rep(?P<repeat>\d+)$")  # runs/<variant>-rep<k>


def curves(run_dir: Path) -> list[float]:
    """Test accuracy after each epoch (the last value per epoch: a resumed epoch counts
    once)."""
    path = run_dir / "metrics.jsonl"
    by_epoch: dict[int, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("val_accuracy") is not None:
                by_epoch[int(row["epoch"])] = float(row["val_accuracy"])
    return [by_epoch[e] for e in sorted(by_epoch)]


def summarize(done: pd.DataFrame, variants: list[str], looks: int = 1) -> pd.DataFrame:
    """Per variant: accuracy over seeds, and its difference from the first variant's, paired
    by repeat (seed), its interval widened for the study's `looks`."""
    confidence = confidence_for_looks(looks)
    ref = {int(r): float(a) for r, a in zip(done[done["variant"] == variants[0]]["repeat"],
                                            done[done["variant"] == variants[0]][
                                                "test_accuracy"], strict=True)}
    rows = []
    for v in variants:
        group = done[done["variant"] == v].sort_values("repeat")
        if group.empty:
            continue
        acc = [float(a) for a in group["test_accuracy"]]
        diffs = [float(a) - ref[int(r)] for r, a in zip(group["repeat"], group["test_accuracy"],
                                                        strict=True) if int(r) in ref]
        half = half_width(diffs, confidence)
        top5 = [float(a) for a in group.get("test_top5_accuracy", pd.Series(dtype=float))
                if a is not None and not pd.isna(a)]
        mean_diff = statistics.fmean(diffs) if diffs else None
        rows.append({
            "variant": v, "seeds": len(acc), "test_accuracy": statistics.fmean(acc),
            "test_accuracy_min": min(acc), "test_accuracy_max": max(acc),
            "test_top5_accuracy": statistics.fmean(top5) if top5 else None,
            "difference": None if v == variants[0] else mean_diff,
            "difference_low": None if half is None or v == variants[0] or mean_diff is None
            else mean_diff - half,
            "difference_high": None if half is None or v == variants[0] or mean_diff is None
            else mean_diff + half,
            "difference_confidence": confidence, "looks": looks,
            # one that holds 0: seeds at this spread after which it would not, counting the
            # look more that adding them would be
            "seeds_to_resolve": samples_to_resolve(
                diffs, 0.0, confidence=confidence_for_looks(looks + 1))
            if v != variants[0] and half is not None and mean_diff is not None
            and abs(mean_diff) <= half else None,
            "epochs": int(group["epochs"].iloc[0]),
            "images_per_s": statistics.fmean(group["images_per_s"]),
            "train_s": statistics.fmean(group["train_s"]),
        })
    return pd.DataFrame(rows)


def reading(s: pd.DataFrame, reference: str) -> list[str]:
    """Each variant's difference in words, by its interval."""
    lines = []
    for r in s.itertuples():
        if r.variant == reference or r.difference is None or pd.isna(r.difference):
            continue
        pp = 100 * r.difference
        if r.difference_low is None or pd.isna(r.difference_low):
            lines.append(f"- {r.variant}: {pp:+.2f} points against {reference} ({r.seeds} "
                         "seed: no interval, so no verdict).")
            continue
        low, high = 100 * r.difference_low, 100 * r.difference_high
        n = r.seeds_to_resolve
        more = "" if n is None or pd.isna(n) else f"; ~{int(n)} seeds at this spread would " \
            "resolve it"
        says = ("lower" if high < 0 else "higher" if low > 0 else
                f"no difference resolved (the interval holds 0{more})")
        lines.append(f"- {r.variant}: {pp:+.2f} points against {reference} "
                     f"({interval_name(r.difference_confidence)} {low:+.2f} to {high:+.2f} "
                     f"over {r.seeds} seeds): {says}.")
    return lines


def write_variants_study(out: Path, runs: pd.DataFrame, *, title: str, command: str,
                         variants: list[str], changes: dict[str, str],
                         failed: list[dict] | None = None, looks: list[int] | None = None) -> dict:
    """runs.csv, summary.csv, README.md and two pictures in `out`. `changes`: what each
    variant sets, in words (from the config file); `looks`: the seed counts at which the
    study's results were read (its plan's)."""
    out.mkdir(parents=True, exist_ok=True)
    done = completed_runs(runs, RUN, "variant") if len(runs) else pd.DataFrame()
    s = summarize(done, variants, len(looks or []) or 1) if len(done) else pd.DataFrame()
    if len(runs):
        write_runs_csv(out, runs)
    write_text(out / "summary.csv", s.to_csv(index=False, float_format="%.6g"))
    pictures = []
    if len(s):
        curves_of = {v: [curves(Path(p)) for p in done[done["variant"] == v]["run_dir"]]
                     for v in s["variant"]}
        pictures = [accuracy_by_variant(s, done, out / "accuracy_by_variant.png", title),
                    learning_curves(curves_of, out / "learning_curves.png", title)]
    write_text(out / "README.md", render(s, runs, title, command, variants, changes, failed,
                                         looks or []))
    return {"mode": "variants", "points": len(s), "runs": len(runs),
            "failed": len(failed or []), "pictures": sorted(p.name for p in pictures)}


def render(s: pd.DataFrame, runs: pd.DataFrame, title: str, command: str,
           variants: list[str], changes: dict[str, str],
           failed: list[dict] | None = None, looks: list[int] | None = None) -> str:
    lines = report_head(f"{title}: variants against {variants[0]}", command, failed,
                        "the tables and pictures")
    if not len(s):
        return "\n".join(lines + ["No completed run yet.", ""])
    first = runs.iloc[0]
    epochs = sorted({int(e) for e in s["epochs"]})
    top5 = s["test_top5_accuracy"].notna().any()
    paired = interval_name(float(s["difference_confidence"].iloc[0]))
    lines += [
        f"{first['model']} on {first['dataset']}, {int(first['ranks'])} rank(s) on "
        f"{int(first['nodes'])} node(s), "
        + (f"{epochs[0]} epochs" if len(epochs) == 1 else
           " or ".join(map(str, epochs)) + " epochs (by variant)")
        + f" of {int(first['images_per_epoch']):,} images; every variant "
        f"trained with the same seeds (repeat k: seed + k). Differences are from {variants[0]}, "
        f"seed by seed, with a {paired} over seeds: a variant changes accuracy only where "
        "the interval leaves 0 out.", "",
        "| variant | what it changes | seeds | test accuracy, mean [min-max] | "
        + ("top-5 | " if top5 else "") + f"vs {variants[0]}, points ({paired}) | "
        "images/s | training, s |",
        "|---|---|---:|---:|" + ("---:|" if top5 else "") + "---:|---:|---:|"]
    for r in s.itertuples():
        diff = "the reference" if r.variant == variants[0] else (
            "n/a" if r.difference is None or pd.isna(r.difference) else
            f"{100 * r.difference:+.2f}" + (
                "" if r.difference_low is None or pd.isna(r.difference_low) else
                f" ({100 * r.difference_low:+.2f} to {100 * r.difference_high:+.2f})"))
        t5 = (f" {r.test_top5_accuracy:.4f} |" if r.test_top5_accuracy is not None
              and not pd.isna(r.test_top5_accuracy) else " n/a |") if top5 else ""
        acc = f"{r.test_accuracy:.4f}" + ("" if r.seeds < 2 else
                                          f" [{r.test_accuracy_min:.4f}-"
                                          f"{r.test_accuracy_max:.4f}]")
        lines.append(f"| {r.variant} | {changes.get(r.variant, '')} | {r.seeds} | {acc} |"
                     f"{t5} {diff} | {r.images_per_s:,.0f} | {r.train_s:,.0f} |")
    lines += ["", *reading(s, variants[0]), *looks_line(looks or []), "",
              *hardware_section(runs),
              "Raw rows: [runs.csv](runs.csv); per variant: [summary.csv](summary.csv).", "",
              "![test accuracy by variant, every seed](accuracy_by_variant.png)", "",
              "![test accuracy after each epoch, mean over seeds](learning_curves.png)", ""]
    return "\n".join(lines)


def accuracy_by_variant(s: pd.DataFrame, done: pd.DataFrame, path: Path, title: str) -> Path:
    """Each variant's seeds as dots and their mean as a dash, the reference's mean a line
    (no bars: the axis does not start at 0)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(s) + 2), 4.2))
    xs = range(len(s))
    acc = 100 * s["test_accuracy"].astype(float)
    ax.scatter(xs, acc, marker="_", s=900, linewidths=2, color="#333333", zorder=2,
               label="mean over seeds")
    for x, v in zip(xs, s["variant"], strict=True):
        seeds = 100 * done[done["variant"] == v]["test_accuracy"].astype(float)
        ax.scatter([x] * len(seeds), seeds, color="#4c72b0", zorder=3, s=18,
                   label="one seed" if x == 0 else None)
    ax.axhline(acc.iloc[0], color="#c44e52", linewidth=1, linestyle="--",
               label=f"{s['variant'].iloc[0]} (mean)")
    low = min(100 * done["test_accuracy"].astype(float))
    high = max(100 * done["test_accuracy"].astype(float))
    pad = max(0.5, 0.25 * (high - low))
    ax.set_ylim(low - pad, high + pad)
    ax.set_xticks(list(xs), list(s["variant"]), rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(s) - 0.4)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title}: test accuracy by variant", fontsize=10)
    ax.legend(fontsize=8, markerscale=0.5)
    ax.grid(alpha=0.3, axis="y")
    return save_png(fig, path)


def learning_curves(curves_of: dict[str, list[list[float]]], path: Path, title: str) -> Path:
    """Test accuracy after each epoch, the mean over each variant's seeds."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for v, runs in curves_of.items():
        n = min((len(c) for c in runs), default=0)
        if not n:
            continue
        mean = [100 * statistics.fmean(c[e] for c in runs) for e in range(n)]
        ax.plot(range(1, n + 1), mean, marker="o", markersize=3, label=v)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%), mean over seeds")
    ax.set_title(f"{title}: test accuracy after each epoch", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)
