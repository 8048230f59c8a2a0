"""Benchmark 1, trainer overhead: `hpctrain train` against plain Keras `model.fit` on the same
model, data, batch and threads, 1 rank; and what each of hpctrain's per-step mechanisms
costs on its own (the run without it, `without=[...]`, against the full run), op
determinism included (`deterministic=false`). Images/s over epochs 2..N, as each run
measures itself (epoch time without the evaluation).
"""

from __future__ import annotations

from hpctrain.bench.harness import alternate, fmt_ratio, fmt_spread, paired_ratio, spread, verdict
from hpctrain.bench.runs import hpctrain_run, plain_run, throughput_args
from hpctrain.train.config import MECHANISMS

GOAL = 0.97
CONFIG = "jobs/configs/fmnist_cnn.yaml"


def run(data: str, rounds: int, train_limit: int, threads: int = 2, batch: int = 128,
        epochs: int = 3) -> dict:
    same, plain = throughput_args(data, epochs=epochs, train_limit=train_limit, batch=batch,
                                  threads=threads)

    def hp(*extra: str):
        return lambda: hpctrain_run(CONFIG, [*same, *extra])["images_per_s"]["mean"]

    variants = {"plain Keras": lambda: plain_run(plain)["images_per_s"],
                "hpctrain": hp(),
                "hpctrain, deterministic=false": hp("deterministic=false"),
                **{f"hpctrain without {m}": hp(f"without=[{m}]") for m in MECHANISMS}}
    return summarize(alternate(variants, rounds), rounds, train_limit, threads, batch, epochs)


def summarize(samples: dict[str, list[float]], rounds: int, train_limit: int, threads: int,
              batch: int, epochs: int) -> dict:
    full = samples["hpctrain"]
    ratio = paired_ratio(full, samples["plain Keras"])
    rows = []
    for name, values in samples.items():
        vs_plain = paired_ratio(values, samples["plain Keras"])
        vs_full = paired_ratio(values, full)
        rows.append(f"| {name} | {fmt_spread(spread(values))} | {fmt_ratio(vs_plain)} | "
                    f"{fmt_ratio(vs_full)} |")
    costs = {("op determinism" if "deterministic" in name else name.split("without ")[1]):
             1 - paired_ratio(full, v)["median"]
             for name, v in samples.items() if name.startswith("hpctrain,") or "without" in name}
    md = "\n".join([
        f"The workshop CNN on Fashion-MNIST ({train_limit:,} training images, batch {batch}, "
        f"{threads} threads, {epochs} epochs, images/s over epochs 2..{epochs}), 1 rank; "
        f"{rounds} rounds, variants alternating. A mechanism's cost is 1 - (full run / run "
        "without it).", "",
        "| variant | images/s median (min-max) | vs plain Keras | vs hpctrain |",
        "|---|---|---|---|", *rows, "",
        "Cost of each mechanism (the rate it takes away from the full run, median of the "
        "rounds): " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in costs.items())
        + f". A cost below zero means the run without the mechanism was the slower one: "
        f"what the mechanism costs is smaller than this machine's noise, whose size the "
        f"hpctrain / plain Keras ratios of the {rounds} rounds show ({fmt_ratio(ratio)}).", "",
        f"**hpctrain / plain Keras: {fmt_ratio(ratio)}**, {verdict(ratio['median'], GOAL)}."])
    return {"name": "trainer_overhead", "ratio": ratio, "goal": GOAL, "costs": costs,
            "images_per_s": {k: spread(v) for k, v in samples.items()}, "markdown": md}
