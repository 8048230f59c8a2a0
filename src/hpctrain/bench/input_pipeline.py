"""Benchmark 2, input pipeline: hpctrain's streaming HDF5 reader against the same arrays
served from memory by tf.data, same cores, same batch and augmentation.

Cases: 28x28x1 (a Fashion-MNIST file, rank 0 of 2's share, no augmentation, as the MNIST
configs train), 224x224x3 (image-tree shards staged at 256, random 224 crops + flips, the
ImageNet recipe) and 256x256x3 without augmentation (the raw pipelines). Each side runs in
every configuration we know (one gather per batch or per 16 MiB group; augmentation on 1 or
2 tf.data threads; lzf shards), and each goal's ratio is the best reader configuration over
the *best* in-memory one, paired round by round.

Every variant's pipeline is built once and endless, as a training run builds it (round 0
builds them and is dropped); each round takes the next 1-3 seconds' worth of batches of every
variant in turn (0.5 s rounds at 28x28 were a few of the 20 ms idle polls long), the order
reversed every other round, consumed inside a tf.function as Keras' train_function does. A
variant's clock runs until its pipeline has refilled its prefetch buffers and gone idle
(`settled`), so no variant's reading ahead runs on another's clock. TensorFlow loads only
when run() starts.

At 28x28 two pipelines of one graph (in-memory and the reader's kept window) kept a steady
gap within a process that changed sides in the next process (results/benchmarks/machines/):
rounds of one process are not independent. With `--processes P` the cases run in P fresh
processes one after the other, `--rounds` rounds each, and each goal's interval is over the
processes (each one's geometric mean ratio a sample), so it includes that effect.

    python -m hpctrain.bench --only input_pipeline --images data/bench-256 \\
        --images-lzf data/bench-256-lzf --processes 6 --rounds 4
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from hpctrain.bench.harness import fmt_ratio, paired_ratio, verdict, with_inputs

GOAL = 0.90
MEMORY, READER = "in-memory", "hpctrain HDF5 reader"  # each variant's name starts with its side
GOALS = ("28x28x1", "224x224x3")  # the cases the goal is about (raw 256 is context)
GENERATOR_BATCHES = 94  # the per-sample generator is ~300x slower: a short round


def run(data: str, rounds: int, train_limit: int = 0, images: str | None = None,
        images_lzf: str | None = None, processes: int = 1) -> dict:
    """`processes` fresh processes one after the other, `rounds` rounds each (the order of
    variants reversed every other round, counted across processes); the goals' intervals
    are over the processes when there are several."""
    del train_limit  # the reader's share of the whole file
    if processes == 1:
        return with_inputs(summarize, cases=measure(data, rounds, images, images_lzf))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    runs = []
    for k in range(processes):  # one fresh interpreter each: nothing of TensorFlow carried
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs.append(pool.submit(measure, data, rounds, images, images_lzf,
                                    k * rounds).result())
    return with_inputs(summarize, cases=[_merged(parts) for parts in zip(*runs, strict=True)])


def measure(data: str, rounds: int, images: str | None, images_lzf: str | None,
            first_round: int = 0) -> list[dict]:
    """Every case measured in this process, `rounds` rounds from round `first_round`."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from hpctrain.data.augment import crop_flip
    from hpctrain.data.reader import RankReader

    cases = [_case(tf, "28x28x1", data, 2, 128, 0, epochs=80, generator=data)]
    if images:
        extra = {}
        if images_lzf:
            lzf = RankReader.open(images_lzf, "train", 0, 1, 128, seed=0)
            aug = crop_flip(tf, 224, seed=0)  # the 224 case's crops (a function of the seed)
            extra[f"{READER}, lzf shards"] = (lambda: lzf.dataset(tf, augment=aug), 0)
        cases.append(_case(tf, "224x224x3", images, 1, 128, 224, epochs=3, extra=extra))
        cases.append(_case(tf, "256x256x3, no augmentation", images, 1, 128, 0, epochs=10))
    return [_measure(tf, c, rounds, first_round) for c in cases]


def _merged(parts: tuple[dict, ...]) -> dict:
    """One case's measurements from several processes: rounds concatenated, each round's
    process kept (`process`), round 0's time per process."""
    merged = {k: v for k, v in parts[0].items() if k not in KEPT}
    for key in ("images_per_s", "cpu_us_per_image"):
        merged[key] = {v: [x for p in parts for x in p[key][v]] for v in parts[0][key]}
    merged["first_round_s"] = {v: [p["first_round_s"][v] for p in parts]
                               for v in parts[0]["first_round_s"]}
    merged["process"] = [k for k, p in enumerate(parts)
                         for _ in next(iter(p["images_per_s"].values()))]
    return merged


KEPT = ("images_per_s", "cpu_us_per_image", "first_round_s")  # per round (or process)


