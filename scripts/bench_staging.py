"""Staging benchmark: `hpctrain stage imagefolder` vs a bare decode + resize loop over the same
image files with the same library (Pillow, hpctrain's own `load_image`) in one process, side
by side in one run; staging with 1 rank, 1 rank x 2 worker processes, and 2 MPI ranks.

    python scripts/bench_staging.py --tree data/fmnist-tree --images 3000 --size 224 \\
        --out results/bench/staging

The bare loop decodes and resizes and keeps nothing: the ceiling for one process. Staging's
rate is its own (scan + plan + decode + write + sha256 + manifest, as the summary line
reports it; interpreter start excluded), per process = total / processes. Rounds alternate
the variants; the first is dropped; ratios are per round, median [min-max].
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpctrain.atomic import write_json, write_text
from hpctrain.data.imagefolder import load_image, scan

BIN = Path(sys.executable).parent


def subset_tree(tree: Path, out: Path, train: int, val: int) -> Path:
    """A tree of the first images of each class (symlinks: same files, no copies)."""
    full = scan(tree)
    for split, count in (("train", train), ("test", val)):
        for rel, _ in full.files[split][:: max(1, len(full.files[split]) // count)][:count]:
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(tree / rel)
    return out


def bare_loop(tree: Path, size: int) -> float:
    files = [tree / rel for split in ("train", "test") for rel, _ in scan(tree).files[split]]
    t0 = time.perf_counter()
    for path in files:
        with contextlib.suppress(Exception):  # the broken files, skipped as staging does
            load_image(path, size)
    return len(files) / (time.perf_counter() - t0)


def staging(tree: Path, size: int, ranks: int, workers: int, scratch: Path) -> float:
    out = scratch / f"staged-{ranks}x{workers}"
    shutil.rmtree(out, ignore_errors=True)
    argv = [str(BIN / "hpctrain"), "stage", "imagefolder", "--source", str(tree), "--out",
            str(out), "--size", str(size), "--workers", str(workers), "--shards", "8",
            "--max-unreadable", "0.05"]
    env = dict(os.environ)
    if ranks > 1:
        argv = ["mpirun", "-np", str(ranks), "--oversubscribe", *argv]
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    res = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    match = re.search(r"\(([\d,]+) images/s,", res.stdout)
    assert match, res.stdout + res.stderr
    shutil.rmtree(out, ignore_errors=True)
    return float(match.group(1).replace(",", ""))


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--tree", default="data/fmnist-tree")
    p.add_argument("--images", type=int, default=3000, help="training images (+ 1/5 for val)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-staging-"))
    try:
        tree = subset_tree(Path(args.tree).resolve(), scratch / "tree", args.images,
                           args.images // 5)
        variants = {  # name -> (processes, measure)
            "bare decode + resize loop, 1 process": (1, lambda: bare_loop(tree, args.size)),
            "hpctrain stage, 1 rank x 1 worker": (1, lambda: staging(tree, args.size, 1, 1,
                                                                      scratch)),
            "hpctrain stage, 1 rank x 2 workers": (2, lambda: staging(tree, args.size, 1, 2,
                                                                       scratch)),
            "hpctrain stage, 2 MPI ranks x 1 worker": (2, lambda: staging(tree, args.size, 2, 1,
                                                                           scratch)),
        }
        rates: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds + 1):
            for name, (_, measure) in variants.items():
                rates[name].append(measure())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = "bare decode + resize loop, 1 process"
    rows = []
    for name, (procs, _) in variants.items():
        rs = rates[name][1:]
        ratios = [r / procs / b for r, b in zip(rs, rates[base][1:], strict=True)]
        rows.append({"variant": name, "processes": procs,
                     "images_per_s_median": statistics.median(rs),
                     "images_per_s_min": min(rs), "images_per_s_max": max(rs),
                     "per_process_ratio_median": statistics.median(ratios),
                     "per_process_ratio_min": min(ratios), "per_process_ratio_max": max(ratios)})
        print(f"{name:42s} {statistics.median(rs):>8,.0f} images/s  per-process ratio "
              f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]",
              flush=True)
    command = (f"python scripts/bench_staging.py --tree {args.tree} --images {args.images} "
               f"--size {args.size} --rounds {args.rounds}" +
               (f" --out {args.out}" if args.out else ""))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out.with_suffix(".json"), {"args": vars(args), "rows": rows,
                                              "machine_cpus": os.cpu_count()})
        lines = ["# Staging: hpctrain stage imagefolder vs a bare decode + resize loop", "",
                 f"Command: `{command}`", "",
                 f"{args.images + args.images // 5:,} images of the Fashion-MNIST tree "
                 f"(40-160 px JPEG/PNG) to {args.size}x{args.size}x3, 8 train shards; "
                 f"{args.rounds} rounds after a warm-up round, variants alternating. "
                 "Per-process ratio = (images/s / processes) / bare loop's images/s, "
                 "median [min-max] of per-round ratios. Goal: >= 0.80. This machine has "
                 f"{os.cpu_count()} cores, so 2 processes is all of it.", "",
                 "| variant | processes | images/s median [min-max] | per-process ratio |",
                 "|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['processes']} | {r['images_per_s_median']:,.0f} "
                  f"[{r['images_per_s_min']:,.0f}-{r['images_per_s_max']:,.0f}] | "
                  f"{r['per_process_ratio_median']:.2f} [{r['per_process_ratio_min']:.2f}-"
                  f"{r['per_process_ratio_max']:.2f}] |" for r in rows]
        write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
