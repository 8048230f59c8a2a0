"""The gradient noise scale of a trained run: how large a global batch its gradients can use.

McCandlish, Kaplan, Amodei et al. (2018, "An Empirical Model of Large-Batch Training") show
that the gain from a larger batch saturates around the *simple noise scale*

    B_simple = tr(Sigma) / |G|^2

(the per-example gradient's variance summed over parameters, over the squared norm of the
true gradient): well below it, a batch k times larger needs about k times fewer updates;
well above it, hardly fewer at all - more samples per update are spent on a gradient that
was already accurate. At a fixed epoch budget a global batch far above B_simple therefore
makes too few useful updates, whatever the optimizer or its rate.

Estimated as the paper's appendix A does, without per-example gradients: the squared norm of
the gradient of b-sample batches and of the mean over n of them (a batch of n x b),

    E|G_b|^2 = |G|^2 + tr(Sigma) / b,  so
    |G|^2   = (n b |G_nb|^2 - b |G_b|^2) / (n b - b)
    tr(Sigma) = (|G_b|^2 - |G_nb|^2) / (1 / b - 1 / (n b)),

from batches drawn as the run trained (its reader's shuffled order and augmentation, a new
epoch's draw, BatchNorm in training mode, the training loss without weight decay), at the
run's newest checkpoint. The batches are taken in `groups`; the two terms are averaged over
groups before their ratio (the paper's advice: the ratio of means is less biased than the mean
of ratios), and the 95 % interval is the jackknife over groups (Student's t).

    hpctrain noise-scale --run results/runs/RUN --batches 64
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path

from hpctrain.atomic import write_json
from hpctrain.report.statistics import t95
from hpctrain.validation import InputError

REFERENCE = "McCandlish, Kaplan, Amodei et al. 2018, arXiv:1812.06162, appendix A"


def group_terms(small: list[float], big: float, b: int) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) from one group: the squared gradient norms of its n batches of b
    samples (`small`) and the squared norm of their mean (`big`, a batch of n x b)."""
    n = len(small)
    if n < 2 or b < 1:
        raise ValueError("a group needs at least two batches")
    mean_small = statistics.fmean(small)
    big_batch = n * b
    g2 = (big_batch * big - b * mean_small) / (big_batch - b)
    trace = (mean_small - big) / (1.0 / b - 1.0 / big_batch)
    return g2, trace


def combine(terms: list[tuple[float, float]]) -> dict:
    """B_simple = mean tr(Sigma) / mean |G|^2 over groups, and its jackknife 95 % interval
    (None with fewer than 3 groups or a mean |G|^2 that is not positive)."""
    g2 = [t[0] for t in terms]
    trace = [t[1] for t in terms]
    mean_g2, mean_trace = statistics.fmean(g2), statistics.fmean(trace)
    estimate = mean_trace / mean_g2 if mean_g2 > 0 else None
    low = high = None
    m = len(terms)
    if estimate is not None and m >= 3:
        leave_out: list[float] = []
        for i in range(m):
            rest_g2 = (mean_g2 * m - g2[i]) / (m - 1)
            rest_trace = (mean_trace * m - trace[i]) / (m - 1)
            if rest_g2 <= 0:
                leave_out = []
                break
            leave_out.append(rest_trace / rest_g2)
        if leave_out:
            centre = statistics.fmean(leave_out)
            se = math.sqrt((m - 1) / m * sum((x - centre) ** 2 for x in leave_out))
            low, high = estimate - t95(m - 1) * se, estimate + t95(m - 1) * se
    return {"noise_scale": estimate, "noise_scale_low": low, "noise_scale_high": high,
            "gradient_norm_squared": mean_g2, "gradient_variance_trace": mean_trace}


