"""Benchmark 4, time to accuracy: the time from the process' start to the end of the
evaluation that first reaches the target test accuracy, everything between counted (imports,
data, model build, tf.data set-up, fit's set-up, every epoch and every evaluation), on one
clock for both sides. hpctrain's fastest recipe for the workshop CNN
(jobs/configs/fmnist_cnn_fast.yaml, global batch 256; on 2 ranks its `two_ranks` variant, the
same global batch and rate) in bfloat16 (the recipe) and in float32, against the workshop's
plain Keras script (the workshop CNN, Adadelta at Keras 1's rate 1.0, batch 128, float32;
with Horovod's recipe on 2 ranks, each rank evaluating its own share of the test set, as
hpctrain does), 1 rank x 2 threads and 2 ranks x 1 thread, on the whole of Fashion-MNIST.
Round i runs every variant with seed 42 + i: the pairs share a seed, the rounds do not.
"""

from __future__ import annotations

from collections.abc import Callable

from hpctrain.bench.harness import (
    alternate,
    fmt_ratio,
    fmt_spread,
    paired_ratio,
    spread,
    verdict,
    with_inputs,
)
from hpctrain.bench.runs import hpctrain_run, plain_run

GOAL = 0.5
TARGET = 0.90
RECIPE = "jobs/configs/fmnist_cnn_fast.yaml"
WORKSHOP_EPOCHS = 12  # the workshop's; the run stops at the target long before
SEED = 42
PRECISIONS = {"bfloat16": "mixed_bfloat16", "float32": "float32"}
LAYOUTS = {1: "1 x 2", 2: "2 x 1"}  # ranks -> ranks x threads on 2 cores


def _workshop(ranks: int) -> str:
    return f"workshop Keras{' + Horovod' if ranks > 1 else ''}, {LAYOUTS[ranks]}"


def _hpctrain(ranks: int, precision: str) -> str:
    return f"hpctrain {precision}, {LAYOUTS[ranks]}"


def run(data: str, rounds: int, train_limit: int = 0) -> dict:
    del train_limit  # time to accuracy is about the whole training set
    plain = ["--data", data, "--model", "cnn", "--epochs", str(WORKSHOP_EPOCHS), "--optimizer",
             "adadelta", "--lr", "1.0", "--batch", "128", "--target", str(TARGET)]

    def seeded(once: Callable[[int], dict]) -> Callable[[], dict]:
        """Each call is the next round: seed 42, 43, ..."""
        calls = [0]

        def call() -> dict:
            calls[0] += 1
            return once(SEED + calls[0] - 1)
        return call

    def hp(ranks: int, policy: str) -> Callable[[], dict]:
        def once(seed: int) -> dict:
            recipe = RECIPE if ranks == 1 else f"{RECIPE}:two_ranks"
            r = hpctrain_run(recipe, [f"data={data}", f"threads={3 - ranks}", f"seed={seed}",
                                      f"precision={policy}", "checkpoint=false",
                                      "pictures=false"], ranks, epochs=True)
            hit = next((e for e in r["epochs"] if (e["val_accuracy"] or 0) >= TARGET), None)
            if hit is None:
                raise RuntimeError(f"{RECIPE} ({policy}, seed {seed}) did not reach {TARGET} "
                                   f"on {ranks} rank(s): {r['test_accuracy']}")
            return {"seconds": hit["end_unix_s"] - r["started_unix"], "seed": seed,
                    "accuracy": hit["val_accuracy"], "epoch": hit["epoch"]}
        return seeded(once)

    def pk(ranks: int) -> Callable[[], dict]:
        def once(seed: int) -> dict:
            r = plain_run([*plain, "--threads", str(3 - ranks), "--seed", str(seed)], ranks)
            if r["time_to_target_s"] is None:
                raise RuntimeError(f"the workshop recipe (seed {seed}) did not reach {TARGET} "
                                   f"in {WORKSHOP_EPOCHS} epochs on {ranks} rank(s)")
            return {"seconds": r["time_to_target_s"], "seed": seed,
                    "accuracy": r["target_accuracy"], "epoch": r["target_epoch"]}
        return seeded(once)

    variants: dict[str, Callable[[], dict]] = {}
    for ranks in LAYOUTS:
        variants[_workshop(ranks)] = pk(ranks)
        for precision, policy in PRECISIONS.items():
            variants[_hpctrain(ranks, precision)] = hp(ranks, policy)
    return with_inputs(summarize, samples=alternate(variants, rounds, key="seconds"))


def summarize(samples: dict[str, list[dict]]) -> dict:
    seconds = {k: [s["seconds"] for s in v] for k, v in samples.items()}
    rounds = len(next(iter(seconds.values())))
    ratios = {(ranks, precision): paired_ratio(seconds[_hpctrain(ranks, precision)],
                                               seconds[_workshop(ranks)])
              for ranks in LAYOUTS for precision in PRECISIONS}
    rows = [f"| {name} | {fmt_spread(spread(seconds[name]), ' s', '.1f')} | "
            f"{min(s['accuracy'] for s in v):.3f}-{max(s['accuracy'] for s in v):.3f} | "
            f"{min(s['epoch'] for s in v)}-{max(s['epoch'] for s in v)} |"
            for name, v in samples.items()]
    verdicts = {key: verdict(r, GOAL, higher_is_better=False) for key, r in ratios.items()}
    lines = [f"| {LAYOUTS[ranks]} | {precision} | {fmt_ratio(r)} | {verdicts[ranks, precision]} |"
             for (ranks, precision), r in ratios.items()]
    md = "\n".join([
        f"Seconds from process start to the end of the evaluation that first reaches {TARGET} "
        "test accuracy (all 10,000 test images after every epoch, shared among the ranks; "
        "everything from the process' start counted, on one clock for both sides), whole "
        f"Fashion-MNIST. hpctrain runs `{RECIPE}` (global batch 256; on 2 ranks its "
        "`two_ranks` variant, 2 x 128) in bfloat16 (the recipe) and in float32; the workshop "
        "script is the workshop CNN with Adadelta at rate 1.0 and batch 128 in float32 "
        f"(Horovod's recipe on 2 ranks: rate x 2). {rounds} rounds, variants alternating; "
        f"round i runs every variant with seed {SEED} + i.", "",
        "| variant | seconds to target, median (min-max) | accuracy reached | epochs |",
        "|---|---|---|---|", *rows, "",
        "| ranks x threads | hpctrain's precision | hpctrain / workshop Keras, median "
        "(min-max) | verdict |", "|---|---|---|---|", *lines])
    headline = {"benchmark": f"4. Time to {TARGET:.0%} test accuracy, process start to the "
                             "evaluation: hpctrain's recipe / the workshop's Keras script",
                "result": "; ".join(f"{LAYOUTS[ranks]} {precision} **{fmt_ratio(r)}**"
                                    for (ranks, precision), r in ratios.items()),
                "verdict": "; ".join(f"{LAYOUTS[ranks]} {precision}: {verdicts[ranks, precision]}"
                                     for ranks, precision in ratios)}
    return {"name": "time_to_accuracy", "goal": GOAL, "headline": headline,
            "ratios": {f"{LAYOUTS[k[0]]}, {k[1]}": r for k, r in ratios.items()},
            "seconds_to_target": {k: spread(v) for k, v in seconds.items()}, "markdown": md}
