"""Input pipeline benchmark: hpctrain's streaming HDF5 reader vs the same arrays served from
memory by tf.data (the best in-memory pipeline we can write: a stateless index shuffle, batches
gathered a 16 MiB group at a time as the reader gathers them), same batch size and
augmentation, side by side in one run.

    python scripts/bench_input.py --data data/fashion-mnist.h5 \\
        --images data/fmnist-tree-256 --out results/bench/input_pipeline

Cases: 28x28x1 (a Fashion-MNIST file, rank 0 of 2's share, no augmentation, as the MNIST
configs train) and 224x224x3 (image-tree shards staged at 256, random 224 crops + flips, the
ImageNet recipe, also on 2 augmentation threads and from lzf-compressed shards if
--images-lzf is given; and without augmentation, the raw pipelines). Every variant's
pipeline is built once and endless, as a training run builds it (round 0 builds them and is
dropped); each round takes the next ~second's worth of batches of every variant in turn
(A B A B ..., reversed every other round), so drift hits all alike, consumed inside a
tf.function as Keras does. The result is the median of the per-round ratios to in-memory,
with their min-max; absolute images/s and CPU time per image are for context.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hpctrain.atomic import write_json, write_text  # noqa: E402
from hpctrain.data.augment import crop_flip  # noqa: E402
from hpctrain.data.layout import split_pieces  # noqa: E402
from hpctrain.data.reader import (  # noqa: E402
    RankReader,
    gather_group,
    memory_batches,
    rank_pieces,
)


@tf.function
def _take(iterator, n) -> tf.Tensor:
    total = tf.constant(0, tf.int64)
    for _ in tf.range(n):
        x, _ = iterator.get_next()
        total += tf.cast(tf.shape(x)[0], tf.int64)
    return total


def take(iterator, batches: int) -> int:
    """Consume the next `batches` batches inside a tf.function, as Keras' train_function does
    (the batches never come back to Python; a Python loop would measure Python, not the
    pipeline). Returns the images consumed."""
    return int(_take(iterator, tf.constant(batches, tf.int64)))


def in_memory(reader: RankReader) -> tuple:
    """The rank's rows as tensors in memory (read and converted once, outside the timing)."""
    images, labels = zip(*reader.in_order(), strict=True)
    return tf.constant(np.concatenate(images)), tf.constant(np.concatenate(labels))


def per_sample_generator(path: str, ranks: int, batch: int):
    """The anti-pattern users report: h5py read one sample at a time in a generator."""
    (piece,), _ = rank_pieces(split_pieces(path, "train")[:1], 0, ranks)

    def gen():
        with h5py.File(path, "r") as f:
            images, labels = f["train/images"], f["train/labels"]
            for i in range(piece.start, piece.stop):
                yield images[i], labels[i]

    ds = tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec((28, 28, 1), tf.uint8), tf.TensorSpec((), tf.uint8)))
    return ds.batch(batch, drop_remainder=True).repeat().prefetch(2)


def case(name: str, data: str, ranks: int, batch: int, crop: int, extra: dict,
         epochs: int) -> dict:
    """The variants of one case: name -> (endless dataset factory, batches per round)."""
    reader = RankReader.open(data, "train", 0, ranks, batch, seed=0)
    augment = crop_flip(tf, crop, seed=0) if crop else None
    images, labels = in_memory(reader)
    per_round = epochs * reader.steps

    def memory(**kw):
        return lambda: memory_batches(tf, images, labels, batch, seed=0, augment=augment, **kw)

    def hdf5(**kw):
        return lambda: reader.dataset(tf, augment=augment, **kw)

    variants = {"in-memory arrays -> tf.data": (memory(), per_round),
                "hpctrain HDF5 reader -> tf.data": (hdf5(), per_round)}
    if gather_group(reader.shape, batch) > 1:  # what gathering in groups gains, both sides
        variants["in-memory, one gather per batch"] = (memory(group=1), per_round)
    if crop:  # augmentation on 2 tf.data threads (input_threads), both pipelines
        variants["in-memory, 2 augment threads"] = (memory(threads=2), per_round)
        variants["hpctrain HDF5 reader, input_threads 2"] = (hdf5(threads=2), per_round)
    for label, (factory, batches) in extra.items():
        variants[label] = (factory, batches or per_round)
    return {"case": name, "data": data, "ranks": ranks, "batch": batch, "epochs": epochs,
            "shape": list(reader.shape), "crop": crop, "samples": reader.rows,
            "variants": variants}


