"""Benchmark 1, trainer overhead: `hpctrain train` against plain Keras `model.fit` on the same
model, data, batch and threads, 1 rank. Images/s over epochs 2..N, as each run measures
itself (epoch time without the evaluation).

Three parts:
- The headline: the workshop CNN, hpctrain and the baseline alone for HEADLINE_ROUNDS x
  `rounds` rounds, the processes started together and their epochs taken in turns
  (train/turns.py), so each epoch of one is measured seconds from an epoch of the other. The
  baseline runs twice in each round: as written and with the allocator settings hpctrain
  applies to itself (train/malloc.py, as environment variables: a user's way to give them
  to any program); the faster of the two by median is the denominator. Why in turns: on
  this host two whole runs minutes apart differ by about 10 % (the standard deviation of
  their ratio), and a run's epochs give several pairs each. A round's ratio is the
  geometric mean of its epochs' ratios; the interval is over rounds (the epochs of one set
  of processes are not independent samples).
- The profile: the same pair on a null model (softmax regression, NULL_MODEL), whose step is
  so short that what hpctrain adds per step (its reader, its callbacks, the ops it puts into
  the training step) is a large, resolvable share of it. The per-step overhead in
  microseconds, batch * (1/hpctrain's rate - 1/plain's rate), is then measured with each
  per-step mechanism switched off (`without=[...]`; op determinism: `deterministic=false`),
  and with all of them off: what remains is the reader and Keras' callback loop.
- Costs in proportion to the model's compute, which the null model cannot show: op
  determinism's kernels and Horovod's background thread beside the CNN's step, measured in
  one process (bench/compute_costs.py), where 1 % can be resolved.
The implied ratio: the CNN's step time over itself plus the per-step overhead (without op
determinism's, which the third part measures whole), times the third part's ratios.
"""

from __future__ import annotations

import math
import statistics
import sys
import time

from hpctrain.bench import compute_costs
from hpctrain.bench.harness import (
    alternate,
    fmt_ratio,
    fmt_spread,
    paired_ratio,
    spread,
    verdict,
    with_inputs,
)
from hpctrain.bench.runs import (
    BENCH_CONFIG,
    compute_costs_run,
    hpctrain_run,
    in_turns,
    plain_run,
    throughput_args,
)
from hpctrain.environment import JobEnvironment
from hpctrain.experiment import MECHANISMS
from hpctrain.report.statistics import interval95
from hpctrain.train import malloc

GOAL = 0.97
HEADLINE_ROUNDS = 2  # x `rounds`: the headline pair's rounds (processes started together)
HEADLINE_EPOCHS = 8  # per process; epochs 2..8 are taken in turns, 7 pairs a round
NULL_MODEL = "softmax"  # Flatten + Dense: a step of about 0.5 ms against the CNN's 20 ms
NULL_EPOCHS = 6  # on all 60,000 images: epochs 2..6 are timed, about 1.5 s
COMPUTE_ROUNDS = 100  # epochs of 30 CNN steps per variant in one process: enough to resolve
# ~1 % there, so more headline rounds (`rounds`) do not add more of them
DETERMINISM = "op determinism"
ALL_OFF = "all five off"
PLAIN = "plain Keras"
PLAIN_TUNED = "plain Keras, hpctrain's allocator settings"
LABELS = {"hpctrain": "hpctrain", DETERMINISM: "hpctrain, deterministic=false",
          ALL_OFF: "hpctrain without all four and op determinism"}  # else: without <name>