def measure(run_dir: str | Path, batches: int = 64, batch: int = 0, groups: int = 8,
            every: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """The run's noise scale at its newest checkpoint (with `every`: at each one it kept,
    `checkpoint_keep: 0` keeps them all) from `batches` batches of `batch` samples (default
    the run's per-rank batch), the same draw for every checkpoint, in `groups` groups;
    written to <run_dir>/noise_scale.json (atomically) and returned. `log` gets a heading,
    then each checkpoint's line as it is measured."""
    from hpctrain.train import checkpoint
    from hpctrain.train.inference import describe_run

    run = describe_run(run_dir)  # refuses a bad run directory before TensorFlow loads
    if run.cfg.synthetic:
        raise InputError(f"{run_dir}: a synthetic run has no data to draw gradients from")
    b = batch or run.cfg.batch_size
    if groups < 3 or batches < 2 * groups or batches % groups:
        raise InputError(f"--batches {batches} --groups {groups}: at least 3 groups of at "
                         "least 2 batches each, the batches a multiple of the groups")
    if b < 1:
        raise InputError(f"--batch {b}: at least 1")
    names = [c[2].name for c in checkpoint.complete(Path(run_dir) / "checkpoints")
             if checkpoint.verify(c[2]) is None] if every else [run.checkpoint.name]
    if log:
        log(heading(batches, b))
    points = []
    for name in names:
        points.append(dict(_at(run_dir, name, batches, b, groups), checkpoint=name))
        if log:
            log(point_line(points[-1]))
    result = {"run": Path(run_dir).name, "seed": run.cfg.seed, "batch": b,
              "batches": batches, "groups": groups,
              "big_batch": batches // groups * b, "points": points, "reference": REFERENCE}
    write_json(Path(run_dir) / "noise_scale.json", result)
    return result


def _at(run_dir: str | Path, name: str, batches: int, b: int, groups: int) -> dict:
    """The two terms and B_simple at checkpoint `name`."""
    from hpctrain.train.data_feed import DataFeed
    from hpctrain.train.inference import import_tensorflow, load_run
    from hpctrain.train.losses import training_loss

    run = load_run(run_dir, name)
    tf = import_tensorflow()
    cfg = run.cfg.model_copy(update={"batch_size": b})
    feed = DataFeed.open(tf, cfg, 0, 1)
    if feed.steps < batches:
        raise InputError(f"--batches {batches} of {b}: the training split has "
                         f"{feed.steps * b} samples")
    loss_fn = tf.keras.losses.get(training_loss(tf, cfg.label_smoothing))
    variables = run.model.trainable_variables

    @tf.function
    def gradient(images, labels):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(labels, run.model(images, training=True)))
        grads = tape.gradient(loss, variables)
        return tf.concat([tf.reshape(tf.cast(g, tf.float64), [-1]) for g in grads], 0)

    per_group = batches // groups
    terms, small, total = [], [], None
    draws = iter(feed.batches(cfg.epochs))  # a new epoch's draw, as training would see it
    for _ in range(batches):
        images, labels = next(draws)
        g = gradient(images, labels).numpy()
        small.append(float(g @ g))
        total = g if total is None else total + g
        if len(small) == per_group:
            mean = total / per_group
            terms.append(group_terms(small, float(mean @ mean), b))
            small, total = [], None
    done = re.match(r"epoch-(\d+)", name)  # epochs completed when it was written
    return {"epoch": int(done.group(1)) if done else None, **combine(terms)}


def heading(batches: int, b: int) -> str:
    return (f"gradient noise scale B_simple from {batches} batches of {b} ({REFERENCE}): "
            "global batches well above it make few more useful updates per epoch than it does")


def point_line(p: dict) -> str:
    """One checkpoint's estimate, for a terminal."""
    if p["noise_scale"] is None:
        return (f"  {p['checkpoint']}: not measurable (the estimated |G|^2 is not positive: the "
                "gradient is buried in noise; more --batches, or an earlier checkpoint)")
    spread = (f" (95 % interval {p['noise_scale_low']:.0f} to {p['noise_scale_high']:.0f})"
              if p["noise_scale_low"] is not None else "")
    return f"  {p['checkpoint']}: {p['noise_scale']:.0f} samples{spread}"
