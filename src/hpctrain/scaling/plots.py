"""The pictures of a scaling study (PNG, matplotlib's Agg backend; no display needed):
throughput vs ranks with the ideal line, efficiency vs ranks, where a step's time goes per
point, and time (and node-hours) to the target accuracy per point."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

COLORS = {"input_s": "#4c72b0", "compute_s": "#55a868", "allreduce_s": "#c44e52",
          "other_s": "#8172b2"}
LABELS = {"input_s": "input wait", "compute_s": "compute (forward + backward)",
          "allreduce_s": "allreduce (incl. waiting for slower ranks)",
          "other_s": "update, metrics, callbacks"}


def save_png(fig, path: Path) -> Path:
    """Lay out, write to a temporary name and rename: never a half-written picture."""
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


OVER = "more ranks x threads than cores"


def _point_labels(s: pd.DataFrame) -> list[str]:
    """Per point; (*) where ranks x threads outnumber the cores."""
    return [f"{r.ranks} rank{'s' if r.ranks > 1 else ''}"
            f"{' (*)' if getattr(r, 'oversubscribed', False) else ''}\n{r.nodes} node"
            f"{'s' if r.nodes > 1 else ''}\nbatch {r.global_batch}" for r in s.itertuples()]


def _mark_oversubscribed(ax, s: pd.DataFrame, y: pd.Series) -> None:
    over = s["oversubscribed"].astype(bool) if "oversubscribed" in s else None
    if over is not None and over.any():
        ax.scatter(s["ranks"][over], y[over], s=160, facecolors="none", edgecolors="#c44e52",
                   linewidths=1.5, zorder=5, label=OVER)


def _note_oversubscribed(fig, s: pd.DataFrame) -> None:
    if "oversubscribed" in s and s["oversubscribed"].astype(bool).any():
        fig.text(0.01, 0.01, f"(*) {OVER}: core sharing, not communication", fontsize=7,
                 color="#c44e52")


def throughput(s: pd.DataFrame, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    base = s.iloc[0]
    if s["efficiency"].notna().any():  # no ideal line against a base that failed
        ideal = base["images_per_s"] * s["ranks"] / base["ranks"]
        ax.plot(s["ranks"], ideal, "--", color="gray", label="ideal (linear in ranks)")
    ax.errorbar(s["ranks"], s["images_per_s"], yerr=s["images_per_s_ci95"].fillna(0),
                marker="o", capsize=4, color="#4c72b0", label="measured (95 % interval)")
    _mark_oversubscribed(ax, s, s["images_per_s"])
    for r in s.itertuples():
        ax.annotate(f"{r.images_per_s:.0f}", (r.ranks, r.images_per_s),
                    textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(s["ranks"]), [str(r) for r in s["ranks"]])
    ax.set_xlabel("ranks")
    ax.set_ylabel("images/s (all ranks)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def efficiency(s: pd.DataFrame, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.axhline(100, ls="--", color="gray", label="ideal")
    ax.plot(s["ranks"], 100 * s["efficiency"], marker="o", color="#55a868",
            label="measured")
    _mark_oversubscribed(ax, s, 100 * s["efficiency"])
    for r in s.itertuples():
        ax.annotate(f"{100 * r.efficiency:.0f} %", (r.ranks, 100 * r.efficiency),
                    textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(s["ranks"]), [str(r) for r in s["ranks"]])
    ax.set_xlabel("ranks")
    ax.set_ylabel("scaling efficiency (%)")
    ax.set_ylim(0, 115)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def measured_and_projected(rows: list[dict], path: Path, title: str) -> Path:
    """A study's efficiency as measured and as the cost model projects it, point by point
    (projection.against_measured), with the difference written at each point."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ranks = [r["ranks"] for r in rows]
    ax.axhline(100, ls="--", color="gray", label="ideal")
    done = [r for r in rows if r["measured"] is not None]
    ax.plot([r["ranks"] for r in done], [100 * r["measured"] for r in done], marker="o",
            color="#55a868", label="measured")
    ax.plot(ranks, [100 * r["projected"] for r in rows], marker="s", ls=":",
            color="#4c72b0", label="projected (cost model)")
    over = [r for r in done if r["oversubscribed"]]
    if over:
        ax.scatter([r["ranks"] for r in over], [100 * r["measured"] for r in over], s=160,
                   facecolors="none", edgecolors="#c44e52", linewidths=1.5, zorder=5,
                   label=OVER)
    for r in done:
        ax.annotate(f"{r['difference_pp']:+.0f} pts", (r["ranks"], 100 * r["projected"]),
                    textcoords="offset points", xytext=(-10, 8), fontsize=8, color="#4c72b0")
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(ranks) / 1.3, max(ranks) * 1.3)
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.set(xlabel="ranks", ylabel="scaling efficiency (%)", ylim=(0, 115))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def breakdown(s: pd.DataFrame, path: Path, title: str) -> Path:
    """Left: a step's mean time split into its parts. Right: the job's wall time split into
    launch, startup, training and teardown."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5.6))
    x = range(len(s))
    bottom = [0.0] * len(s)
    for part in COLORS:
        values = [1e3 * (v if pd.notna(v) else 0.0) for v in s[part]]
        left.bar(x, values, bottom=bottom, color=COLORS[part], label=LABELS[part])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    left.set_xticks(list(x), _point_labels(s), fontsize=8)
    left.set_ylabel("ms per training step (mean over ranks)")
    left.set_title("where a step's time goes", fontsize=10)
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    job_parts = {"launch_s": ("job start to Python", "#dd8452"),
                 "startup_s": ("startup (imports, hvd.init, data, model)", "#937860"),
                 "train_total_s": ("training incl. evaluation", "#55a868"),
                 "teardown_s": ("report to job end", "#8c8c8c")}
    s = s.assign(train_total_s=s["job_s"] - s[["launch_s", "startup_s", "teardown_s"]]
                 .sum(axis=1)) if "job_s" in s and s["job_s"].notna().any() else s
    bottom = [0.0] * len(s)
    for key, (label, color) in job_parts.items():
        if key not in s:
            continue
        values = [v if pd.notna(v) else 0.0 for v in s[key]]
        right.bar(x, values, bottom=bottom, color=color, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    right.set_xticks(list(x), _point_labels(s), fontsize=8)
    right.set_ylabel("s per job (median over repeats)")
    right.set_title("where a job's time goes", fontsize=10)
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.suptitle(title, fontsize=10)
    _note_oversubscribed(fig, s)
    return save_png(fig, path)


def time_to_accuracy(s: pd.DataFrame, path: Path, title: str) -> Path | None:
    if s["time_to_target_s"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = list(range(len(s)))
    values = [v if pd.notna(v) else 0.0 for v in s["time_to_target_s"]]
    ax.bar(x, values, color="#4c72b0")
    for i, r in enumerate(s.itertuples()):
        text = "not reached" if pd.isna(r.time_to_target_s) else \
            f"{r.time_to_target_s:.0f} s\n{r.node_hours_to_target:.3f} node-h"
        ax.annotate(text, (i, values[i]), textcoords="offset points", xytext=(0, 4),
                    ha="center", fontsize=8)
    ax.set_xticks(x, _point_labels(s), fontsize=8)
    target = s["target_accuracy"].dropna()
    ax.set_ylabel("s of training to test accuracy "
                  + (f">= {target.iloc[0]:.2f}" if len(target) else "target"))
    ax.set_ylim(0, max(values) * 1.3 if max(values) > 0 else 1)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    _note_oversubscribed(fig, s)
    return save_png(fig, path)


def all_plots(s: pd.DataFrame, out: Path, title: str) -> dict[str, Path]:
    made = {"throughput": throughput(s, out / "throughput.png", title)}
    if s["efficiency"].notna().any():
        made["efficiency"] = efficiency(s, out / "efficiency.png", title)
    made["breakdown"] = breakdown(s, out / "breakdown.png", title)
    tta = time_to_accuracy(s, out / "time_to_accuracy.png", title)
    if tta:
        made["time_to_accuracy"] = tta
    return made


def accuracy_vs_batch(s: pd.DataFrame, path: Path, title: str) -> Path:
    """Test accuracy vs global batch, one line per warm-up setting (colour) and node count
    (marker and line style); on a nodes x global-batch grid, a second panel shows how fast
    each node count went at each global batch."""
    nodes = sorted(int(n) for n in s["nodes"].unique()) if "nodes" in s else [0]
    grid = len(nodes) > 1
    fig, axes = plt.subplots(1, 2 if grid else 1, figsize=(11.5 if grid else 6.4, 4.2))
    ax, speed = (axes[0], axes[1]) if grid else (axes, None)
    colors = {w: c for w, c in zip(sorted(s["warmup_epochs"].unique()),
                                   ("#c44e52", "#4c72b0", "#55a868"), strict=False)}
    styles = dict(zip(nodes, (("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-")),
                      strict=False))
    keys = ["nodes", "warmup_epochs"] if grid else ["warmup_epochs"]
    for key, group in s.groupby(keys):
        *where, warmup = key if isinstance(key, tuple) else (key,)
        marker, line = styles.get(where[0] if where else 0, ("o", "-"))
        label = "no warm-up" if warmup == 0 else f"{warmup:g}-epoch warm-up"
        if where:
            label = f"{where[0]} node(s), {label}"
        group = group.sort_values("global_batch")
        acc = 100 * group["test_accuracy"].astype(float)
        low = acc - 100 * group["test_accuracy_min"].astype(float)
        high = 100 * group["test_accuracy_max"].astype(float) - acc
        ax.errorbar(group["global_batch"], acc, yerr=[low, high], marker=marker, capsize=4,
                    linestyle=line, color=colors.get(warmup, "#8172b2"), label=label)
    if speed is not None:
        for n, group in s.groupby("nodes"):
            group = group.groupby("global_batch", as_index=False)["images_per_s"].mean()
            marker, line = styles.get(int(n), ("o", "-"))
            speed.plot(group["global_batch"], group["images_per_s"], marker=marker,
                       linestyle=line, color="#333333", label=f"{int(n)} node(s)")
        speed.set_ylabel("images/s (mean over warm-ups and repeats)")
        speed.set_title("speed at each global batch", fontsize=10)
        speed.set_ylim(bottom=0)
    batches = sorted(s["global_batch"].unique())
    for a in (ax, speed) if speed is not None else (ax,):
        a.set_xscale("log", base=2)
        a.set_xticks(batches, [str(b) for b in batches])
        a.set_xlabel("global batch (ranks x batch x accumulated batches)")
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title}: linear learning-rate scaling", fontsize=10)
    return save_png(fig, path)
