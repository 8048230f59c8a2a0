"""`make bench`: every benchmark side by side on this machine, each writing
results/benchmarks/<name>.json, then results/benchmarks/README.md from all of them.

    python -m hpctrain.bench                          # all, as committed
    python -m hpctrain.bench --only trainer_overhead --rounds 2 --train-limit 6000
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hpctrain.atomic import write_json, write_text
from hpctrain.bench import (
    horovod_overhead,
    job_overhead,
    startup,
    time_to_accuracy,
    trainer_overhead,
)

BENCHMARKS: dict[str, tuple[str, Callable[..., dict]]] = {
    "trainer_overhead": ("1. Trainer overhead", trainer_overhead.run),
    "horovod_overhead": ("3. Horovod overhead", horovod_overhead.run),
    "time_to_accuracy": ("4. Time to accuracy", time_to_accuracy.run),
    "job_overhead": ("5. Job overhead", job_overhead.run),
    "startup": ("6. Startup", startup.run),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hpctrain.bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", choices=list(BENCHMARKS),
                   help="run only this benchmark (repeatable); the README keeps the others'")
    p.add_argument("--data", default="data/fashion-mnist.h5", help="staged Fashion-MNIST")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per benchmark")
    p.add_argument("--train-limit", type=int, default=24000,
                   help="training images per run (fewer: faster, noisier)")
    p.add_argument("--out", default="results/benchmarks",
                   help="where <name>.json and README.md are written")
    return p.parse_args(argv)


def git_commit() -> str:
    """The commit measured, `-dirty` when the checkout has uncommitted changes (outside
    results/, which the benchmarks themselves rewrite)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            ".", ":!results"], capture_output=True, text=True).stdout.strip()
    return (head or "unknown") + ("-dirty" if dirty else "")


ELSEWHERE = {  # the other benchmarks of issue 13, where they are
    "2. Input pipeline": "streaming HDF5 reader vs in-memory tf.data: "
                         "[results/bench/input_pipeline.md](../bench/input_pipeline.md) "
                         "(`scripts/bench_input.py`, part of `make bench`).",
}


def write_readme(out: Path) -> str:
    parts = ["# Benchmarks", "",
             "Written by `make bench` (`python -m hpctrain.bench`); every number is a ratio "
             "of variants run side by side, alternating, in one invocation on one machine "
             "(absolute images/s are context only: machines of this kind differ by 4x and "
             "drift within a session). Medians with min-max over rounds.", ""]
    sections: list[tuple[str, str | None]] = [(title, name)
                                              for name, (title, _) in BENCHMARKS.items()]
    sections += [(title, None) for title in ELSEWHERE]
    for title, name in sorted(sections):
        if name is None:
            parts += [f"## {title}", "", ELSEWHERE[title], ""]
            continue
        path = out / f"{name}.json"
        if not path.is_file():
            parts += [f"## {title}", "", "Not run yet.", ""]
            continue
        r = json.loads(path.read_text())
        parts += [f"## {title}", "", r["markdown"], "",
                  f"Measured at {r['commit']} on {r['date']} in {r['seconds']:.0f} s: "
                  f"`{r['command']}`", ""]
    text = "\n".join(parts)
    write_text(out / "README.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not Path(args.data).is_file():
        print(f"bench: error: {args.data} missing: make data (hpctrain stage fashion-mnist)",
              file=sys.stderr)
        return 2
    for name in args.only or list(BENCHMARKS):
        title, run = BENCHMARKS[name]
        print(f"== {title}", file=sys.stderr, flush=True)
        start = time.time()
        result = run(data=args.data, rounds=args.rounds, train_limit=args.train_limit)
        result |= {"commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
                   "seconds": time.time() - start,
                   "command": shlex.join(["python", "-m", "hpctrain.bench", "--only", name,
                                          "--rounds", str(args.rounds), "--train-limit",
                                          str(args.train_limit)])}
        write_json(out / f"{name}.json", result)
        print(result["markdown"], flush=True)
    write_readme(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
