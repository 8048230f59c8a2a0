"""The statistics of a run report: throughput with a real confidence interval of its mean,
and the time to each accuracy threshold. Pure functions of the metrics rows."""

from __future__ import annotations

import math
import statistics

# Two-sided 95 % quantiles of Student's t by degrees of freedom (1-30), then by bands.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t95(df: int) -> float:
    if df < 1:
        raise ValueError("a t quantile needs at least one degree of freedom")
    if df <= len(_T95):
        return _T95[df - 1]
    return 2.021 if df <= 40 else 2.000 if df <= 60 else 1.980 if df <= 120 else 1.960


def interval95(values: list[float]) -> dict:
    """Mean, standard deviation and the 95 % confidence interval of the mean (half-width
    t(0.975, n-1) * sd / sqrt(n)). The samples (epochs, tenths of an epoch) follow each other
    in one run, so the interval says how well the mean is pinned down by this run, not how
    another run on another day would do."""
    if not values:
        return {"mean": None, "stdev": None, "ci95": None, "n": 0}
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "stdev": None, "ci95": None, "n": 1}
    sd = statistics.stdev(values)
    return {"mean": mean, "stdev": sd, "ci95": t95(len(values) - 1) * sd / len(values) ** 0.5,
            "n": len(values)}


def throughput(epochs: list[dict]) -> dict:
    """images/s mean and 95 % interval over the epochs that did not build the graph (the first
    epoch of the run and of every resumed segment); with none such, the tenths of the last
    epoch after its first tenth."""
    steady = [e["images_per_s"] for i, e in enumerate(epochs)
              if i > 0 and not e.get("first_in_segment", False)]
    resumed = sum(1 for e in epochs[1:] if e.get("first_in_segment", False))
    if steady:
        return {**interval95(steady), "basis": "epochs 2..N" + (
            f" without the first epoch of {resumed} resumed segment(s)" if resumed else "")}
    windows = epochs[-1].get("window_images_per_s", [])[1:] if epochs else []
    return {**interval95(windows), "basis": f"epoch {len(epochs)}, tenths 2..10"}


def time_to_accuracy(epochs: list[dict], thresholds: list[float]) -> dict[str, float | None]:
    """Seconds from training start to the end of the first epoch whose test accuracy reaches
    each threshold (evaluation included, as MLPerf counts it); None if never reached."""
    out = {}
    for t in thresholds:
        hit = next((e for e in epochs if (e["val_accuracy"] or 0.0) >= t), None)
        out[f"{t:.2f}"] = hit["elapsed_s"] if hit else None
    return out


def samples_to_resolve(values: list[float], goal: float, log: bool = False,
                      most: int = 1000) -> int | None:
    """Samples (rounds, processes, seeds) at the same spread after which the 95 % interval
    would clear `goal`; None when even `most` would not (the mean sits on the goal)."""
    xs = [math.log(v) for v in values] if log else list(values)
    if len(xs) < 2:
        return None
    mean, sd = statistics.fmean(xs), statistics.stdev(xs)
    gap = abs(mean - (math.log(goal) if log else goal))
    for n in range(len(xs) + 1, most + 1):
        if t95(n - 1) * sd / math.sqrt(n) < gap:
            return n
    return None
