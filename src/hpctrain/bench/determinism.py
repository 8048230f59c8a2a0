"""Benchmark 7, op determinism: what TensorFlow op determinism (`deterministic: true`,
hpctrain's default: bitwise-repeatable runs) costs, the same short 1-rank run with it on and
off, alternating, the order reversed every other round. No goal: the figure says what
`deterministic: false` would buy on this CPU.

    python -m hpctrain.bench --only determinism --rounds 5
"""

from __future__ import annotations

from hpctrain.bench.harness import (
    alternate,
    fmt_ratio,
    fmt_spread,
    paired_ratio,
    spread,
    with_inputs,
)
from hpctrain.bench.runs import BENCH_CONFIG, hpctrain_run

THREADS = 2
SHORT = ["epochs=1", "train_limit=12000", "test_limit=2000"]
ON, OFF = "deterministic: true (the default)", "deterministic: false"


def run(data: str, rounds: int, train_limit: int = 0) -> dict:
    del train_limit  # the config's short variant

    def one(deterministic: bool):
        return lambda: hpctrain_run(BENCH_CONFIG, [f"data={data}", f"deterministic={deterministic}",
                                             f"threads={THREADS}", *SHORT
                                             ])["images_per_s"]["mean"]

    samples = alternate({ON: one(True), OFF: one(False)}, rounds)
    return with_inputs(summarize, samples=samples, config=BENCH_CONFIG, threads=THREADS)


def summarize(samples: dict[str, list[float]], config: str, threads: int) -> dict:
    ratio = paired_ratio(samples[ON], samples[OFF])
    low, high = ratio["low"], ratio["high"]
    interval = (f"95 % interval {low:.3f}-{high:.3f}" if low is not None
                else "one round: no interval")
    md = "\n".join([
        f"`{config}` (the workshop CNN), 1 rank, {threads} threads, images/s as the run "
        f"reports them; {len(ratio['per_round'])} rounds, variants alternating.", "",
        "| variant | images/s median (min-max) |", "|---|---|",
        *(f"| {name} | {fmt_spread(spread(v))} |" for name, v in samples.items()), "",
        f"**With op determinism / without: {fmt_ratio(ratio, 3)}** ({interval})."])
    headline = {"benchmark": "7. Op determinism: images/s with / without "
                             "(`deterministic: true`, the default)",
                "result": f"**{fmt_ratio(ratio, 3)}** ({interval})",
                "verdict": "no goal: what `deterministic: false` buys on this CPU"}
    return {"name": "determinism", "ratio": ratio, "headline": headline, "markdown": md}