def run(c: dict, rounds: int) -> dict:
    """Every variant's pipeline is built once, in round 0 (dropped: tracing, first reads,
    first touch of the reader's buffers, as a training run pays once); each round then takes
    the next batches of every variant in turn, the order reversed every other round."""
    rates: dict[str, list[float]] = {k: [] for k in c["variants"]}
    cpu: dict[str, list[float]] = {k: [] for k in c["variants"]}  # CPU µs per image
    first: dict[str, float] = {}
    iterators: dict = {}
    for r in range(rounds + 1):
        order = list(c["variants"].items())
        for name, (factory, batches) in order[::-1] if r % 2 else order:
            t0, c0 = time.perf_counter(), time.process_time()
            if name not in iterators:
                iterators[name] = iter(factory())
            n = take(iterators[name], batches)
            wall = time.perf_counter() - t0
            if r == 0:
                first[name] = wall
            rates[name].append(n / wall)
            cpu[name].append((time.process_time() - c0) / n * 1e6)
    iterators.clear()
    base = "in-memory arrays -> tf.data"
    rows = []
    for name, rs in rates.items():
        rs = rs[1:]  # round 0 builds the pipelines
        ratios = [a / b for a, b in zip(rs, rates[base][1:], strict=True)]
        rows.append({"variant": name, "images_per_s_median": statistics.median(rs),
                     "images_per_s_min": min(rs), "images_per_s_max": max(rs),
                     "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                     "ratio_max": max(ratios), "rounds": len(rs),
                     "cpu_us_per_image": statistics.median(cpu[name][1:]),
                     "cores_busy": statistics.median(
                         [c * r / 1e6 for c, r in zip(cpu[name][1:], rs, strict=True)]),
                     "first_round_s": first[name]})
    out = {k: v for k, v in c.items() if k != "variants"}
    return {**out, "rows": rows}


def markdown(results: list[dict], command: str, goal: float) -> str:
    lines = ["# Input pipeline: streaming HDF5 reader vs in-memory tf.data", "",
             f"Command: `{command}`", "",
             "Every variant's pipeline is built once, endless, as a training run builds "
             "it; round 0 builds them all and is dropped (its time, with the tracing, the "
             "first reads and the first touch of the reader's buffers, is the last column). "
             "Each round then takes the next batches of every variant in turn (about a "
             "second's worth: 20, 3 and 10 epochs), in reverse order every other round, "
             "consuming them inside a tf.function as Keras' train_function does. "
             "Ratios are per round (same round, same machine state), median [min-max]. "
             "CPU time is the process' (all threads) per image, and cores busy is CPU time "
             "over wall time: this machine has 2. "
             f"Goal: reader >= {goal:.2f} of in-memory.", ""]
    for c in results:
        shape = "x".join(str(d) for d in c["shape"])
        aug = f", random {c['crop']}x{c['crop']} crops + flips" if c["crop"] else ""
        lines += [f"## {c['case']}: {shape} staged{aug}, batch {c['batch']}, "
                  f"{c['epochs']} epochs per round, "
                  f"{c['samples']:,} samples (rank 0 of {c['ranks']})", "",
                  "| variant | images/s median [min-max] | ratio to in-memory | "
                  "CPU µs per image | cores busy | round 0, s |",
                  "|---|---|---|---|---|---|"]
        for r in c["rows"]:
            lines.append(f"| {r['variant']} | {r['images_per_s_median']:,.0f} "
                         f"[{r['images_per_s_min']:,.0f}-{r['images_per_s_max']:,.0f}] | "
                         f"{r['ratio_median']:.2f} [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}] | "
                         f"{r['cpu_us_per_image']:,.2f} | {r['cores_busy']:.2f} | "
                         f"{r['first_round_s']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--data", default="data/fashion-mnist.h5", help="a staged MNIST-family file")
    p.add_argument("--images", help="an image tree staged at 256 (hpctrain stage imagefolder)")
    p.add_argument("--images-lzf", help="the same staged with --compression lzf")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--generator-limit", type=int, default=12000,
                   help="samples for the slow per-sample generator (28x28 only)")
    p.add_argument("--out", help="write OUT.json and OUT.md")
    args = p.parse_args()
    cases = [case("28x28x1", args.data, 2, 128, 0, {
        "h5py per-sample generator (from_generator)": (
            lambda: per_sample_generator(args.data, 2, 128), args.generator_limit // 128)},
        epochs=20)]
    if args.images:
        extra = {}
        if args.images_lzf:
            lzf = RankReader.open(args.images_lzf, "train", 0, 1, 128, seed=0)
            aug = crop_flip(tf, 224, seed=0)  # the 224 case's crops (a function of the seed)
            extra["hpctrain HDF5 reader, lzf shards"] = (
                lambda: lzf.dataset(tf, augment=aug), 0)
        cases.append(case("224x224x3", args.images, 1, 128, 224, extra, epochs=3))
        cases.append(case("256x256x3, no augmentation", args.images, 1, 128, 0, {},
                          epochs=10))
    results = []
    for c in cases:
        res = run(c, args.rounds)
        results.append(res)
        for r in res["rows"]:
            print(f"{res['case']:10s} {r['variant']:45s} {r['images_per_s_median']:>9,.0f} "
                  f"images/s  ratio {r['ratio_median']:.2f} "
                  f"[{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]", flush=True)
    command = "python scripts/bench_input.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if v is not None)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        sizes = {}
        for key in ("images", "images_lzf"):
            path = getattr(args, key)
            if path:
                sizes[key] = sum(f.stat().st_size for f in Path(path).glob("train-*.h5"))
        write_json(out.with_suffix(".json"), {"args": vars(args), "cases": results,
                                              "train_shard_bytes": sizes})
        text = markdown(results, command, 0.90)
        if sizes:
            text += "\nTraining shards on disk: " + ", ".join(
                f"{k.replace('images_lzf', 'lzf').replace('images', 'none')} "
                f"{v / 1e6:,.0f} MB" for k, v in sizes.items()) + "\n"
        write_text(out.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