def _case(tf, name: str, data: str, ranks: int, batch: int, crop: int, epochs: int,
          extra: dict | None = None, generator: str | None = None) -> dict:
    """One case's variants: name -> (endless dataset factory, batches per round)."""
    import numpy as np

    from hpctrain.data.augment import crop_flip
    from hpctrain.data.batches import gather_group, memory_batches
    from hpctrain.data.reader import RankReader

    reader = RankReader.open(data, "train", 0, ranks, batch, seed=0)
    augment = crop_flip(tf, crop, seed=0) if crop else None
    rows = list(zip(*reader.in_order(), strict=True))  # read once, outside the timing
    images, labels = tf.constant(np.concatenate(rows[0])), tf.constant(np.concatenate(rows[1]))
    per_round = epochs * reader.steps

    def memory(**kw):
        return lambda: memory_batches(tf, images, labels, batch, seed=0, augment=augment, **kw)

    def hdf5(**kw):
        return lambda: reader.dataset(tf, augment=augment, **kw)

    variants: dict[str, tuple[Callable[[], Any], int]] = {
        f"{MEMORY} arrays -> tf.data": (memory(), per_round),
        f"{READER} -> tf.data": (hdf5(), per_round)}
    if gather_group(reader.shape, batch) > 1:  # what gathering in groups gains, both sides
        variants[f"{MEMORY}, one gather per batch"] = (memory(group=1), per_round)
        variants[f"{READER}, one gather per batch"] = (hdf5(group=1), per_round)
    if crop:  # augmentation on 2 tf.data threads (input_threads), both pipelines
        variants[f"{MEMORY}, 2 augment threads"] = (memory(threads=2), per_round)
        variants[f"{READER}, input_threads 2"] = (hdf5(threads=2), per_round)
    for label, (factory, batches) in (extra or {}).items():
        variants[label] = (factory, batches or per_round)
    if generator:
        variants["h5py per-sample generator (from_generator)"] = (
            lambda: _per_sample_generator(tf, generator, ranks, batch), GENERATOR_BATCHES)
    return {"case": name, "data": data, "ranks": ranks, "batch": batch, "epochs": epochs,
            "shape": list(reader.shape), "crop": crop, "samples": reader.rows,
            "variants": variants}


def _per_sample_generator(tf, path: str, ranks: int, batch: int):
    """The anti-pattern users report: h5py read one sample at a time in a generator."""
    import h5py

    from hpctrain.data.layout import split_pieces
    from hpctrain.data.reader import rank_pieces

    (piece,), _ = rank_pieces(split_pieces(path, "train")[:1], 0, ranks)

    def gen():
        with h5py.File(path, "r") as f:
            images, labels = f["train/images"], f["train/labels"]
            for i in range(piece.start, piece.stop):
                yield images[i], labels[i]

    ds = tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec((28, 28, 1), tf.uint8), tf.TensorSpec((), tf.uint8)))
    return ds.batch(batch, drop_remainder=True).repeat().prefetch(2)


def _measure(tf, case: dict, rounds: int, first_round: int = 0) -> dict:
    """Round 0 builds every pipeline (dropped: tracing, first reads, the first touch of the
    reader's buffers, as a training run pays once); each round then takes the next batches of
    every variant in turn, the order reversed every other round. Every round's images/s and
    CPU µs per image (the process', all threads) are kept."""

    @tf.function
    def take(iterator, n):
        total = tf.constant(0, tf.int64)
        for _ in tf.range(n):
            x, _ = iterator.get_next()
            total += tf.cast(tf.shape(x)[0], tf.int64)
        return total

    rates: dict[str, list[float]] = {k: [] for k in case["variants"]}
    cpu: dict[str, list[float]] = {k: [] for k in case["variants"]}
    first: dict[str, float] = {}
    iterators: dict = {}
    for r in range(rounds + 1):
        order = list(case["variants"].items())
        for name, (factory, batches) in order[::-1] if (first_round + r) % 2 else order:
            t0, c0 = time.perf_counter(), time.process_time()
            if name not in iterators:
                iterators[name] = iter(factory())
            n = int(take(iterators[name], tf.constant(batches, tf.int64)))
            t1, c1 = settled()
            if r == 0:
                first[name] = t1 - t0
                continue
            rates[name].append(n / (t1 - t0))
            cpu[name].append((c1 - c0) / n * 1e6)
    iterators.clear()
    meta = {k: v for k, v in case.items() if k != "variants"}
    return {**meta, "images_per_s": rates, "cpu_us_per_image": cpu, "first_round_s": first}