def run(data: str, rounds: int, train_limit: int, threads: int = 2, batch: int = 128,
        epochs: int = HEADLINE_EPOCHS) -> dict:
    def pair(model: str, n_epochs: int, limit: int):
        same, plain = throughput_args(data, epochs=n_epochs, train_limit=limit, batch=batch,
                                      threads=threads, model=model)

        def hp(*extra: str):
            return lambda: hpctrain_run(BENCH_CONFIG, [*same, *extra])["images_per_s"]["mean"]

        return (lambda: plain_run(plain)["images_per_s"]), hp

    same, plain_args = throughput_args(data, epochs=epochs, train_limit=train_limit,
                                       batch=batch, threads=threads)
    headline = []
    for i in range(HEADLINE_ROUNDS * rounds):
        start = time.perf_counter()
        headline.append(in_turns(BENCH_CONFIG, same, plain_args, rotation=i,
                                 plains={PLAIN: {}, PLAIN_TUNED: malloc.environment()}))
        ratios = {side: geomean(paired_ratio(headline[-1]["hpctrain"], v)["per_round"])
                  for side, v in headline[-1].items() if side != "hpctrain"}
        print(f"  round {i + 1}/{HEADLINE_ROUNDS * rounds} in turns: hpctrain / "
              + ", ".join(f"{side} {r:.3f}" for side, r in ratios.items())
              + f" ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    plain, hp = pair(NULL_MODEL, NULL_EPOCHS, 0)
    every = ",".join(MECHANISMS)
    null = alternate({PLAIN: plain, "hpctrain": hp(),
                      DETERMINISM: hp("deterministic=false"),
                      **{m: hp(f"without=[{m}]") for m in MECHANISMS},
                      ALL_OFF: hp(f"without=[{every}]", "deterministic=false")}, rounds)
    compute = compute_costs_run(["--data", data, "--rounds", str(COMPUTE_ROUNDS),
                                 "--batch", str(batch), "--threads", str(threads)])
    return with_inputs(summarize, headline=headline, null=null, train_limit=train_limit,
                       threads=threads, batch=batch, epochs=epochs,
                       compute={"ms_per_step": compute["ms_per_step"],
                                "steps": compute["steps"]})


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def by_round(headline: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Each side's images/s per round: the geometric mean of the round's epochs (the ratio
    of two is then the geometric mean of the round's epoch ratios)."""
    return {side: [geomean(r[side]) for r in headline] for side in headline[0]}


def step_us(rate: float, batch: int) -> float:
    """A step's microseconds at `rate` images/s."""
    return batch * 1e6 / rate


def per_step_us(rates: list[float], plain: list[float], batch: int) -> list[float]:
    """What a variant adds to plain Keras's step, in microseconds, round by round."""
    return [step_us(r, batch) - step_us(p, batch) for r, p in zip(rates, plain, strict=True)]


def in_process(compute: dict) -> dict[str, dict]:
    """bench/compute_costs.py's samples: per variant its ms a step, and its step rate over
    plain Keras's, round by round."""
    ms = compute["ms_per_step"]
    plain = ms[compute_costs.PLAIN]
    return {name: {"ms": spread(v), "ratio": paired_ratio(plain, v)} for name, v in ms.items()}


def summarize(headline: list[dict[str, list[float]]], null: dict[str, list[float]],
              train_limit: int, threads: int, batch: int, epochs: int, compute: dict) -> dict:
    sides = by_round(headline)
    # the denominator: the faster baseline by median (as written, or with the allocator
    # settings; runs stored before the second baseline have the first alone)
    best = max((n for n in sides if n != "hpctrain"), key=lambda n: statistics.median(sides[n]))
    hp_epochs, base_epochs = ([e for r in headline for e in r[side]]
                              for side in ("hpctrain", best))
    epoch_pairs = paired_ratio(hp_epochs, base_epochs)
    ratio = paired_ratio(sides["hpctrain"], sides[best])
    mean = interval95(ratio["per_round"])
    interval = (f"{mean['mean']:.3f} ± {mean['ci95']:.3f}" if mean["ci95"] is not None
                else f"{mean['mean']:.3f}")
    cnn_step_us = step_us(statistics.median(sides[PLAIN]), batch)
    added = {name: per_step_us(v, null[PLAIN], batch) for name, v in null.items()
             if name != PLAIN}
    full = added["hpctrain"]
    # a mechanism's cost: the full run's overhead minus the overhead without it, per round
    costs = {name: statistics.median(f - w for f, w in zip(full, v, strict=True))
             for name, v in added.items() if name not in ("hpctrain", ALL_OFF)}
    overhead = statistics.median(full)
    rest = statistics.median(added[ALL_OFF])
    cnn = in_process(compute)
    ours = compute_costs.horovod_variant(JobEnvironment.ONE_RANK_CYCLE_MS)
    det_ratio = cnn[compute_costs.DETERMINISM]["ratio"]["median"]
    hvd_ratio = cnn[ours]["ratio"]["median"]
    # op determinism is measured whole on the CNN: its per-step part leaves the overhead
    per_step_only = overhead - costs[DETERMINISM]
    implied = cnn_step_us / (cnn_step_us + per_step_only) * det_ratio * hvd_ratio
    whose = {compute_costs.horovod_variant(compute_costs.HOROVOD_DEFAULT_CYCLE_MS):
             " (Horovod's default)",
             ours: " (hpctrain's with one rank)"}

    def row(name: str) -> str:
        v = added[name]
        what = LABELS.get(name, f"hpctrain without {name}")
        cost = "" if name in ("hpctrain", ALL_OFF) else f"{costs[name]:,.0f}"
        return (f"| {what} | {fmt_spread(spread(null[name]))} | "
                f"{statistics.median(v):,.0f} ({min(v):,.0f} to {max(v):,.0f}) | {cost} |")

    tuned_baseline = "" if PLAIN_TUNED not in sides else (
        " The baseline runs twice: as written and with the allocator settings hpctrain "
        "applies to itself, given as environment variables ("
        + " ".join(f"`{k}={v}`" for k, v in malloc.environment().items())
        + f"); the faster by median, {best}, is the denominator.")
    md = "\n".join([
        f"The workshop CNN on Fashion-MNIST ({train_limit:,} training images, batch {batch}, "
        f"{threads} threads, {epochs} epochs), 1 rank, {len(headline)} rounds. In each round "
        f"{'both' if len(sides) == 2 else f'the {len(sides)}'} processes start together and "
        "take their epochs in turns (one runs an epoch and its evaluation while the others "
        "wait; the order changes epoch by epoch and round by round, train/turns.py), so every "
        "epoch of one is measured seconds from an epoch of the other: "
        f"{epoch_pairs['n']} epoch pairs over epochs 2..{epochs}. A round's images/s "
        f"is the geometric mean of its epochs'; the interval is over rounds.{tuned_baseline}",
        "", f"| variant | images/s per round, median (min-max) | vs {best} |", "|---|---|---|",
        *(f"| {name} | {fmt_spread(spread(v))} | "
          f"{fmt_ratio(paired_ratio(v, sides[best]))} |"
          for name, v in sides.items()), "",
        f"**hpctrain / {best}, measured: {fmt_ratio(ratio)}** (median, min-max of the "
        f"rounds; mean {interval}, 95 % t-interval). Epoch by epoch the ratio is "
        f"{fmt_ratio(epoch_pairs)}: two epochs seconds apart differ by "
        f"{100 * (interval95(epoch_pairs['per_round'])['stdev'] or 0):.0f} % here (the "
        "standard deviation of the epoch ratios), two rounds by "
        f"{100 * (mean['stdev'] or 0):.1f} %.", "",
        f"Where hpctrain's time goes, per step: the same pair on a null model ({NULL_MODEL} "
        f"regression, all 60,000 images, batch {batch}, {NULL_EPOCHS} epochs), whose "
        f"{step_us(statistics.median(null[PLAIN]), batch):,.0f} µs step makes what "
        f"hpctrain adds resolvable; each mechanism switched off in turn, {len(full)} rounds "
        "alternating. Added: batch x (1 / its images/s - 1 / plain Keras's), per round. "
        "A mechanism's cost: the full run's added time minus that of the run without it "
        "(below zero: not resolved).", "",
        "| variant | images/s median (min-max) | µs added to plain Keras's step, median "
        "(min to max) | cost, µs |", "|---|---|---|---|",
        *(row(name) for name in added), "",
        f"hpctrain adds **{overhead:,.0f} µs** a step; with its four per-step mechanisms and "
        f"op determinism off, {rest:,.0f} µs remain (its HDF5 reader, Keras' callback loop).",
        "",
        "What grows with the model's compute, which the null model cannot show: the CNN in "
        f"one process (`{compute_costs.COMMAND}`, epochs of "
        f"{compute['steps']} steps, {len(compute['ms_per_step'][compute_costs.PLAIN])} rounds "
        "alternating; between processes this host drifts too much to resolve 1 %):", "",
        "| the CNN, in one process | ms a step, median (min-max) | step rate / plain "
        "Keras's, median (min-max) |", "|---|---|---|",
        *(f"| {name}{whose.get(name, '')} | {fmt_spread(c['ms'], digits='.2f')} | "
          f"{'' if name == compute_costs.PLAIN else fmt_ratio(c['ratio'], 3)} |"
          for name, c in cnn.items()), "",
        f"The control, a second copy of the plain model, runs at "
        f"{fmt_ratio(cnn[compute_costs.CONTROL]['ratio'], 3)} of the first: the size of a "
        "difference between copies.", "",
        f"The CNN's step in plain Keras takes {cnn_step_us / 1000:.1f} ms. With hpctrain's "
        f"per-step overhead less op determinism's ({per_step_only:,.0f} µs), op determinism "
        f"on the CNN ({det_ratio:.3f}) and Horovod's thread at hpctrain's one-rank cycle "
        f"({hvd_ratio:.3f}), hpctrain / plain Keras should be **{implied:.3f}**.", "",
        f"Measured: median {ratio['median']:.3f}, {verdict(ratio, GOAL)}. (From the profile, "
        f"a point estimate without an interval: {implied:.3f}.)"])
    summary = {"benchmark": "1. Trainer overhead: `hpctrain train` / plain Keras `model.fit` "
                             "on in-memory data, 1 rank (denominator: "
                             + (best if PLAIN_TUNED in sides else
                                "plain Keras as written, this run's only baseline") + ")",
               "result": f"**{fmt_ratio(ratio)}** over {len(ratio['per_round'])} rounds; "
                         f"from the per-step profile {implied:.3f}",
               "verdict": verdict(ratio, GOAL)}
    return {"name": "trainer_overhead", "ratio": ratio, "ratio_mean": mean, "goal": GOAL,
            "headline": summary,
            "per_step_us": {"hpctrain": overhead, "all_off": rest, "costs": costs,
                            "cnn_step_us": cnn_step_us, "implied_ratio": implied},
            "in_process": {**cnn, "steps": compute["steps"]},
            "epoch_pairs": epoch_pairs,
            "images_per_s": {"headline": {k: spread(v) for k, v in sides.items()},
                             "null_model": {k: spread(v) for k, v in null.items()}},
            "markdown": md}
