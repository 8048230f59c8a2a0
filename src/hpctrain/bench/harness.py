"""Side-by-side measurement and the one verdict rule of every benchmark.

Variants run in alternation, the order reversed every other round (A B C C B A A B C ...), so
that the machine's drift hits all alike and no variant always runs in the same place (right
after another one's process, say). Ratios are taken within a round (B_i / A_i), where drift
cancels, and summarised by their median, min-max and a 95 % interval (Student's t on the
logarithms of the per-round ratios: a ratio's errors multiply). Absolute numbers are context
only: machines of one kind differ by 4x and drift within a session.

The verdict rule, for every goal: **met** when the 95 % interval lies on the goal's side,
**missed** when it lies on the other side, **not resolved** when it straddles the goal (and
then how many rounds at the same spread would resolve it).

    samples = alternate({"plain": run_plain, "hpctrain": run_hpctrain}, rounds=5)
    ratio = paired_ratio(samples["hpctrain"], samples["plain"])  # median, interval, rounds
    verdict(ratio, goal=0.97)          # "goal >= 0.97: **met** (95 % interval 0.98-1.01)"
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from hpctrain.report.statistics import interval95, samples_to_resolve


def alternate(variants: dict[str, Callable[[], Any]], rounds: int,
              log: Callable[[str], None] | None = None, key: str | None = None
              ) -> dict[str, list]:
    """Run every variant once per round, `rounds` times, in the given order in odd rounds and
    in reverse in even ones (a linear drift then costs every variant the same over each pair
    of rounds, and neighbours stay neighbours, so pairs within a round stay close in time);
    each call returns one sample (images/s, seconds, ...; or a dict of them, whose `key` is
    logged). A variant that raises stops the benchmark."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    samples: dict[str, list] = {name: [] for name in variants}
    for i in range(rounds):
        order = list(variants.items())
        for name, run in order if i % 2 == 0 else reversed(order):
            start = time.perf_counter()
            value = run()
            samples[name].append(value)
            log(f"  round {i + 1}/{rounds} {name}: {value[key] if key else value:,.4g} "
                f"({time.perf_counter() - start:.0f} s)")
    return samples


def spread(values: list[float]) -> dict:
    """Median and min-max of samples, the spread (max - min) / median, and the 95 % interval
    of their mean (for a goal in absolute units, such as seconds)."""
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / med if med else None, "samples": values,
            **interval(values)}


def paired_ratio(a: list[float], b: list[float], groups: list[int] | None = None) -> dict:
    """a_i / b_i per round, summarised: the rounds ran side by side, so drift cancels. The
    95 % interval is of the ratios' geometric mean (t on their logarithms).

    `groups`: the process each round ran in, when the rounds came from several processes.
    Rounds of one process share what that process drew once (where its buffers landed, its
    threads' placement), so they are not independent: the interval is then over the
    processes, each one's geometric mean a sample (`per_process`), and `n` counts processes."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_ratio needs the same non-zero number of samples")
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    summary = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
               "per_round": ratios}
    if groups is None:
        return {**summary, **interval(ratios, log=True)}
    if len(groups) != len(ratios):
        raise ValueError("paired_ratio: one group per round")
    per_process = [math.exp(statistics.fmean(math.log(r) for r, g in zip(ratios, groups,
                                                                        strict=True) if g == k))
                   for k in sorted(set(groups))]
    return {**summary, "per_process": per_process, "rounds": len(ratios),
            **interval(per_process, log=True)}


def interval(values: list[float], log: bool = False) -> dict:
    """The 95 % interval of the values' mean ({"low", "high", "n"}; None below 2 values), on
    their logarithms when `log` (ratios, rates)."""
    xs = [math.log(v) for v in values] if log else list(values)
    iv = interval95(xs)
    if iv["ci95"] is None:
        return {"low": None, "high": None, "n": len(values)}
    low, high = iv["mean"] - iv["ci95"], iv["mean"] + iv["ci95"]
    if log:
        low, high = math.exp(low), math.exp(high)
    return {"low": low, "high": high, "n": len(values)}


def verdict(summary: dict, goal: float, higher_is_better: bool = True, unit: str = "",
            digits: int = 3) -> str:
    """The rule: met when the 95 % interval lies on the goal's side, missed when it lies on
    the other, not resolved when it straddles the goal. `summary`: paired_ratio's (or any
    {"low", "high", "n", and "per_round" or "samples"})."""
    low, high, n = summary.get("low"), summary.get("high"), summary.get("n", 0)
    side = ">=" if higher_is_better else "<="
    head = f"goal {side} {goal:g}{unit}: "
    if low is None or high is None:
        what = "process" if "per_process" in summary else "round"
        return head + f"**not resolved** ({n} {what}{'s' * (n != 1)}: no interval)"
    each = summary.get("rounds", 0) // max(n, 1)
    over = (f"{n} processes x {each} round{'s' * (each != 1)}" if "per_process" in summary
            else f"{n} rounds")
    span = f"95 % interval {low:.{digits}f}-{high:.{digits}f}{unit}, {over}"
    good, bad = (low >= goal, high < goal) if higher_is_better else (high <= goal, low > goal)
    if good:
        return head + f"**met** ({span})"
    if bad:
        return head + f"**missed** ({span})"
    values = summary.get("per_process", summary.get("per_round", summary.get("samples", [])))
    more = samples_to_resolve(values, goal, log="per_round" in summary)
    what = "processes" if "per_process" in summary else "rounds"
    need = (f"about {more} {what} at this spread would resolve it" if more else
            "its centre sits on the goal: more rounds would not resolve it")
    return head + f"**not resolved** ({span}, straddles the goal; {need})"


def with_inputs(summarize: Callable[..., dict], **inputs: Any) -> dict:
    """summarize(**inputs) with the inputs kept (samples and settings, JSON-able), so that
    `python -m hpctrain.bench --render` can render the markdown again from the stored JSON."""
    return {**summarize(**inputs), "inputs": inputs}


def fmt_ratio(r: dict, digits: int = 2) -> str:
    """median (min-max)."""
    return f"{r['median']:.{digits}f} ({r['min']:.{digits}f}-{r['max']:.{digits}f})"


def fmt_spread(s: dict, unit: str = "", digits: str = ",.0f") -> str:
    return (f"{s['median']:{digits}}{unit} ({s['min']:{digits}}-{s['max']:{digits}}, "
            f"n={s['n']})")
