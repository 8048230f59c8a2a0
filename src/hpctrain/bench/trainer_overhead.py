"""Benchmark 1, trainer overhead: `hpctrain train` against plain Keras `model.fit` on the same
model, data, batch and threads, 1 rank; and what each of hpctrain's per-step mechanisms
costs on its own (the run without it, `without=[...]`, against the full run), op
determinism included (`deterministic=false`). Images/s over epochs 2..N, as each run
measures itself (epoch time without the evaluation).

Two phases. The headline pair alone, for HEADLINE_ROUNDS x `rounds` rounds: on this machine
two runs side by side differ by about 6 % (standard deviation of their ratio), so telling
0.97 from 1.00 takes 12 or more pairs; then the mechanisms, `rounds` rounds.
"""

from __future__ import annotations

from hpctrain.bench.harness import alternate, fmt_ratio, fmt_spread, paired_ratio, spread, verdict
from hpctrain.bench.runs import hpctrain_run, plain_run, throughput_args
from hpctrain.report.statistics import interval95
from hpctrain.train.config import MECHANISMS

GOAL = 0.97
CONFIG = "jobs/configs/fmnist_cnn.yaml"
HEADLINE_ROUNDS = 4  # x `rounds`: the headline pair's rounds


def run(data: str, rounds: int, train_limit: int, threads: int = 2, batch: int = 128,
        epochs: int = 3) -> dict:
    same, plain = throughput_args(data, epochs=epochs, train_limit=train_limit, batch=batch,
                                  threads=threads)

    def hp(*extra: str):
        return lambda: hpctrain_run(CONFIG, [*same, *extra])["images_per_s"]["mean"]

    headline = alternate({"plain Keras": lambda: plain_run(plain)["images_per_s"],
                          "hpctrain": hp()}, HEADLINE_ROUNDS * rounds)
    mechanisms = alternate({"hpctrain": hp(),
                            "hpctrain, deterministic=false": hp("deterministic=false"),
                            **{f"hpctrain without {m}": hp(f"without=[{m}]")
                               for m in MECHANISMS}}, rounds)
    return summarize(headline, mechanisms, train_limit, threads, batch, epochs)


def summarize(headline: dict[str, list[float]], mechanisms: dict[str, list[float]],
              train_limit: int, threads: int, batch: int, epochs: int) -> dict:
    ratio = paired_ratio(headline["hpctrain"], headline["plain Keras"])
    mean = interval95(ratio["per_round"])
    full = mechanisms["hpctrain"]
    costs = {("op determinism" if "deterministic" in name else name.split("without ")[1]):
             1 - paired_ratio(full, v)["median"]
             for name, v in mechanisms.items() if name != "hpctrain"}
    interval = (f"{mean['mean']:.3f} ± {mean['ci95']:.3f}" if mean["ci95"] is not None
                else f"{mean['mean']:.3f}")
    md = "\n".join([
        f"The workshop CNN on Fashion-MNIST ({train_limit:,} training images, batch {batch}, "
        f"{threads} threads, {epochs} epochs, images/s over epochs 2..{epochs}), 1 rank. "
        f"First the two alone, {len(ratio['per_round'])} rounds alternating:", "",
        "| variant | images/s median (min-max) | vs plain Keras |", "|---|---|---|",
        *(f"| {name} | {fmt_spread(spread(v))} | "
          f"{fmt_ratio(paired_ratio(v, headline['plain Keras']))} |"
          for name, v in headline.items()), "",
        f"**hpctrain / plain Keras: {fmt_ratio(ratio)}** (median, min-max of the rounds; "
        f"mean {interval}, 95 % t-interval), {verdict(ratio['median'], GOAL)}.", "",
        f"Then each per-step mechanism: the full run against runs without it, "
        f"{len(full)} rounds alternating. Its cost is 1 - (full run / run without it).", "",
        "| variant | images/s median (min-max) | vs hpctrain |", "|---|---|---|",
        *(f"| {name} | {fmt_spread(spread(v))} | {fmt_ratio(paired_ratio(v, full))} |"
          for name, v in mechanisms.items()), "",
        "Cost of each (the rate it takes away from the full run, median of the rounds): "
        + ", ".join(f"{k} {100 * v:.1f} %" for k, v in costs.items())
        + ". A cost below zero means the run without the mechanism was the slower one: the "
        "mechanism costs less than this machine resolves in these rounds (two runs side by "
        f"side differ by {100 * (mean['stdev'] or 0):.0f} % here, the standard deviation of "
        "the headline's per-round ratios)."])
    return {"name": "trainer_overhead", "ratio": ratio, "ratio_mean": mean, "goal": GOAL,
            "costs": costs,
            "images_per_s": {"headline": {k: spread(v) for k, v in headline.items()},
                             "mechanisms": {k: spread(v) for k, v in mechanisms.items()}},
            "markdown": md}
