"""Benchmark 8, staging: `hpctrain stage imagefolder` against a bare decode + resize loop over
the same JPEG files with the same code (Pillow through hpctrain's own `load_image`), per
process, side by side, at the two sizes ImageNet recipes stage (224 and 256).

The tree holds ImageNet-sized JPEGs (shorter side 333-375 px, up to 500 on the longer, quality
90, with pixel grain so that their entropy, and so their decoding, is closer to a photo's than
an upscaled 28x28 image's): `make data/bench-jpeg-tree` (scripts/make_imagefolder.py).

The bare loop decodes and resizes every file and keeps nothing: the ceiling for one process.
Staging's rate is the one its summary line reports (scan, plan, decode, resize, write, sha256,
fsync and manifest; the interpreter's start is not in it), divided by its processes. Round 0
warms the page cache and the imports and is dropped; every later round runs every variant in
turn, the order reversed every other round, and the goal's ratio is paired per round.

    python -m hpctrain.bench --only staging --jpeg-tree data/bench-jpeg-tree --rounds 5
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hpctrain.bench.harness import alternate, fmt_ratio, paired_ratio, verdict, with_inputs

GOAL = 0.80
SIZES = (224, 256)
BARE = "bare decode + resize loop, 1 process"
STAGE = "hpctrain stage"  # every staging variant's name starts with it
VARIANTS = {  # name -> (MPI ranks, workers per rank)
    f"{STAGE}, 1 rank x 1 worker": (1, 1),
    f"{STAGE}, 1 rank x 2 workers": (1, 2),
    f"{STAGE}, 2 MPI ranks x 1 worker": (2, 1),
}


def run(jpeg_tree: str, rounds: int) -> dict:
    from hpctrain.data.imagefolder import scan

    tree = Path(jpeg_tree).resolve()
    if not tree.is_dir():
        raise SystemExit(f"bench: error: {jpeg_tree} missing: make data/bench-jpeg-tree")
    files = [tree / rel for split in ("train", "test") for rel, _ in scan(tree).files[split]]
    scratch = Path(tempfile.mkdtemp(prefix="bench-staging-"))
    samples: dict[str, dict[str, list[float]]] = {}
    try:
        for size in SIZES:
            print(f"  {size}x{size}:", file=sys.stderr, flush=True)
            variants: dict[str, Callable[[], float]] = {
                BARE: functools.partial(bare_loop, files, size)}
            for name, (ranks, workers) in VARIANTS.items():
                variants[name] = functools.partial(per_process, tree, size, ranks, workers,
                                                   scratch)
            got = alternate(variants, rounds + 1)
            samples[str(size)] = {name: values[1:] for name, values in got.items()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return with_inputs(summarize, samples=samples, tree=describe_tree(files),
                       processes={BARE: 1, **{k: r * w for k, (r, w) in VARIANTS.items()}})


def bare_loop(files: list[Path], size: int) -> float:
    """Images/s of decoding and resizing every file in this process, keeping nothing (the
    unreadable files are skipped, as staging skips them)."""
    from hpctrain.data.imagefolder import load_image

    done, start = 0, time.perf_counter()
    for path in files:
        try:
            load_image(path, size)
            done += 1
        except Exception:  # what staging skips (stage_imagefolder.stage_shard)
            pass
    return done / (time.perf_counter() - start)


def per_process(tree: Path, size: int, ranks: int, workers: int, scratch: Path) -> float:
    return staging(tree, size, ranks, workers, scratch) / (ranks * workers)


def staging(tree: Path, size: int, ranks: int, workers: int, scratch: Path) -> float:
    """Images/s of `hpctrain stage imagefolder`, as its summary line reports it."""
    out = scratch / f"staged-{ranks}x{workers}"
    shutil.rmtree(out, ignore_errors=True)
    argv = [str(Path(sys.executable).parent / "hpctrain"), "stage", "imagefolder", "--source",
            str(tree), "--out", str(out), "--size", str(size), "--workers", str(workers),
            "--shards", "8", "--max-unreadable", "0.05"]
    env = dict(os.environ)
    if ranks > 1:
        argv = ["mpirun", "-np", str(ranks), "--oversubscribe", *argv]
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    res = subprocess.run(argv, capture_output=True, text=True, env=env)
    match = re.search(r"\(([\d,]+) images/s,", res.stdout)
    if res.returncode or not match:
        raise RuntimeError(f"staging failed ({res.returncode}): {res.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return float(match.group(1).replace(",", ""))


def describe_tree(files: list[Path]) -> dict:
    """What the images are: count, median size on disk and median longer side."""
    from PIL import Image

    sides, sizes = [], []
    for path in files:
        sizes.append(path.stat().st_size)
        try:
            with Image.open(path) as img:
                sides.append(max(img.size))
        except OSError:
            pass
    return {"files": len(files), "readable": len(sides),
            "median_bytes": statistics.median(sizes), "median_long_side": statistics.median(sides)}


def summarize(samples: dict[str, dict[str, list[float]]], tree: dict,
              processes: dict[str, int]) -> dict:
    """Per size: every variant's images/s per process, each over the bare loop per round; the
    goal's ratio is the best staging variant's (highest median per process)."""
    ratios, sections = {}, []
    for size, rates in samples.items():
        best = max((v for v in rates if v.startswith(STAGE)),
                   key=lambda v: statistics.median(rates[v]))
        ratio = paired_ratio(rates[best], rates[BARE])
        ratios[size] = {"staging": best, **ratio}
        rows = [f"| {name}{' (best)' if name == best else ''} | {processes[name]} | "
                f"{statistics.median(rs):,.1f} [{min(rs):,.1f}-{max(rs):,.1f}] | "
                f"{'1 (the base)' if name == BARE else fmt_ratio(paired_ratio(rs, rates[BARE]))}"
                " |" for name, rs in rates.items()]
        sections += [f"### {size}x{size}x3", "",
                     "| variant | processes | images/s per process, median [min-max] | "
                     f"/ {BARE}, median (min-max) |", "|---|---|---|---|", *rows, "",
                     f"{STAGE} (best, per process) / {BARE}: **{fmt_ratio(ratio)}**, "
                     f"{verdict(ratio, GOAL)}.", ""]
    n = len(next(iter(next(iter(samples.values())).values())))
    md = "\n".join([
        f"{tree['files']:,} files ({tree['readable']:,} readable JPEGs and PNGs, median "
        f"{tree['median_long_side']:.0f} px on the longer side and "
        f"{tree['median_bytes'] / 1024:.0f} KiB; the rest broken on purpose) staged into 8 "
        "train shards, against decoding and resizing the same files in a bare loop. "
        "Staging's rate is the one it reports (scan, plan, decode, resize, write, sha256, "
        f"fsync, manifest; interpreter start excluded), per process; {n} rounds after a "
        "dropped warm-up round, variants alternating, the order reversed every other round; "
        "ratios per round.", "", *sections]).rstrip()
    summary = "; ".join(f"{s}x{s} **{fmt_ratio(r)}**" for s, r in ratios.items())
    headline = {"benchmark": "8. Staging: images/s per process of `hpctrain stage "
                             "imagefolder` / a bare decode + resize loop, ImageNet-sized JPEGs",
                "result": summary,
                "verdict": "; ".join(f"{s}x{s}: {verdict(r, GOAL)}" for s, r in ratios.items())}
    return {"name": "staging", "goal": GOAL, "ratios": ratios, "headline": headline,
            "markdown": md}
