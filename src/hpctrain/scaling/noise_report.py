"""A large-batch study's section on its base's gradient noise scale: how large a global batch
the base's gradients can use, epoch by epoch, against the global batches the study trained.

The numbers come from `hpctrain noise-scale --all` on a run of the base that kept every
epoch's checkpoint (`checkpoint_keep=0`), its noise_scale.json copied into the study
directory; nothing here measures anything.

McCandlish et al. (2018): a global batch well below B_simple makes updates about as useful
per sample as a small one (k times the batch, about k times fewer updates needed); well
above it, each update is hardly better than one of B_simple samples, so at a fixed epoch
budget such a batch trains as if it had only (images per epoch / B_simple)-sized steps to
spend at the rate of (images per epoch / global batch) updates: it runs out of updates.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from hpctrain.scaling.plots import save_png

FILE = "noise_scale.json"


def measured(noise: dict) -> list[dict]:
    """The checkpoints with an estimate, in epoch order."""
    return sorted((p for p in noise["points"] if p["noise_scale"] is not None),
                  key=lambda p: p["epoch"] or 0)


def section(noise: dict, global_batches: list[int]) -> list[str]:
    """Markdown lines: the table per epoch and a reading against the study's global batches."""
    points = measured(noise)
    lines = ["## How large a batch the base's gradients can use", "",
             f"The gradient noise scale B_simple = tr(Sigma) / |G|^2 of the base (run "
             f"`{noise['run']}`, seed {noise['seed']}, retrained with every epoch's checkpoint "
             f"kept) at the end of each epoch, from {noise['batches']} batches of "
             f"{noise['batch']} drawn as it trained, 95 % interval by jackknife over "
             f"{noise['groups']} groups ({noise['reference']}; `hpctrain noise-scale --all`). "
             "A global batch well above it makes each update hardly better than one of "
             "B_simple samples, so at a fixed number of epochs it runs short of useful "
             "updates, whatever the optimizer or its rate. An interval reaching below 0 "
             "leaves that epoch's estimate unresolved.", ""]
    if not points:
        return lines + ["No checkpoint gave an estimate (|G|^2 not positive at every one).",
                        ""]
    largest = max(global_batches)
    lines += ["| epoch | B_simple (95 % interval) | " + " | ".join(
                  f"{g} / B_simple" for g in global_batches) + " |",
              "|---:|---|" + "---:|" * len(global_batches)]
    for p in points:
        spread = "" if p["noise_scale_low"] is None else \
            f" ({p['noise_scale_low']:.0f} to {p['noise_scale_high']:.0f})"
        lines.append(f"| {p['epoch']} | {p['noise_scale']:.0f}{spread} | " + " | ".join(
            f"{g / p['noise_scale']:.2g}" for g in global_batches) + " |")
    typical = statistics.median(p["noise_scale"] for p in points)
    unmeasured = len(noise["points"]) - len(points)
    lines += ["", f"- Over training the median B_simple is {typical:.0f} samples: the "
              f"largest global batch here ({largest}) is {largest / typical:.1f} times it, the "
              f"smallest ({min(global_batches)}) {min(global_batches) / typical:.2g} times."
              + (f" {unmeasured} checkpoint(s) gave no estimate (|G|^2 not positive: near the "
                 "end of a decayed schedule the gradient drowns in noise)." if unmeasured
                 else ""), "", "![gradient noise scale of the base by epoch, against the "
              "study's global batches](noise_scale.png)", ""]
    return lines


def picture(noise: dict, global_batches: list[int], path: Path, title: str) -> Path | None:
    """B_simple by epoch with its interval, the study's global batches as horizontal lines."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    points = measured(noise)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    epochs = [p["epoch"] for p in points]
    values = [p["noise_scale"] for p in points]
    low = [p["noise_scale"] - (p["noise_scale_low"] if p["noise_scale_low"] is not None
                               else p["noise_scale"]) for p in points]
    high = [(p["noise_scale_high"] if p["noise_scale_high"] is not None
             else p["noise_scale"]) - p["noise_scale"] for p in points]
    ax.errorbar(epochs, values, yerr=[low, high], marker="o", capsize=3, color="#4c72b0",
                label="B_simple of the base (95 % interval)")
    for i, g in enumerate(sorted(global_batches)):
        ax.axhline(g, color="#c44e52" if i else "#555555", linestyle="--", linewidth=1)
        ax.annotate(f"global batch {g}", (max(epochs), g), textcoords="offset points",
                    xytext=(-4, 3), ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(0.6 * min(values + global_batches), 1.8 * max(values + global_batches))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (checkpoint at its end)")
    ax.set_ylabel("samples (log scale)")
    ax.set_title(f"{title}: gradient noise scale of the base by epoch", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    return save_png(fig, path)
