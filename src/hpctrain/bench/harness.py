"""Side-by-side measurement: variants run in alternation, the order reversed every other round
(A B C C B A A B C ...), so that the machine's drift hits all alike and no variant always
runs in the same place (right after another one's process, say); each variant's samples
summarised by median and min-max; ratios taken within a round (B_i / A_i) and summarised by
their median and min-max, which is what the benchmarks report. Absolute numbers are context
only: machines of one kind differ by 4x and drift within a session.

    samples = alternate({"plain": run_plain, "hpctrain": run_hpctrain}, rounds=3)
    ratio = paired_ratio(samples["hpctrain"], samples["plain"])   # {"median", "min", "max"}
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


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
    """Median and min-max of samples, and the spread (max - min) / median."""
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values), "n": len(values),
            "spread": (max(values) - min(values)) / med if med else None, "samples": values}


def paired_ratio(a: list[float], b: list[float]) -> dict:
    """a_i / b_i per round, summarised: the rounds ran side by side, so drift cancels."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_ratio needs the same non-zero number of samples")
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "per_round": ratios}


def met(ratio: float, goal: float, higher_is_better: bool = True) -> str:
    ok = ratio >= goal if higher_is_better else ratio <= goal
    return "**met**" if ok else "**not met**"


def verdict(ratio: float, goal: float, higher_is_better: bool = True, unit: str = "") -> str:
    return (f"goal {'>=' if higher_is_better else '<='} {goal:g}{unit}: "
            + met(ratio, goal, higher_is_better))


def fmt_ratio(r: dict, digits: int = 2) -> str:
    return f"{r['median']:.{digits}f} ({r['min']:.{digits}f}-{r['max']:.{digits}f})"


def fmt_spread(s: dict, unit: str = "", digits: str = ",.0f") -> str:
    return (f"{s['median']:{digits}}{unit} ({s['min']:{digits}}-{s['max']:{digits}}, "
            f"n={s['n']})")