def settled(poll: float = 0.02, quiet: float = 0.1, most: float = 30.0) -> tuple[float, float]:
    """Wait until this process is idle, and return (wall, CPU) clock when it became so.

    When a variant's batches are taken, its pipeline goes on refilling its prefetch buffers
    (for the reader, whole windows). That work is the variant's: counted in its time, and
    kept out of the next variant's clock, which it would otherwise slow. Idle: less than
    `quiet` of a core busy over a `poll` interval."""
    wall, cpu = time.perf_counter(), time.process_time()
    deadline = wall + most
    while wall < deadline:
        time.sleep(poll)
        now, used = time.perf_counter(), time.process_time()
        if used - cpu < quiet * (now - wall):
            break
        wall, cpu = now, used
    return wall, cpu


def _first(seconds: float | list[float]) -> str:
    """Round 0's time: one process' or the median over processes."""
    return f"{statistics.median(seconds) if isinstance(seconds, list) else seconds:.2f}"


def best(case: dict, side: str) -> str:
    """The variant of `side` with the highest median images/s."""
    return max((v for v in case["images_per_s"] if v.startswith(side)),
               key=lambda v: statistics.median(case["images_per_s"][v]))


def summarize(cases: list[dict]) -> dict:
    """The reader's best over the in-memory best, per round, per case; verdicts by the rule
    for the cases the goal is about."""
    ratios, sections = {}, []
    for c in cases:
        rates, groups = c["images_per_s"], c.get("process")
        memory, reader = best(c, MEMORY), best(c, READER)
        ratio = paired_ratio(rates[reader], rates[memory], groups)
        ratios[c["case"]] = {"reader": reader, "memory": memory, **ratio}
        shape = "x".join(str(d) for d in c["shape"])
        aug = f", random {c['crop']}x{c['crop']} crops + flips" if c["crop"] else ""
        rows = []
        for name, rs in rates.items():
            cores = [u * r / 1e6 for u, r in zip(c["cpu_us_per_image"][name], rs, strict=True)]
            rows.append(
                f"| {name}{' (best)' if name in (memory, reader) else ''} | "
                f"{statistics.median(rs):,.0f} [{min(rs):,.0f}-{max(rs):,.0f}] | "
                f"{fmt_ratio(paired_ratio(rs, rates[memory]))} | "
                f"{statistics.median(c['cpu_us_per_image'][name]):,.2f} | "
                f"{statistics.median(cores):.2f} | {_first(c['first_round_s'][name])} |")
        goal = (f"{READER} (best) / {MEMORY} (best): **{fmt_ratio(ratio)}**, "
                f"{verdict(ratio, GOAL)}." if c["case"] in GOALS else
                f"{READER} (best) / {MEMORY} (best): {fmt_ratio(ratio)} (no goal: context).")
        staged = "" if c["case"] == shape else f" ({shape} staged)"
        sections += [f"### {c['case']}{staged}{aug}, batch {c['batch']}, {c['epochs']} epochs "
                     f"per round, {c['samples']:,} samples (rank 0 of {c['ranks']})", "",
                     f"| variant | images/s median [min-max] | / {MEMORY} (best), median "
                     "(min-max) | CPU µs per image | cores busy | round 0, s |",
                     "|---|---|---|---|---|---|", *rows, "", goal, ""]
    rounds = len(next(iter(cases[0]["images_per_s"].values())))
    processes = len(set(cases[0].get("process", [0])))
    where = (f"{processes} fresh processes one after the other, {rounds // processes} rounds "
             "each; the goals' 95 % intervals are over the processes (each one's geometric "
             "mean ratio a sample), since rounds of one process share where its buffers "
             "landed and how its threads were placed" if processes > 1 else
             "one process")
    md = "\n".join([
        "Every variant's pipeline is built once, endless, as a training run builds it; round "
        "0 builds them all and is dropped (its time, with the tracing and the first reads, "
        f"is the last column{', median over processes' if processes > 1 else ''}). Each "
        "round then takes the next batches "
        f"of every variant in turn, the order reversed every other round ({rounds} rounds in "
        f"{where}), consumed inside a "
        "tf.function as Keras' train_function does; a variant's clock runs until its "
        "pipeline has refilled its prefetch buffers and gone idle, so that no variant's "
        "reading ahead runs on the next one's clock. Each side's best configuration (highest "
        "median images/s) is the one compared; ratios are per round. CPU time is the "
        "process' (all threads) per image; cores busy is CPU time over wall time.", "",
        *sections]).rstrip()
    summary = "; ".join(f"{name} **{fmt_ratio(r)}**" for name, r in ratios.items()
                        if name in GOALS)
    headline = {"benchmark": "2. Input pipeline: the HDF5 reader's best configuration / the "
                             "best in-memory tf.data pipeline, same cores",
                "result": summary,
                "verdict": "; ".join(f"{name}: {verdict(ratios[name], GOAL)}"
                                     for name in GOALS if name in ratios)}
    return {"name": "input_pipeline", "goal": GOAL, "ratios": ratios, "headline": headline,
            "markdown": md}
