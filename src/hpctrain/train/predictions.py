"""What the report's pictures need from the test set, gathered the way the evaluation is:
each rank predicts its own share (`predict_share`), rank 0 merges the parts (`merge`).

Bounded at any test-set size and rank count: every rank sends every other only its
confusion counts and the (confidence, true, predicted) of at most 2 x `keep` candidates;
all ranks then agree on the same `keep` examples per grid, and only those images travel.
Pure numpy around a `predict(images) -> probabilities` function, so the same code serves
a training run (its model in memory) and `hpctrain report` (the model restored from the
run's checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

KEEP = 16  # example images per grid


def confusion_counts(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j]: test images of class i predicted as class j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return counts


def predict_share(predict: Callable[[np.ndarray], np.ndarray],
                  batches: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int,
                  keep: int = KEEP) -> dict:
    """One rank's part: confusion counts and candidate examples as (confidence, true,
    predicted, image): its `keep` most confident mistakes and up to `keep` correct images,
    the first of each class first."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    mistakes: list[tuple[float, int, int, np.ndarray]] = []
    correct: dict[int, list[tuple[float, int, int, np.ndarray]]] = {}
    for images, labels in batches:
        probs = np.asarray(predict(images), dtype=np.float64)
        pred = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        labels = np.asarray(labels, dtype=np.int64)
        counts += confusion_counts(labels, pred, num_classes)
        for i in np.flatnonzero(pred != labels):
            mistakes.append((float(conf[i]), int(labels[i]), int(pred[i]), images[i].copy()))
        mistakes = sorted(mistakes, key=lambda m: -m[0])[:keep]
        for i in np.flatnonzero(pred == labels):
            kept = correct.setdefault(int(labels[i]), [])
            if len(kept) < keep:
                kept.append((float(conf[i]), int(labels[i]), int(pred[i]), images[i].copy()))
    return {"counts": counts, "mistakes": mistakes,
            "correct": _round_robin([correct[label] for label in sorted(correct)], keep)}


def _round_robin(groups: list[list], keep: int) -> list:
    out: list = []
    depth = 0
    while len(out) < keep and any(len(g) > depth for g in groups):
        out += [g[depth] for g in groups if len(g) > depth][:keep - len(out)]
        depth += 1
    return out


def metadata(part: dict) -> dict:
    """A part without its images: what every rank sends to every other."""
    return {"counts": part["counts"],
            **{kind: [e[:3] for e in part[kind]] for kind in ("mistakes", "correct")}}


def select(metas: list[dict], keep: int = KEEP) -> dict[str, list[tuple[int, int]]]:
    """Which examples the grids show, as (rank, index) - the same on every rank, so only
    the chosen images need to travel: the most confident mistakes of all ranks, and correct
    images round-robin over the classes."""
    mistakes = sorted(((m[0], r, i) for r, meta in enumerate(metas)
                       for i, m in enumerate(meta["mistakes"])),
                      key=lambda x: (-x[0], x[1], x[2]))[:keep]
    by_class: dict[int, list[tuple[int, int]]] = {}
    for r, meta in enumerate(metas):
        for i, c in enumerate(meta["correct"]):
            by_class.setdefault(c[1], []).append((r, i))
    return {"mistakes": [(r, i) for _, r, i in mistakes],
            "correct": _round_robin([by_class[k] for k in sorted(by_class)], keep)}


def chosen_images(part: dict, choice: dict, rank: int) -> dict:
    """This rank's images among the chosen ones: {kind: {index: image}}."""
    return {kind: {i: part[kind][i][3] for r, i in choice[kind] if r == rank}
            for kind in choice}


def assemble(metas: list[dict], choice: dict, images: list[dict]) -> dict:
    """The whole test set's counts and the chosen examples as arrays."""
    merged: dict = {"counts": sum(m["counts"] for m in metas)}
    for kind, picks in choice.items():
        rows = [(*metas[r][kind][i], images[r][kind][i]) for r, i in picks]
        merged[kind] = _arrays(rows)
    return merged


def merge(parts: list[dict], keep: int = KEEP) -> dict:
    """All parts in one process (tests, `hpctrain report`)."""
    metas = [metadata(p) for p in parts]
    choice = select(metas, keep)
    return assemble(metas, choice, [chosen_images(p, choice, r) for r, p in enumerate(parts)])


def _arrays(examples: list) -> dict:
    if not examples:
        return {"images": np.zeros((0, 1, 1, 1), np.uint8), "true": np.zeros(0, np.int64),
                "pred": np.zeros(0, np.int64), "conf": np.zeros(0)}
    return {"conf": np.array([e[0] for e in examples]),
            "true": np.array([e[1] for e in examples]),
            "pred": np.array([e[2] for e in examples]),
            "images": np.stack([e[3] for e in examples])}
