"""The pictures every run's report shows, as the workshops show them after training:
learning curves, the confusion matrix, and grids of correctly and incorrectly classified test
images. Pure functions of numbers and images (matplotlib, Agg); nothing here imports
TensorFlow. Each writes one PNG under a temporary name and renames it.

    learning_curves(rows, path)                          metrics.jsonl rows -> curves.png
    confusion_matrix(counts, class_names, path)          -> confusion.png
    example_grid(images, true, pred, conf, names, path, title)  -> correct.png / mistakes.png
    write_pictures(run_dir, rows, merged, class_names, title)     all of a run's, by name
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PICTURES = {"curves": "curves.png", "confusion": "confusion.png",
            "correct": "correct.png", "mistakes": "mistakes.png"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)
    tmp.replace(path)
    return path


def learning_curves(rows: list[dict], path: Path, title: str = "") -> Path:
    """Training and test accuracy and loss per epoch, and the learning rate; where a resumed
    run started a new segment, a dotted line says so."""
    plt = _plt()
    epochs = [r["epoch"] for r in rows]
    fig, (acc, loss, lr) = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in ((acc, "accuracy", "accuracy"), (loss, "loss", "loss")):
        ax.plot(epochs, [r.get(key) for r in rows], "o-", color="#4c72b0", label="training")
        test = [r.get(f"val_{key}") for r in rows]
        if any(v is not None for v in test):
            ax.plot(epochs, test, "s-", color="#dd8452", label="test")
        top5 = [r.get("val_top5_accuracy") for r in rows] if key == "accuracy" else []
        if any(v is not None for v in top5):  # more than ten classes
            ax.plot(epochs, top5, "^--", color="#c44e52", label="test, top-5")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    acc.set_ylim(top=1.0)
    rates = [r.get("lr") for r in rows]
    lr.plot(epochs, rates, "o-", color="#55a868")
    lr.set_xlabel("epoch")
    lr.set_ylabel("learning rate (all ranks, end of epoch)")
    lr.set_title("learning rate")
    lr.set_ylim(0, 1.15 * max([v for v in rates if v] or [1.0]))
    lr.ticklabel_format(axis="y", useOffset=False)
    lr.grid(alpha=0.3)
    resumed = [r["epoch"] - 0.5 for r in rows[1:] if r.get("first_in_segment")]
    for ax in (acc, loss, lr):
        for x in resumed:
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
    if resumed:
        acc.text(resumed[0], acc.get_ylim()[0], " resumed", color="grey", fontsize=8,
                 va="bottom")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(counts: np.ndarray, class_names: list[str], path: Path,
                     title: str = "") -> Path:
    """Counts and row-normalised (each true class sums to 100 %), side by side."""
    plt = _plt()
    n = len(counts)
    names = _names(class_names, n)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    size = max(5.0, 0.45 * n + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, fmt, label in ((axes[0], counts, "d", "test images"),
                                   (axes[1], 100 * share, ".0f", "% of the true class")):
        image = ax.imshow(values, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 30:  # numbers in the cells while they stay readable
            top = values.max() or 1
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, format(values[i, j], fmt), ha="center", va="center",
                            fontsize=7 if n > 12 else 8,
                            color="white" if values[i, j] > 0.6 * top else "black")
    axes[0].set_title("counts")
    axes[1].set_title("row-normalised")
    fig.suptitle(title or f"confusion matrix, {int(counts.sum())} test images, "
                 f"{100 * np.trace(counts) / max(1, counts.sum()):.2f} % correct")
    fig.tight_layout()
    return _save(fig, path)


def example_grid(images: np.ndarray, true: np.ndarray, pred: np.ndarray, conf: np.ndarray,
                 class_names: list[str], path: Path, title: str, columns: int = 8) -> Path:
    """Test images with "predicted X (confidence), true Y" above each; red when wrong."""
    plt = _plt()
    count = len(images)
    names = _names(class_names, int(max([*true, *pred], default=0)) + 1)
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.75 * columns, 2.2 * rows + 0.4),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= count:
            continue
        image = images[k]
        gray = image.ndim == 2 or image.shape[-1] == 1
        ax.imshow(image.squeeze(-1) if image.ndim == 3 and gray else image,
                  cmap="gray" if gray else None, vmin=0, vmax=255)
        wrong = int(pred[k]) != int(true[k])
        ax.set_title(f"predicted {names[int(pred[k])]}\n({100 * conf[k]:.0f} %), "
                     f"true {names[int(true[k])]}", fontsize=7,
                     color="#c44e52" if wrong else "black")
    if count == 0:
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _names(class_names: list[str], n: int) -> list[str]:
    return [class_names[i] if i < len(class_names) else str(i) for i in range(n)]


def write_pictures(run_dir: Path, rows: list[dict], merged: dict | None,
                   class_names: list[str], title: str) -> dict:
    """The PNGs into the run directory; {name: file name} of those written."""
    run_dir = Path(run_dir)
    made = {}
    if rows:
        learning_curves(rows, run_dir / PICTURES["curves"], title)
        made["curves"] = PICTURES["curves"]
    if merged is not None and merged["counts"].sum():
        confusion_matrix(merged["counts"], class_names, run_dir / PICTURES["confusion"])
        made["confusion"] = PICTURES["confusion"]
        for kind, caption in (("mistakes", "misclassified test images, most confident first"),
                              ("correct", "correctly classified test images")):
            ex = merged[kind]
            example_grid(ex["images"], ex["true"], ex["pred"], ex["conf"], class_names,
                         run_dir / PICTURES[kind], caption)
            made[kind] = PICTURES[kind]
    return made
