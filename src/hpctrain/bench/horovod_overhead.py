"""Benchmark 3, Horovod overhead: the same global batch on this machine's 2 cores as 2 ranks
x 1 thread (what a 2-node job does) and as 1 rank x 2 threads, for hpctrain and for plain
Keras with Horovod's own recipe; and the 2-rank run under each tuning (environment
variables of Open MPI and Horovod, thread settings), so what helps is measured, not assumed.
The headline: hpctrain 2 x 1 against the fastest way to use the same cores in one process,
plain Keras 1 x 2, which runs as written and with the allocator settings hpctrain applies to
itself (train/malloc.py, as environment variables); the faster of the two by median is the
denominator. Horovod's recipe runs as written and with the Open MPI and Horovod settings
hpctrain applies before hvd.init (JobEnvironment.tune_before_init) and its allocator
settings, both shown.
Ranks run under horovodrun on this host (no Slurm: job overhead is benchmark 5's).
"""

from __future__ import annotations

import statistics

from hpctrain.bench.harness import (
    alternate,
    fmt_ratio,
    fmt_spread,
    paired_ratio,
    spread,
    verdict,
    with_inputs,
)
from hpctrain.bench.runs import BENCH_CONFIG, hpctrain_run, plain_run, throughput_args
from hpctrain.environment import JobEnvironment
from hpctrain.train import malloc

GOAL = 0.90
FASTEST = "plain Keras 1 x 2"  # the headline's denominator: one process on both cores
FASTEST_TUNED = "plain Keras 1 x 2, hpctrain's allocator settings"  # or this, if faster
RECIPE = "Horovod recipe 2 x 1"
RECIPE_TUNED = "Horovod recipe 2 x 1, hpctrain's Open MPI, Horovod and allocator settings"
TUNED = JobEnvironment(size=2).tune_before_init({})  # what hpctrain sets for 2 ranks

# name -> (config overrides, environment) of a 2-rank hpctrain run
# (hpctrain's default since this benchmark: Open MPI yields when idle, environment.py)
TUNINGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "2 x 1, Open MPI busy-polls (the old default)": ([], {"OMPI_MCA_mpi_yield_when_idle": "0"}),
    "2 x 1, Horovod cycle 0.1 ms": ([], {"HOROVOD_CYCLE_TIME": "0.1"}),
}


def run(data: str, rounds: int, train_limit: int, global_batch: int = 256, epochs: int = 3,
        tunings: dict[str, tuple[list[str], dict[str, str]]] | None = None) -> dict:
    tunings = TUNINGS if tunings is None else tunings
    half = global_batch // 2

    def args(ranks: int) -> tuple[list[str], list[str]]:
        threads, batch = (2, global_batch) if ranks == 1 else (1, half)
        return throughput_args(data, epochs=epochs, train_limit=train_limit, batch=batch,
                               threads=threads)

    def hp(ranks: int, extra: list[str] | None = None, env: dict[str, str] | None = None):
        return lambda: hpctrain_run(BENCH_CONFIG, [*args(ranks)[0], *(extra or [])], ranks,
                                    env)["images_per_s"]["mean"]

    def pk(ranks: int, env: dict[str, str] | None = None):
        return lambda: plain_run(args(ranks)[1], ranks, env)["images_per_s"]

    variants = {"hpctrain 1 x 2": hp(1), "hpctrain 2 x 1": hp(2),
                FASTEST: pk(1), FASTEST_TUNED: pk(1, malloc.environment()), RECIPE: pk(2),
                RECIPE_TUNED: pk(2, TUNED | malloc.environment()),
                **{f"hpctrain {name}": hp(2, extra, env)
                   for name, (extra, env) in tunings.items()}}
    return with_inputs(summarize, samples=alternate(variants, rounds),
                       train_limit=train_limit, global_batch=global_batch, epochs=epochs)


def summarize(samples: dict[str, list[float]], train_limit: int, global_batch: int,
              epochs: int) -> dict:
    rounds = len(samples[FASTEST])
    # the faster single process by median (runs stored before the tuned one have one)
    best = max((n for n in (FASTEST, FASTEST_TUNED) if n in samples),
               key=lambda n: statistics.median(samples[n]))
    ratio = paired_ratio(samples["hpctrain 2 x 1"], samples[best])
    own = paired_ratio(samples["hpctrain 2 x 1"], samples["hpctrain 1 x 2"])
    recipes = {name: paired_ratio(samples[name], samples[best])
               for name in samples if name.startswith(RECIPE)}
    rows = [f"| {name} | {fmt_spread(spread(v))} | {fmt_ratio(paired_ratio(v, samples[best]))}"
            f" | {fmt_ratio(paired_ratio(v, samples['hpctrain 1 x 2']))} |"
            for name, v in samples.items()]
    denominator = (best if FASTEST_TUNED in samples
                   else f"{best} as written; this run has no tuned one")
    md = "\n".join([
        f"The workshop CNN on Fashion-MNIST ({train_limit:,} training images, global batch "
        f"{global_batch}, {epochs} epochs, images/s of all ranks over epochs 2..{epochs}); "
        f"ranks x threads per rank on 2 cores; {rounds} rounds, variants alternating.", "",
        f"| variant | images/s median (min-max) | vs {best} | vs hpctrain 1 x 2 |",
        "|---|---|---|---|", *rows, "",
        *(f"{name} / {best}: {fmt_ratio(r)}." for name, r in recipes.items()),
        f"hpctrain 2 x 1 / hpctrain 1 x 2: {fmt_ratio(own)}.", "",
        f"**hpctrain 2 x 1 / {best}: {fmt_ratio(ratio)}**, {verdict(ratio, GOAL)}."])
    headline = {"benchmark": "3. Horovod overhead: hpctrain 2 ranks x 1 thread / plain Keras 1 "
                             f"rank x 2 threads (the fastest one process; denominator: "
                             f"{denominator}), global batch {global_batch}",
                "result": f"**{fmt_ratio(ratio)}**; " + "; ".join(
                    f"{name}: {fmt_ratio(r)}" for name, r in recipes.items()),
                "verdict": verdict(ratio, GOAL)}
    return {"name": "horovod_overhead", "ratio": ratio, "ratio_own_1x2": own,
            "recipe_ratios": recipes, "goal": GOAL,
            "headline": headline,
            "images_per_s": {k: spread(v) for k, v in samples.items()}, "markdown": md}
