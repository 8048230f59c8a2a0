"""Benchmark 4, time to accuracy: wall time from process start until the test accuracy first
reaches the target (evaluation after every epoch, counted), hpctrain's fastest recipe for
the workshop CNN (jobs/configs/fmnist_cnn_fast.yaml, global batch 256; on 2 ranks its
`two_ranks` variant, the same global batch and rate) against the workshop's plain Keras
script (the workshop CNN, Adadelta at Keras 1's rate 1.0, batch 128; with Horovod's recipe
on 2 ranks), 1 rank x 2 threads and 2 ranks x 1 thread, on the whole of Fashion-MNIST.
"""

from __future__ import annotations

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


def run(data: str, rounds: int, train_limit: int = 0) -> dict:
    del train_limit  # time to accuracy is about the whole training set
    plain = ["--data", data, "--model", "cnn", "--epochs", str(WORKSHOP_EPOCHS), "--optimizer",
             "adadelta", "--lr", "1.0", "--batch", "128", "--target", str(TARGET)]

    def hp(ranks: int):
        def once() -> float:
            recipe = RECIPE if ranks == 1 else f"{RECIPE}:two_ranks"
            r = hpctrain_run(recipe, [f"data={data}", f"threads={3 - ranks}",
                                      "checkpoint=false", "pictures=false"], ranks)
            hit = r["time_to_accuracy_s"].get(f"{TARGET:.2f}")
            if hit is None:
                raise RuntimeError(f"{RECIPE} did not reach {TARGET} on {ranks} rank(s): "
                                   f"{r['test_accuracy']}")
            return r["startup_s"] + hit
        return once

    def pk(ranks: int):
        def once() -> float:
            r = plain_run([*plain, "--threads", str(3 - ranks)], ranks)
            if r["time_to_target_s"] is None:
                raise RuntimeError(f"the workshop recipe did not reach {TARGET} in "
                                   f"{WORKSHOP_EPOCHS} epochs on {ranks} rank(s)")
            return r["startup_s"] + r["time_to_target_s"]
        return once

    variants = {"workshop Keras, 1 x 2": pk(1), "hpctrain, 1 x 2": hp(1),
                "workshop Keras + Horovod, 2 x 1": pk(2), "hpctrain, 2 x 1": hp(2)}
    return with_inputs(summarize, samples=alternate(variants, rounds), rounds=rounds)


def summarize(samples: dict[str, list[float]], rounds: int) -> dict:
    one = paired_ratio(samples["hpctrain, 1 x 2"], samples["workshop Keras, 1 x 2"])
    two = paired_ratio(samples["hpctrain, 2 x 1"], samples["workshop Keras + Horovod, 2 x 1"])
    rows = [f"| {name} | {fmt_spread(spread(v), ' s', '.1f')} |" for name, v in samples.items()]
    md = "\n".join([
        f"Seconds from process start until the test accuracy first reaches {TARGET} "
        "(evaluated on all 10,000 test images after every epoch, evaluation counted), "
        f"whole Fashion-MNIST; hpctrain runs `{RECIPE}` (global batch 256; on 2 ranks its "
        "`two_ranks` variant, 2 x 128), the workshop script is the "
        "workshop CNN with Adadelta at rate 1.0 and batch 128 (Horovod's recipe on 2 ranks: "
        f"rate x 2); {rounds} rounds, variants alternating.", "",
        "| variant | seconds to target, median (min-max) |", "|---|---|", *rows, "",
        f"hpctrain / workshop Keras: **1 rank {fmt_ratio(one)}**, "
        f"{verdict(one, GOAL, higher_is_better=False)}; **2 ranks "
        f"{fmt_ratio(two)}**, {verdict(two, GOAL, higher_is_better=False)}."])
    headline = {"benchmark": f"4. Time to {TARGET:.0%} test accuracy: hpctrain's recipe / the "
                             "workshop's Keras script",
                "result": f"1 rank **{fmt_ratio(one)}**; 2 ranks **{fmt_ratio(two)}**",
                "verdict": f"1 rank: {verdict(one, GOAL, higher_is_better=False)}; 2 ranks: "
                           f"{verdict(two, GOAL, higher_is_better=False)}"}
    return {"name": "time_to_accuracy", "ratio_1_rank": one, "ratio_2_ranks": two,
            "headline": headline,
            "goal": GOAL, "seconds_to_target": {k: spread(v) for k, v in samples.items()},
            "markdown": md}
