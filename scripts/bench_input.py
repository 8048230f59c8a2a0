"""Input pipeline benchmark: hpctrain's HDF5 shard reader vs the same arrays already in memory,
vs the per-sample h5py generator that users report as GIL-bound. Side by side in one run;
ratios, not absolute times, are the result (this machine is noisy).

    python scripts/bench_input.py --data data/fashion-mnist.h5 --out results/bench/input_pipeline

Each variant produces one epoch of shuffled batches of one rank's shard (rank 0 of --ranks).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import tensorflow as tf  # noqa: E402

from hpctrain.atomic import write_json, write_text  # noqa: E402
from hpctrain.data.reader import batches, read_shard, shard_bounds  # noqa: E402


def pipeline(images, labels, batch: int) -> tf.data.Dataset:
    return batches(tf, images, labels, batch, seed=0, epochs=1)


def drain(ds) -> int:
    n = 0
    for x, _ in ds:
        n += int(x.shape[0])
    return n


def hpctrain_reader(path, ranks, batch, limit):
    shard = read_shard(path, "train", 0, ranks, limit)  # timed: the read is part of it
    return drain(pipeline(shard.images, shard.labels, batch))


def per_sample_generator(path, ranks, batch, limit):
    with h5py.File(path, "r") as f:
        total = min(limit or f["train/labels"].shape[0], f["train/labels"].shape[0])
    start, stop = shard_bounds(total, 0, ranks)

    def gen():
        with h5py.File(path, "r") as f:  # opened inside the consumer, one sample per read
            images, labels = f["train/images"], f["train/labels"]
            for i in range(start, stop):
                yield images[i], labels[i]

    ds = tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec((28, 28, 1), tf.uint8), tf.TensorSpec((), tf.uint8)))
    return drain(ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/fashion-mnist.h5")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--generator-limit", type=int, default=12000,
                   help="samples for the slow per-sample generator")
    p.add_argument("--out", help="write OUT.json and OUT.md")
    args = p.parse_args()

    shard = read_shard(args.data, "train", 0, args.ranks)
    variants = {
        "in-memory arrays -> tf.data": lambda: drain(pipeline(shard.images, shard.labels,
                                                              args.batch)),
        "hpctrain HDF5 shard read -> tf.data": lambda: hpctrain_reader(args.data, args.ranks,
                                                                       args.batch, 0),
        "h5py per-sample generator (from_generator)": lambda: per_sample_generator(
            args.data, args.ranks, args.batch, args.generator_limit),
    }
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats + 1):  # interleaved, so drift hits every variant alike
        for name, fn in variants.items():
            t0 = time.perf_counter()
            n = fn()
            rates[name].append(n / (time.perf_counter() - t0))
    rows = []
    base = statistics.fmean(rates["in-memory arrays -> tf.data"][1:])
    for name, r in rates.items():
        r = r[1:]  # the first round warms caches and traces
        mean = statistics.fmean(r)
        ci = 1.96 * statistics.stdev(r) if len(r) > 1 else 0.0
        rows.append({"variant": name, "images_per_s": mean, "ci95": ci, "n": len(r),
                     "ratio_to_in_memory": mean / base})
    lines = [f"Input pipeline, one epoch of rank 0's shard ({args.ranks} ranks, batch "
             f"{args.batch}), {args.repeats} rounds after one warm-up round:", "",
             "| variant | images/s (mean ± 95 %) | ratio to in-memory |", "|---|---|---|"]
    lines += [f"| {r['variant']} | {r['images_per_s']:,.0f} ± {r['ci95']:,.0f} | "
              f"{r['ratio_to_in_memory']:.2f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out.with_suffix(".json"), {"args": vars(args), "rows": rows})
        write_text(out.with_suffix(".md"), text + "\nCommand: `python scripts/bench_input.py "
                   f"--data {args.data} --out {args.out}`\n")


if __name__ == "__main__":
    main()
