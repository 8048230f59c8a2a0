"""The statistics of a run report: throughput with a real confidence interval of its mean,
and the time to each accuracy threshold. Pure functions of the metrics rows."""

from __future__ import annotations

import functools
import math
import statistics


def t_within(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with `df` (integer) degrees of freedom, exactly: the finite
    series in theta = atan(t / sqrt(df)) (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        if df == 1:
            return 2 * theta / math.pi
        for k in range(1, (df - 3) // 2 + 1):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    for k in range(1, (df - 2) // 2 + 1):  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


@functools.lru_cache(maxsize=4096)
def t_quantile(df: int, confidence: float = 0.95) -> float:
    """The two-sided quantile of Student's t: the t with P(|T| < t) = `confidence` (e.g.
    2.262 for 9 degrees of freedom at 95 %), found by bisection on t_within between the
    normal quantile (never above t's) and a bound doubled until it holds."""
    if df < 1:
        raise ValueError("a t quantile needs at least one degree of freedom")
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie between 0 and 1")
    low = statistics.NormalDist().inv_cdf((1 + confidence) / 2)
    high = 2 * low
    while t_within(high, df) < confidence:
        low, high = high, 2 * high
    while low < (mid := (low + high) / 2) < high:  # to the last bit
        low, high = (mid, high) if t_within(mid, df) < confidence else (low, mid)
    return high


def t95(df: int) -> float:
    return t_quantile(df, 0.95)


def confidence_for_looks(looks: int, confidence: float = 0.95) -> float:
    """The confidence each interval must have when a growing sample is judged `looks` times
    (seeds added after each verdict was read), so that the chance of any false verdict over
    all the looks stays within 1 - `confidence` (Bonferroni): 0.983 for three looks at 95 %.
    One interval judged once keeps `confidence`."""
    return 1 - (1 - confidence) / max(1, looks)


def half_width(values: list[float], confidence: float = 0.95) -> float | None:
    """The half-width of the `confidence` interval of the mean, Student's t; None below two
    values."""
    if len(values) < 2:
        return None
    return t_quantile(len(values) - 1, confidence) * statistics.stdev(values) \
        / len(values) ** 0.5


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
    return {"mean": mean, "stdev": statistics.stdev(values), "ci95": half_width(values),
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
                      most: int = 1000, confidence: float = 0.95) -> int | None:
    """Samples (rounds, processes, seeds) at the same spread after which the `confidence`
    interval would clear `goal`; None when even `most` would not (the mean sits on the
    goal)."""
    xs = [math.log(v) for v in values] if log else list(values)
    if len(xs) < 2:
        return None
    mean, sd = statistics.fmean(xs), statistics.stdev(xs)
    gap = abs(mean - (math.log(goal) if log else goal))

    def clears(n: int) -> bool:  # t(n - 1) / sqrt(n) falls as n grows: search by halves
        return t_quantile(n - 1, confidence) * sd / math.sqrt(n) < gap

    low, high = len(xs), most  # clears(high) and not clears(low), once checked
    if high <= low or not clears(high):
        return None
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if clears(mid) else (mid, high)
    return high
